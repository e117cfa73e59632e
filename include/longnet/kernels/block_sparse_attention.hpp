// Block-sparse attention kernels (DESIGN 2.5, 3.1): the dilated-attention engine driven by
// a list of key blocks per query block instead of the keys of a virtual sequence. Raw
// pointers, sizes and strides in; the attention layer validates and allocates.
//
// Shapes as dilated attention (dilated_attention.hpp): q (B, N, H, D); k, v (B, N, Hk, D);
// out (B, N, H, D); lse (B, H, N) contiguous, lse_dtype(dtype). The layout is a block
// mask in CSR form (BlockMask, attention/block_mask.hpp): per (mask head, query block)
// the sorted key blocks and their partial flags, and the transposed lists per (mask head,
// key block). Query head h uses mask head (mask_heads == 1 ? 0 : h).
//
// forward:  out, lse: one softmax per query row over every key of its listed blocks
//           (partial blocks: the pairs the element mask allows). Rows with no key give
//           out = 0, lse = -inf.
// backward: dq, dk, dv written (not accumulated), exactly DESIGN 2.3 with the final lse
//           and out.
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {

struct BlockSparseLayout {
  std::int64_t block_q = 64, block_k = 64;
  std::int64_t query_blocks = 0, key_blocks = 0;
  std::int64_t mask_heads = 1;                // 1 (shared) or the number of query heads
  const std::int64_t* row_offsets = nullptr;  // mask_heads * query_blocks + 1
  const std::int32_t* column_indices = nullptr;
  const std::uint8_t* row_partial = nullptr;
  const std::int64_t* column_offsets = nullptr;  // mask_heads * key_blocks + 1
  const std::int32_t* row_indices = nullptr;
  const std::uint8_t* column_partial = nullptr;
  // No pair with key > query, in any block.
  bool causal = false;
  // Element mask of partial blocks: min_distance <= query - key <= max_distance
  // (-INT64_MAX / INT64_MAX: unbounded), and on the CPU an optional predicate.
  std::int64_t min_distance = -INT64_MAX;
  std::int64_t max_distance = INT64_MAX;
  bool (*predicate)(const void* context, std::int64_t head, std::int64_t query, std::int64_t key) = nullptr;
  const void* predicate_context = nullptr;
};

struct BlockSparseAttentionParams {
  std::int64_t batch = 0;
  std::int64_t seq_len = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  double scale = 1.0;
  DType dtype = DType::f32;
  bool deterministic = true;  // CUDA: no atomics (the CPU always is)
  // The layout's arrays on the host (CPU backend) or the current device (CUDA backend).
  BlockSparseLayout layout;

  RowTensor q, k, v;
  RowTensor out;         // forward: written; backward: read
  void* lse = nullptr;   // forward: written; backward: read
  RowTensor dout;        // backward: read
  RowTensor dq, dk, dv;  // backward: written
};

// CPU: fp32 compute for f32/bf16/f16, fp64 for f64; parallel over (batch, head, query
// block) in the forward and over key blocks (dK, dV) and query blocks (dQ) in the
// backward; deterministic.
void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params);
void block_sparse_attention_backward_cpu(const BlockSparseAttentionParams& params);

// CUDA (built with the CUDA backend; throws Error otherwise); no predicate.
void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams& params);
void block_sparse_attention_backward_cuda(const BlockSparseAttentionParams& params);

}  // namespace longnet::kernels
