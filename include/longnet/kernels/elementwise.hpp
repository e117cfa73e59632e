// Elementwise sums for residual connections and gradient accumulation:
//   out[i] = a[i] + alpha * b[i]   over `count` contiguous elements (out may alias a or b)
// of `dtype` (f32 or f64; on CUDA also bf16, computed in f32 and rounded once).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

struct AddParams {
  std::int64_t count = 0;
  DType dtype = DType::f32;
  const void* a = nullptr;
  const void* b = nullptr;
  double alpha = 1.0;
  void* out = nullptr;
};

void add_cpu(const AddParams& p);
void add_cuda(const AddParams& p);

}  // namespace longnet::kernels
