// A fully connected layer as PyTorch's nn.Linear, weights (out, in):
//   forward:  y (rows, out) = x (rows, in) W^T + b
//   backward: dx = dy W (written; skipped when dx is null),
//             dW += dy^T x, db += sum over rows of dy (accumulated).
// x, y, dy, dx have a row stride (columns contiguous); W, b, dW, db contiguous; b, db
// nullable. GEMMs: OpenBLAS (CPU), cuBLASLt (CUDA).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

struct LinearParams {
  std::int64_t rows = 0;
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  DType dtype = DType::f32;  // of every tensor here

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;
  std::int64_t y_row_stride = 0;

  const void* dy = nullptr;
  std::int64_t dy_row_stride = 0;
  void* dx = nullptr;
  std::int64_t dx_row_stride = 0;
  void* dweight = nullptr;
  void* dbias = nullptr;
};

void linear_forward_cpu(const LinearParams& p);
void linear_backward_cpu(const LinearParams& p);
void linear_forward_cuda(const LinearParams& p);
void linear_backward_cuda(const LinearParams& p);

}  // namespace longnet::kernels
