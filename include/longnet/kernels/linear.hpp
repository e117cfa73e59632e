// A fully connected layer as PyTorch's nn.Linear, weights (out, in):
//   forward:  y (rows, out) = x (rows, in) W^T + b [+ residual]
//   backward: dx = dy W (written, or added when dx_accumulate; skipped when dx is null),
//             dW += dy^T x, db += sum over rows of dy (accumulated).
// x, y, dy, dx have a row stride (columns contiguous); W, b, dW, db contiguous; b, db
// nullable. x, W, b, y, dy, dx are in `dtype` (under mixed precision: bf16 activations and
// the bf16 copies of the weights); dW and db in accumulation_dtype(dtype) (precision.hpp),
// so bf16 GEMMs accumulate in fp32 straight into the fp32 gradients. GEMMs: OpenBLAS (CPU),
// cuBLASLt (CUDA; bf16 inputs with fp32 accumulation, the bias added in the epilogue).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

struct LinearParams {
  std::int64_t rows = 0;
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  DType dtype = DType::f32;  // of every tensor here but dweight, dbias (accumulation_dtype)

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;
  std::int64_t y_row_stride = 0;
  // Nullable, (rows, out) in `dtype`, not overlapping y: added to y in the GEMM's epilogue
  // on CUDA (C = residual, D = y), which saves a residual add its own pass.
  const void* residual = nullptr;
  std::int64_t residual_row_stride = 0;

  const void* dy = nullptr;
  std::int64_t dy_row_stride = 0;
  void* dx = nullptr;
  std::int64_t dx_row_stride = 0;
  bool dx_accumulate = false;  // dx += dy W (a second projection of the same input)
  void* dweight = nullptr;
  void* dbias = nullptr;
};

void linear_forward_cpu(const LinearParams& p);
void linear_backward_cpu(const LinearParams& p);
void linear_forward_cuda(const LinearParams& p);
void linear_backward_cuda(const LinearParams& p);

}  // namespace longnet::kernels
