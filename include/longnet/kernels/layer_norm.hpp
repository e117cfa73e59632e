// Layer normalisation over the last dimension:
//   mean_r = sum_c x[r,c] / C,  rstd_r = 1 / sqrt(sum_c (x[r,c] - mean_r)^2 / C + eps)
//   out[r,c] = (x[r,c] - mean_r) * rstd_r * weight[c] + bias[c]
// x, out, dout, dx: (rows, C) in `dtype` with a row stride (columns contiguous); weight,
// bias, dweight, dbias: (C) contiguous in accumulation_dtype(dtype) (precision.hpp: the
// f32 master weights under bf16 activations; weight/bias may be null: no affine transform,
// as LayerNorm(elementwise_affine=False)); mean, rstd: (rows) in accumulation_dtype(dtype),
// written by forward and read by backward. The statistics are computed in that precision
// whatever the activations' dtype.
// Backward: dx is written; dweight and dbias accumulate (+=).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

struct LayerNormParams {
  std::int64_t rows = 0;
  std::int64_t columns = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;  // of x, out, dout, dx; the rest in accumulation_dtype(dtype)

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // nullable
  const void* bias = nullptr;    // nullable
  void* out = nullptr;
  std::int64_t out_row_stride = 0;
  void* mean = nullptr;
  void* rstd = nullptr;

  const void* dout = nullptr;
  std::int64_t dout_row_stride = 0;
  void* dx = nullptr;
  std::int64_t dx_row_stride = 0;
  void* dweight = nullptr;  // null when weight is
  void* dbias = nullptr;    // null when bias is
};

void layer_norm_forward_cpu(const LayerNormParams& p);
void layer_norm_backward_cpu(const LayerNormParams& p);
void layer_norm_forward_cuda(const LayerNormParams& p);
void layer_norm_backward_cuda(const LayerNormParams& p);

}  // namespace longnet::kernels
