// The standard normal CDF Phi(x) and density phi(x) of 8 floats at a time, for the f32 GELU
// on the CPU (gelu(x) = x Phi(x), gelu'(x) = Phi(x) + x phi(x)): vector arithmetic and one
// exp8 (vector_exp.hpp) for both, where libm's scalar erf and exp in double took a sixth of
// a CPU training step. With z = |x| / sqrt 2:
//   z <= 0.75: erf(z) = z P(z^2)                            P of degree 5
//   z > 0.75:  erfc(z) = exp(-z^2) Q(1 / (1 + 0.3 z) - c)     Q of degree 9
// (scripts/fit_vector_normal.py: least-squares fits against mpmath, z up to 9.5, with relative
// error below float's rounding; beyond z = 9.33 exp(-z^2) is below float's range and the
// tails are exactly 0). The tail Phi(-|x|) = erfc(z) / 2 is computed as itself, so Phi keeps
// its relative precision for negative x, where 1 + erf would cancel, and z^2 = x^2 / 2 is
// taken exactly (x split into halves of 12 bits) so that exp(-z^2) does not inherit the
// rounding of z^2, which grows with it. Measured against double erfc and exp
// (tests/kernels, VectorNormal.*).
#pragma once

#include "kernels/cpu/cpu_features.hpp"
#include "kernels/cpu/vector_exp.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace longnet::kernels::cpu {

struct NormalTerms8 {
  float8 cdf;      // Phi(x)
  float8 density;  // phi(x)
};

static inline NormalTerms8 normal_terms8(float8 x) {
  // |x| up to 20: beyond 13.2 every result below is already exact (0 or 1). A NaN becomes 20
  // too (its comparisons are false), so the terms stay finite and x carries the NaN into gelu.
  const float8 ax = x < 0.0f ? (-x < 20.0f ? -x : float8{} + 20.0f) : (x < 20.0f ? x : float8{} + 20.0f);
  // x^2 / 2 = s_high + s_low with s_high exact: x_high keeps x's top 12 significant bits, so
  // x_high^2 fits a float; the rest, x_low (2 x_high + x_low), is ~2^-12 of the whole.
  int8v bits;
  std::memcpy(&bits, &ax, sizeof bits);
  bits &= static_cast<std::int32_t>(0xFFFFF000u);
  float8 x_high;
  std::memcpy(&x_high, &bits, sizeof x_high);
  const float8 x_low = ax - x_high;
  const float8 s_high = 0.5f * x_high * x_high, s_low = 0.5f * x_low * (x_high + ax);
  // exp(-x^2 / 2) = exp(-s_high) exp(-s_low), the second by its series (s_low < 0.05 where
  // the first is not 0); exp8 gives exactly 0 below -87.3.
  const float8 e_low = 1.0f - s_low * (1.0f - s_low * (0.5f - s_low * (1.0f / 6.0f - s_low * (1.0f / 24.0f))));
  const float8 gauss = exp8(s_high < 87.0f ? -s_high : float8{} - 87.5f) * e_low;

  const float8 z = ax * 0.70710678118654752440f;
  const float8 s = z * z;
  float8 p = -6.747207937e-04f + float8{};  // erf(z) / z on z <= 0.75
  p = p * s + 5.114018607e-03f;
  p = p * s - 2.683446188e-02f;
  p = p * s + 1.128337326e-01f;
  p = p * s - 3.761261852e-01f;
  p = p * s + 1.128379165e+00f;
  const float8 half_erf = 0.5f * z * p;

  // erfc(z) exp(z^2) on 0.75 < z <= 9.5, in v = 1 / (1 + 0.3 z) - 0.538033395.
  const float8 v = 1.0f / (1.0f + 0.3f * (z < 9.5f ? z : float8{} + 9.5f)) - 0.538033395f;
  float8 q = -1.452235298e-01f + float8{};
  q = q * v - 1.401830385e-01f;
  q = q * v + 2.319485836e-01f;
  q = q * v + 8.593177519e-01f;
  q = q * v + 1.426464643e+00f;
  q = q * v + 1.658521440e+00f;
  q = q * v + 1.502609455e+00f;
  q = q * v + 1.108420880e+00f;
  q = q * v + 6.796472144e-01f;
  q = q * v + 1.868151870e-01f;
  const float8 half_erfc = 0.5f * gauss * q;

  const float8 upper = z > 0.75f ? 1.0f - half_erfc : 0.5f + half_erf;  // Phi(|x|)
  const float8 lower = z > 0.75f ? half_erfc : 0.5f - half_erf;         // Phi(-|x|)
  return {x < 0.0f ? lower : upper, 0.39894228040143267794f * gauss};
}

// cdf[i] = Phi(x[i]) and density[i] = phi(x[i]) for i < n (the last n % 8 through a
// zero-padded vector). Inline for the tests; the kernels call normal_terms (below), built
// for AVX2 where the CPU has it: without AVX the 32-byte selects above become scalar code.
static inline void normal_terms_inline(const float* x, std::int64_t n, float* cdf, float* density) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    float8 v;
    std::memcpy(&v, x + i, sizeof v);
    const NormalTerms8 t = normal_terms8(v);
    std::memcpy(cdf + i, &t.cdf, sizeof v);
    std::memcpy(density + i, &t.density, sizeof v);
  }
  if (i < n) {
    const auto tail = static_cast<std::size_t>(n - i) * sizeof(float);
    float8 v{};
    std::memcpy(&v, x + i, tail);
    const NormalTerms8 t = normal_terms8(v);
    std::memcpy(cdf + i, &t.cdf, tail);
    std::memcpy(density + i, &t.density, tail);
  }
}

// normal_terms_inline, compiled once per instruction set (cpu/isa/normal_terms.cpp).
namespace generic {
void normal_terms(const float* x, std::int64_t n, float* cdf, float* density);
}
namespace avx2 {
void normal_terms(const float* x, std::int64_t n, float* cdf, float* density);
}

inline void normal_terms(const float* x, std::int64_t n, float* cdf, float* density) {
#if defined(__x86_64__) || defined(__i386__)
  if (use_avx2()) return avx2::normal_terms(x, n, cdf, density);
#endif
  generic::normal_terms(x, n, cdf, density);
}

}  // namespace longnet::kernels::cpu

#pragma GCC diagnostic pop
