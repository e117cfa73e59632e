// GELU with the exact erf form, the one torchscale (LongNet's code) uses through F.gelu:
//   gelu(x)  = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// All tensors contiguous with `count` elements of `dtype` (f32 or f64; on CUDA also bf16,
// computed in f32). Backward writes dx (= dout * gelu'(x)).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

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
