// GELU with the exact erf form, the one torchscale (LongNet's code) uses through F.gelu:
//   gelu(x)  = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// All tensors contiguous with `count` elements of `dtype` (f32 or f64; on CUDA also bf16,
// computed in f32). Backward writes dx (= dout * gelu'(x)).
// gelu_value and gelu_derivative are the formulas every kernel uses (the CPU's, CUDA's, and
// the LayerNorm that takes GELU pre-activations, layer_norm.hpp), in the precision of T;
// two LayerNorms take Phi from approximations instead: CUDA's for bf16 rows (accurate to
// 1.5e-7; layer_norm_rows.cuh: bf16 stores round at 2^-9) and the CPU's for f32 rows (a few float
// ulps, vectorised; cpu/vector_normal.hpp).
#pragma once

#include <cmath>
#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/host_device.hpp"

namespace longnet::kernels {

template <class T>
LONGNET_HOST_DEVICE inline T gelu_value(T x) {
#if defined(__CUDA_ARCH__)
  return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
#else
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
#endif
}

// Phi(x), the standard normal CDF: gelu(x) = x Phi(x).
template <class T>
LONGNET_HOST_DEVICE inline T gelu_cdf(T x) {
#if defined(__CUDA_ARCH__)
  return T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
#else
  return T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
#endif
}

// phi(x), the standard normal density: gelu'(x) = Phi(x) + x phi(x).
template <class T>
LONGNET_HOST_DEVICE inline T gelu_density(T x) {
#if defined(__CUDA_ARCH__)
  return T(0.39894228040143267794) * exp(T(-0.5) * x * x);
#else
  return T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
#endif
}

template <class T>
LONGNET_HOST_DEVICE inline T gelu_derivative(T x) {
  return gelu_cdf(x) + x * gelu_density(x);
}

// gelu(x) and gelu'(x) from one erf, with the bits of gelu_value and gelu_derivative (their
// expressions, the erf shared): a backward that needs both pays one erf, not two.
template <class T>
struct GeluAndDerivative {
  T value, derivative;
};
template <class T>
LONGNET_HOST_DEVICE inline GeluAndDerivative<T> gelu_and_derivative(T x) {
#if defined(__CUDA_ARCH__)
  const T one_plus_erf = T(1) + erf(x * T(0.70710678118654752440));
#else
  const T one_plus_erf = T(1) + std::erf(x * T(0.70710678118654752440));
#endif
  return {T(0.5) * x * one_plus_erf, T(0.5) * one_plus_erf + x * gelu_density(x)};
}

struct GeluParams {
  std::int64_t count = 0;
  DType dtype = DType::f32;
  const void* x = nullptr;
  void* out = nullptr;         // forward
  const void* dout = nullptr;  // backward
  void* dx = nullptr;          // backward (written; may alias dout)
};

void gelu_forward_cpu(const GeluParams& p);
void gelu_backward_cpu(const GeluParams& p);
void gelu_forward_cuda(const GeluParams& p);
void gelu_backward_cuda(const GeluParams& p);

}  // namespace longnet::kernels
