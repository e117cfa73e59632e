// exp(x) over arrays, vectorised with GCC/Clang vector extensions (8 floats at a time:
// AVX2 where the translation unit is built for it, SSE pairs otherwise). Cephes-style:
// x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, times 2^n. Relative
// error about 2 ulp for x <= 88; inputs below -87.3 (including -inf, the mask value) give exactly 0.
// Functions are static: each instruction-set build of a translation unit keeps its own copy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// The 32-byte vector types never cross an ABI boundary (every function is static).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace longnet::kernels::cpu {

using float8 = float __attribute__((vector_size(32)));
using int8v = std::int32_t __attribute__((vector_size(32)));

static inline float8 exp8(float8 x) {
  const int8v flushed = x < -87.3f;  // all ones in lanes that underflow (or are -inf)
  x = x < -87.3f ? float8{} - 87.3f : x;
  x = x > 88.0f ? float8{} + 88.0f : x;
  // n = floor(x log2(e) + 1/2): conversion truncates toward zero, one less where that rounded up.
  const float8 t = x * 1.44269504088896341f + 0.5f;
  const float8 n = __builtin_convertvector(__builtin_convertvector(t, int8v), float8);
  const float8 n_floor = n > t ? n - 1.0f : n;
  const float8 r = x - n_floor * 0.693359375f + n_floor * 2.12194440e-4f;
  float8 p = 1.9875691500e-4f + float8{};
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int8v exponent = (__builtin_convertvector(n_floor, int8v) + 127) << 23;
  float8 scale;
  std::memcpy(&scale, &exponent, sizeof scale);
  const float8 result = p * scale;
  int8v bits;
  std::memcpy(&bits, &result, sizeof bits);
  bits &= ~flushed;
  float8 out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// x[i] = exp(x[i] - shift) for i < n; returns the sum of the results.
static inline float exp_subtract_sum(float* x, std::int64_t n, float shift) {
  float8 total{};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    float8 v;
    std::memcpy(&v, x + i, sizeof v);
    v = exp8(v - shift);
    std::memcpy(x + i, &v, sizeof v);
    total += v;
  }
  float sum = 0;
  for (int lane = 0; lane < 8; ++lane) sum += total[lane];
  if (i < n) {  // the last n - i < 8 values, through a zero-padded vector
    const auto tail = static_cast<std::size_t>(n - i) * sizeof(float);
    float8 v{};
    std::memcpy(&v, x + i, tail);
    v = exp8(v - shift);
    float lanes[8];
    std::memcpy(lanes, &v, sizeof v);
    std::memcpy(x + i, lanes, tail);
    for (std::int64_t j = 0; j < n - i; ++j) sum += lanes[j];
  }
  return sum;
}

static inline double exp_subtract_sum(double* x, std::int64_t n, double shift) {
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace longnet::kernels::cpu

#pragma GCC diagnostic pop
