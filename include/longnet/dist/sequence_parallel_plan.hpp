// The communication plan of sequence-parallel dilated attention (DESIGN 2.6): for one
// rank, given the layout of the sequence over the ranks, the heads and the attention
// configuration, which rows of K and V it sends to which peer, which rows it receives,
// and the kernel tasks (include/longnet/kernels/dilated_attention_tasks.hpp) that attend
// its local queries to local and received keys. It depends on neither the batch size, the
// head dimension, the dtype nor the backend, so it is computed once per (N, layout,
// config) and reused by the MPI (CPU) and NCCL (GPU) paths alike.
//
// The rule. Under pattern (w, r), a segment that lies inside one block needs nothing from
// anyone. For a segment that spans blocks, and each kv head kh and each offset o used by
// a query head of kh: the virtual sequence s*w + o + r*j is cut by the blocks into
// contiguous ranges of j. The range held by block Bk (owner a) goes to every other rank b
// that holds queries of the same virtual sequence in some block Bq, when the attention is
// not causal or Bk lies before Bq. So only the dilated rows (the residue class o mod r)
// of K and V travel, only inside the segment's group of ranks, and under causal
// attention only forward. A row used by two patterns travels once per pattern.
//
// Buffers: each direction of one peer is one contiguous run of rows of a (rows, B, D)
// buffer (sends ordered by peer, then by (pattern, segment, kv head, offset, block));
// receiver and sender enumerate the same rows in the same order, so nothing but the data
// travels. Backward sends the gradients of the received rows back along the same plan,
// reversed.
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/sequence_layout.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet {

// Rows first_row + row_step * j, j in [0, count), of kv head kv_head of the local K/V.
struct KvRowRun {
  std::int64_t kv_head = 0;
  std::int64_t first_row = 0;
  std::int64_t row_step = 1;
  std::int64_t count = 0;
};

// The rows exchanged with one peer: buffer rows [buffer_row, buffer_row + rows).
struct PeerRows {
  int peer = 0;
  std::int64_t buffer_row = 0;
  std::int64_t rows = 0;
  std::vector<KvRowRun> runs;  // sends: the local rows packed into the buffer, in order; receives: empty
};

struct SequenceParallelPlan {
  int rank = 0;
  int world_size = 1;
  std::int64_t seq_len = 0;
  std::int64_t local_rows = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::vector<DilationPattern> patterns;
  DilatedMode mode = DilatedMode::longnet;
  bool causal = false;

  std::vector<PeerRows> sends;     // by ascending peer; only peers with rows
  std::vector<PeerRows> receives;  // by ascending peer; only peers with rows
  std::int64_t send_rows = 0;      // rows of the send buffer
  std::int64_t receive_rows = 0;   // rows of the receive (gathered) buffer

  std::vector<kernels::SequenceTask> tasks;  // sorted by pattern
  std::vector<kernels::QueryRange> ranges;
  std::vector<kernels::KeyPiece> pieces;
  // Per pattern and local block, the local rows that are whole segments (no exchange
  // involved): the CUDA kernel runs them on the single-GPU engine's kernels.
  std::vector<kernels::EngineSlice> engine_slices;

  // (query, key) pairs this rank attends, summed over heads, for one batch element.
  std::int64_t attended_pairs = 0;
};

// Throws Error on an invalid configuration, heads, or rank.
SequenceParallelPlan make_sequence_parallel_plan(const SequenceLayout& layout, int rank,
                                                 const DilatedAttentionConfig& config, std::int64_t heads,
                                                 std::int64_t kv_heads);

// Bytes this rank receives in a forward pass: K and V rows of B x D elements of
// `element_bytes` each. The backward pass sends as many rows back, in the accumulation
// dtype (4 bytes, 8 for f64).
inline std::int64_t forward_receive_bytes(const SequenceParallelPlan& plan, std::int64_t batch, std::int64_t head_dim,
                                          std::int64_t element_bytes) {
  return 2 * plan.receive_rows * batch * head_dim * element_bytes;
}
inline std::int64_t forward_send_bytes(const SequenceParallelPlan& plan, std::int64_t batch, std::int64_t head_dim,
                                       std::int64_t element_bytes) {
  return 2 * plan.send_rows * batch * head_dim * element_bytes;
}

}  // namespace longnet
