// Layer normalisation over the last dimension:
//   mean_r = sum_c x[r,c] / C,  rstd_r = 1 / sqrt(sum_c (x[r,c] - mean_r)^2 / C + eps)
//   out[r,c] = (x[r,c] - mean_r) * rstd_r * weight[c] + bias[c]
// x, out, dout, dx: (rows, C) in `dtype` with a row stride (columns contiguous); weight,
// bias, dweight, dbias: (C) contiguous in accumulation_dtype(dtype) (precision.hpp: the
// f32 master weights under bf16 activations; weight/bias may be null: no affine transform,
// as LayerNorm(elementwise_affine=False)); mean, rstd: (rows) in accumulation_dtype(dtype),
// written by forward and read by backward. The statistics are computed in that precision
// whatever the activations' dtype.
// Backward: dx is written; dweight, dbias (and dx_column_sums, below) accumulate (+=).
//
// Two fusions save the feed-forward and the residual stream a pass over their rows each:
// - input = gelu: the rows normalised are gelu(x) (gelu.hpp's exact form, in the
//   statistics' precision), x being the pre-activation; backward writes
//   dx = gelu'(x) * d(gelu(x)) and the parameter gradients of the normalised gelu(x).
//   Nothing else changes: mean, rstd and out are those of LayerNorm(gelu(x)).
// - dresidual (backward, nullable): dx = (the above) + dresidual, with its own row
//   stride; it may alias dx (each element is read before it is written).
// And one saves a Linear's bias gradient a pass of its own:
// - dx_column_sums (backward, nullable, (C) in accumulation_dtype(dtype)) += sum_r dx[r,c]
//   over the dx written (dresidual included) as stored, i.e. rounded to dtype, in a fixed
//   order (on the CPU the Linear bias gradient's: the same bits). When dx is a Linear's
//   output gradient (no dropout between), that is the Linear's bias gradient.
// And one gives a following Linear its bias gradient from its weight gradient's GEMM:
// - out_ones_column (forward): each output row is followed by kOnesColumns values 1, 0,
//   ..., 0 (linear.hpp; out_row_stride >= C + kOnesColumns), the input rows a Linear's
//   backward takes as LinearParams::x_ones_column.
// And one saves the attention backward a pass over its output and output gradient:
// - segment_dots (backward, nullable; identity input only): for the segments of
//   segment_columns consecutive columns (C a multiple of it), the dot products of dx as
//   stored and x, sum_{c in segment s} dx[r,c] x[r,c], in accumulation_dtype(dtype), written
//   to segment_dots[(r / B_rows) * S * B_rows + s * B_rows + r % B_rows] (S = C /
//   segment_columns, B_rows = segment_rows_per_batch): the (B, H, N) layout. When x is an
//   attention's output (B N, H D) and dx its gradient, that is the attention backward's
//   delta = rowsum(dout * out) of every head (AttentionBackwardOptions::output_deltas).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

enum class LayerNormInput { identity, gelu };

struct LayerNormParams {
  std::int64_t rows = 0;
  std::int64_t columns = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;  // of x, out, dout, dx, dresidual; the rest in accumulation_dtype(dtype)
  LayerNormInput input = LayerNormInput::identity;

  const void* x = nullptr;
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // nullable
  const void* bias = nullptr;    // nullable
  void* out = nullptr;
  std::int64_t out_row_stride = 0;
  bool out_ones_column = false;
  void* mean = nullptr;
  void* rstd = nullptr;

  const void* dout = nullptr;
  std::int64_t dout_row_stride = 0;
  void* dx = nullptr;
  std::int64_t dx_row_stride = 0;
  const void* dresidual = nullptr;  // nullable
  std::int64_t dresidual_row_stride = 0;
  void* dweight = nullptr;  // null when weight is
  void* dbias = nullptr;    // null when bias is
  void* dx_column_sums = nullptr;  // nullable
  void* segment_dots = nullptr;    // nullable
  std::int64_t segment_columns = 0, segment_rows_per_batch = 0;
};

// segment_dots' rule (the backends check it): identity input, segment_columns > 0
// dividing C, segment_rows_per_batch > 0 dividing the rows; throws Error otherwise.
inline void validate_segment_dots(const LayerNormParams& p) {
  if (!p.segment_dots) return;
  require(p.input == LayerNormInput::identity, "layer_norm_backward: segment_dots with a gelu input: not supported");
  require(p.segment_columns > 0 && p.columns % p.segment_columns == 0,
          "layer_norm_backward: segment_columns = ", p.segment_columns, ": must be positive and divide the ", p.columns,
          " columns");
  require(p.segment_rows_per_batch > 0 && p.rows % p.segment_rows_per_batch == 0,
          "layer_norm_backward: segment_rows_per_batch = ", p.segment_rows_per_batch,
          ": must be positive and divide the ", p.rows, " rows");
}

// out_ones_column's rule (the backends check it; linear.hpp's require_ones_column_room).
inline void validate_ones_column(const LayerNormParams& p) {
  if (p.out_ones_column) {
    require_ones_column_room("layer_norm_forward: out_row_stride", p.out_row_stride, "out_ones_column", "columns",
                             p.columns);
  }
}

void layer_norm_forward_cpu(const LayerNormParams& p);
void layer_norm_backward_cpu(const LayerNormParams& p);
void layer_norm_forward_cuda(const LayerNormParams& p);
void layer_norm_backward_cuda(const LayerNormParams& p);

}  // namespace longnet::kernels
