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
#include "longnet/core/error.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

// An input whose rows are each followed in memory by kOnesColumns values 1, 0, ..., 0
// (LinearParams::x_ones_column; a LayerNorm writes them: layer_norm.hpp's out_ones_column).
// Eight keeps bf16 rows 16-byte aligned.
constexpr std::int64_t kOnesColumns = 8;

struct LinearParams {
  std::int64_t rows = 0;
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  DType dtype = DType::f32;  // of every tensor here but dweight, dbias (accumulation_dtype)

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  // Backward: every row of x is followed by kOnesColumns values 1, 0, ..., 0 (so
  // x_row_stride >= in_features + kOnesColumns). On CUDA, dW's GEMM then runs over those
  // columns too, into scratch: its output row for the ones column is sum_r dy[r, :], the
  // bias gradient, with no pass of its own over dy (measured on an H100 for fc1, 32768 x
  // 768 -> 3072: the GEMM +0.001 ms, the pass 0.09 ms). Without dbias, or on the CPU, the
  // columns are not read.
  bool x_ones_column = false;
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
  // dW = x^T dy instead of dW += x^T dy: dweight's memory holds nothing to keep (a gradient
  // whose zero fill was deferred to its first writer, nn::DeferredGradientZero).
  bool dweight_store = false;
  void* dbias = nullptr;
};

// The ones column's rule, for rows `row_stride` apart of `columns` values: room for the
// column in the stride. The names are the error's (e.g. "linear_backward: x_row_stride",
// "x_ones_column", "in_features").
inline void require_ones_column_room(const char* stride_name, std::int64_t row_stride, const char* flag_name,
                                     const char* columns_name, std::int64_t columns) {
  require(row_stride >= columns + kOnesColumns, stride_name, " = ", row_stride, ": ", flag_name, " needs at least ",
          columns_name, " + ", kOnesColumns, " = ", columns + kOnesColumns);
}

// x_ones_column's rule (the backends check it).
inline void validate_ones_column(const LinearParams& p) {
  if (p.x_ones_column) {
    require_ones_column_room("linear_backward: x_row_stride", p.x_row_stride, "x_ones_column", "in_features",
                             p.in_features);
  }
}

void linear_forward_cpu(const LinearParams& p);
void linear_backward_cpu(const LinearParams& p);
void linear_forward_cuda(const LinearParams& p);
void linear_backward_cuda(const LinearParams& p);

}  // namespace longnet::kernels
