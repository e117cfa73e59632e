// Layer normalisation over the last dimension:
//   mean_r = sum_c x[r,c] / C,  rstd_r = 1 / sqrt(sum_c (x[r,c] - mean_r)^2 / C + eps)
//   out[r,c] = (x[r,c] - mean_r) * rstd_r * weight[c] + bias[c]
// x, out, dout, dx: (rows, C) with a row stride (columns contiguous); weight, bias,
// dweight, dbias: (C) contiguous (weight/bias may be null: no affine transform, as
// LayerNorm(elementwise_affine=False)); mean, rstd: (rows) in the statistics dtype
// (f64 for f64 inputs, f32 otherwise), written by forward and read by backward.
// Backward: dx is written; dweight and dbias accumulate (+=).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

struct LayerNormParams {
  std::int64_t rows = 0;
  std::int64_t columns = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;  // of x, out, weight, bias and the gradients

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // nullable
  const void* bias = nullptr;    // nullable
  void* out = nullptr;
  std::int64_t out_row_stride = 0;
  void* mean = nullptr;  // statistics_dtype(dtype)
  void* rstd = nullptr;

  const void* dout = nullptr;
  std::int64_t dout_row_stride = 0;
  void* dx = nullptr;
  std::int64_t dx_row_stride = 0;
  void* dweight = nullptr;  // null when weight is
  void* dbias = nullptr;    // null when bias is
};

// f64 for f64, f32 otherwise (bf16/f16 keep float statistics).
inline DType statistics_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

void layer_norm_forward_cpu(const LayerNormParams& p);
void layer_norm_backward_cpu(const LayerNormParams& p);
void layer_norm_forward_cuda(const LayerNormParams& p);
void layer_norm_backward_cuda(const LayerNormParams& p);

}  // namespace longnet::kernels
