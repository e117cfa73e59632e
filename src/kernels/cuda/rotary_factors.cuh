// The factors of the rotary map (rotary.hpp) on CUDA, shared by the rotary kernel and the
// attention backward's gradient conversion (which applies the transposed map as it
// converts dq and dk). f32 and f64 rows take them in double (an fp32 angle pos * theta
// loses digits at long positions). 16-bit rows, whose rounding (2^-9 for bf16) is far
// coarser, keep the angle in double only up to its reduction to [-pi, pi] and take sine,
// cosine and the xPos power in fast f32 (errors ~1e-6): the double pow/pow/sincos of every
// pair made the rotary kernel 1.5x its memory time (0.050 ms a 32768 x 12 x 64 bf16 call
// on an H200, 0.044 with these).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels::rotary_factors {

// f * cos(angle) and +-f * sin(angle) of pair j at position index n, in double; with
// key_cs, key_sn also the key map's (f inverted: the bits of a call with p.downscale set).
template <class C>
__device__ inline void exact(const RotaryParams& p, std::int64_t j, std::int64_t n, C& cs, C& sn, C* key_cs = nullptr,
                             C* key_sn = nullptr) {
  const double pos = static_cast<double>(p.position_start + n);
  const double theta = rotary_theta(p.base, j, p.head_dim);
  double f = 1.0, key_f = 1.0;
  if (p.kind == RotaryKind::xpos) {
    f = pow(xpos_zeta(j, p.head_dim), (pos - p.center) / p.scale_base);
    key_f = 1.0 / f;
    if (p.downscale) f = 1.0 / f;
  }
  double s, c;
  sincos(pos * theta, &s, &c);
  cs = static_cast<C>(f * c);
  sn = static_cast<C>((p.transpose ? -f : f) * s);
  if (key_cs != nullptr) {
    *key_cs = static_cast<C>(key_f * c);
    *key_sn = static_cast<C>((p.transpose ? -key_f : key_f) * s);
  }
}

// One pair's factors for 16-bit rows from its constants theta_j = base^(-2j / D) and
// log2(zeta_j): the angle reduced by whole turns in double, then __sincosf on [-pi, pi]
// (absolute error 2^-21.4) and exp2f of log2(zeta_j) (pos - center) / scale_base in f32.
// With `key` (a query's map, not downscaled): also the key map's factors from the same
// angle, exp2f of the negated exponent (the bits of a downscaled map's own call).
__device__ inline void fast_from_constants(const RotaryParams& p, double theta, float log2_zeta, std::int64_t n,
                                           float& cs, float& sn, float* key_cs = nullptr, float* key_sn = nullptr) {
  constexpr double kTwoPi = 6.283185307179586476925;
  const double pos = static_cast<double>(p.position_start + n);
  const double angle = pos * theta;
  const float r = static_cast<float>(fma(-rint(angle * (1.0 / kTwoPi)), kTwoPi, angle));
  float s, c;
  __sincosf(r, &s, &c);
  float f = 1.0f, key_f = 1.0f;
  if (p.kind == RotaryKind::xpos) {
    const float exponent = log2_zeta * static_cast<float>((pos - p.center) / p.scale_base);
    f = exp2f(p.downscale ? -exponent : exponent);
    if (key_cs != nullptr) key_f = exp2f(-exponent);
  }
  cs = f * c;
  sn = (p.transpose ? -f : f) * s;
  if (key_cs != nullptr) {
    *key_cs = key_f * c;
    *key_sn = (p.transpose ? -key_f : key_f) * s;
  }
}

// The pairs' constants of the 16-bit path: theta_j0 in double and the step base^(-2 / D)
// that takes theta_j to theta_{j+1} over a pack's consecutive pairs, and log2(zeta_j) in
// f32. fast<Q> and the fused projection's kernel take them from here, for the same bits.
struct PairThetas {
  double first, step;
};
__device__ inline PairThetas pair_thetas(const RotaryParams& p, std::int64_t j0) {
  const double D = static_cast<double>(p.head_dim);
  const double log2_base = log2(p.base);
  const double step = exp2(-2.0 / D * log2_base);
  return {exp2(-2.0 * static_cast<double>(j0) / D * log2_base), step};
}
__device__ inline float pair_log2_zeta(std::int64_t j, std::int64_t head_dim) {
  const float jf = static_cast<float>(j), d = static_cast<float>(head_dim);
  return log2f((2.0f * jf + 0.4f * d) / (1.4f * d));
}

// Q consecutive pairs j0, j0 + 1, ... of 16-bit rows from those constants; with key_cs,
// key_sn also the key map's (fast_from_constants).
template <int Q>
__device__ inline void fast(const RotaryParams& p, std::int64_t j0, std::int64_t n, float* cs, float* sn,
                            float* key_cs = nullptr, float* key_sn = nullptr) {
  const PairThetas thetas = pair_thetas(p, j0);
  double theta = thetas.first;
#pragma unroll
  for (int q = 0; q < Q; ++q, theta *= thetas.step) {
    fast_from_constants(p, theta, pair_log2_zeta(j0 + q, p.head_dim), n, cs[q], sn[q], key_cs ? key_cs + q : nullptr,
                        key_sn ? key_sn + q : nullptr);
  }
}

// Q consecutive pairs' factors for rows of element type T computed in C: fast for 16-bit
// rows, exact otherwise. With key_cs, key_sn (p a query's map): also the key map's, the
// same bits as a call with p.downscale set.
template <class T, class C, int Q>
__device__ inline void of_pairs(const RotaryParams& p, std::int64_t j0, std::int64_t n, C* cs, C* sn,
                                C* key_cs = nullptr, C* key_sn = nullptr) {
  if constexpr (sizeof(T) == 2) {
    fast<Q>(p, j0, n, cs, sn, key_cs, key_sn);
  } else {
    for (int q = 0; q < Q; ++q)
      exact(p, j0 + q, n, cs[q], sn[q], key_cs ? key_cs + q : nullptr, key_sn ? key_sn + q : nullptr);
  }
}

}  // namespace longnet::kernels::rotary_factors
