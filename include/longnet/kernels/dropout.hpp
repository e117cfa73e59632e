// Inverted dropout with a counter-based mask (counter_rng.hpp):
//   keep[i] = counter_uniform(key, i) >= probability
//   out[i]  = keep[i] ? x[i] / (1 - probability) : 0
// The mask is a pure function of (key, i), so backward regenerates it instead of storing
// it: dx[i] = keep[i] ? dout[i] / (1 - probability) : 0 (written; may alias dout).
// All tensors contiguous with `count` elements of `dtype` (f32 or f64; on CUDA also bf16);
// 0 <= probability < 1.
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

struct DropoutParams {
  std::int64_t count = 0;
  double probability = 0.0;
  std::uint64_t key = 0;  // counter_key(seed, step, stream)
  DType dtype = DType::f32;
  const void* x = nullptr;     // forward
  void* out = nullptr;         // forward (may alias x)
  const void* dout = nullptr;  // backward
  void* dx = nullptr;          // backward (may alias dout)
};

void dropout_forward_cpu(const DropoutParams& p);
void dropout_backward_cpu(const DropoutParams& p);
void dropout_forward_cuda(const DropoutParams& p);
void dropout_backward_cuda(const DropoutParams& p);

}  // namespace longnet::kernels
