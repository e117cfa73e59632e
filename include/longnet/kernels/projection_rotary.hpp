// The fused q/k/v projection with its rotary map (CUDA, Hopper): one GEMM whose epilogue
// applies xPos or RoPE to the query and key columns as it writes them, instead of the
// projection's GEMM followed by a rotary pass that reads and writes q and k again
// (rotary.hpp's rotary_apply_query_key: ~200 MB a layer of issue 5's step).
//
//   y[r, :] = x[r, :] W^T + b, then for row r at position n = r mod seq_len (batch-major
//   rows), the query map (query_map) on columns [0, query_columns) and the key map (the
//   query map with its xPos factor inverted, downscale) on [query_columns, query_columns +
//   key_columns), pairs (2j, 2j + 1) of each head of head_dim columns; the other columns
//   (v) as the GEMM wrote them.
//
// bf16 x, W, b, y with fp32 accumulation; the bias is added and the pairs rotated in fp32
// before the one rounding to bf16 (the unfused path rounds the GEMM's output first), so the
// two agree to about a bf16 rounding, not bitwise. The factors are rotary_factors.cuh's
// (fast f32 after a double-precision angle reduction), those of the unfused bf16 path.
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {

struct ProjectionRotaryParams {
  std::int64_t rows = 0;  // batch * seq_len
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  DType dtype = DType::bf16;  // of x, weight, bias, y
  const void* x = nullptr;    // (rows, in_features), row stride x_row_stride elements
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // (out_features, in_features), contiguous
  const void* bias = nullptr;    // (out_features) or null
  void* y = nullptr;             // (rows, out_features), row stride y_row_stride elements
  std::int64_t y_row_stride = 0;
  std::int64_t query_columns = 0;  // heads * head_dim
  std::int64_t key_columns = 0;    // kv_heads * head_dim
  // The query map: kind, base, scale_base, position_start, center, head_dim, seq_len are
  // read (downscale and transpose must be false; x, out, heads, batch, dtype are not used).
  RotaryParams query_map;
};

// Whether projection_rotary_cuda takes p: bf16, a Hopper GPU with the sm_90a kernels
// built, 16-byte aligned rows (x, W, y), heads of 64 columns (head_dim 64) dividing both
// column counts, rows a whole number of sequences, out_features a multiple of 8.
bool projection_rotary_supported(const ProjectionRotaryParams& p);

// Runs the fused projection on the current stream; p must be supported (throws
// otherwise, naming the rule).
void projection_rotary_cuda(const ProjectionRotaryParams& p);

}  // namespace longnet::kernels
