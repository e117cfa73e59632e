// Parameters of one pattern's launch of the CUDA attention kernels. The host side
// (dilated_attention_cuda.cu) fills one per pattern; every kernel reads the rows of its
// virtual sequence in place: row j of virtual sequence (pattern, head offset, segment) is
// the tensor row first_row + j * dilation_rate, so no gather or scatter copy exists.
// Block-sparse launches (block_sparse_attention_cuda.cu) run the same kernels' kSparse
// instantiations, which walk the key blocks a block mask lists instead (SparseLists).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "longnet/kernels/dilation.hpp"

namespace longnet::kernels::cuda {

// The current device's SM count, for launch shapes (an H100's 132 where the runtime cannot
// say).
inline int device_multiprocessors() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) {
    return 132;
  }
  return sms;
}

// An operand (B, N, heads, D) with element strides over (batch, sequence, head); the
// head_dim axis is contiguous.
struct DeviceRows {
  void* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;

  template <class T>
  __host__ __device__ T* row(std::int64_t b, std::int64_t n, std::int64_t h) const {
    return static_cast<T*>(data) + b * batch_stride + n * seq_stride + h * head_stride;
  }
};

// One pattern's part of a launch: its CTAs are blockIdx.x in [cta_begin, cta_begin +
// head_count * segments * tiles_per_segment).
struct PatternSlot {
  DilationPattern pattern;
  int pattern_index = 0;
  int head_begin = 0, head_count = 0;
  std::int64_t segments = 0, tiles_per_segment = 0, cta_begin = 0;
  // Causal forward items (forward_work_by_cost): the virtual sequences are ordered by cost
  // within groups of this many, a group's items before the next group's, so that the K and
  // V a group reads stay in L2 (0: one group).
  std::int64_t cost_group = 0;
};
inline constexpr int kMaxSlots = 16;

// A block mask in CSR form on the device (kernels/block_sparse_attention.hpp): per (mask
// head, query block) the key blocks in increasing order with their partial flags, and per
// (mask head, key block) the query blocks. Query head h reads mask head (mask_heads == 1 ?
// 0 : h). Causal (PatternLaunch::causal) masks every block; the band [min_distance,
// max_distance] of query - key masks the partial ones.
struct SparseLists {
  const std::int64_t* row_offsets = nullptr;
  const std::int32_t* column_indices = nullptr;
  const std::uint8_t* row_partial = nullptr;
  const std::int64_t* column_offsets = nullptr;
  const std::int32_t* row_indices = nullptr;
  const std::uint8_t* column_partial = nullptr;
  std::int64_t block_q = 64, block_k = 64;
  std::int64_t query_blocks = 0, key_blocks = 0;
  int mask_heads = 1;
  std::int64_t min_distance = -INT64_MAX, max_distance = INT64_MAX;
  // CTAs per block on the side a kernel owns (query blocks for the forward and dQ, key
  // blocks for dK/dV): ceil(block / rows per CTA); the launcher sets it.
  std::int64_t tiles_per_block = 1;
};

struct PatternLaunch {
  // Problem.
  std::int64_t batch = 0;
  std::int64_t seq_len = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  // Pattern.
  DilationPattern pattern;
  int pattern_index = 0, num_patterns = 1;
  DilatedMode mode = DilatedMode::longnet;
  bool causal = false;
  float scale = 1.0f;         // softmax scale
  float scale_log2 = 1.0f;    // scale * log2(e): scores in base 2
  float output_scale = 1.0f;  // 1 or 1/G (head-groups)
  double scale_exact = 1.0;   // the same two in double for the f64 path
  double output_scale_exact = 1.0;
  // Grid: blockIdx.x = segment * tiles_per_segment + tile, blockIdx.y = head - head_begin,
  // blockIdx.z = batch.
  int head_begin = 0;
  int head_count = 0;
  std::int64_t segments = 0;
  std::int64_t tiles_per_segment = 0;
  // Causal dilated backward launches: the last sequences, whose CTAs are numbered
  // tile-major (backward_order.cuh); set by the launchers.
  std::int64_t backward_tail_sequences = 1;
  // Dilated backward launches: the first kv head of the grid (blockIdx.y + kv_head_begin);
  // head-groups launches cover only the kv heads of their pattern's query heads.
  int kv_head_begin = 0;
  // Operands.
  DeviceRows q, k, v, out, dout, dq, dk, dv;
  void* lse = nullptr;  // (B, H, N): float, double for f64 inputs
  // Forward: merge into fp32 accumulators (out_accumulator (B, N, H, D) contiguous and lse)
  // instead of writing `out` directly — for rows that more than one pattern reaches.
  bool merge = false;
  void* out_accumulator = nullptr;  // float (double for f64)
  // Forward, merging: this launch's pattern reaches every row of every head (LongNet mode,
  // dilation 1) and runs after the others, so it makes each row's last contribution: it
  // merges into the accumulator row and writes the result to `out` in the output dtype
  // (and the merged lse) instead of back into the accumulators, so no conversion pass
  // follows. The accumulators are not filled first (the lse is filled with -inf, and a
  // merge ignores an accumulator row whose lse is -inf).
  bool merge_last = false;
  // Forward (warp-specialised Hopper kernel, direct writes): each work item also writes
  // zeros to the output rows of its head that its pattern does not reach (the dilated gaps
  // of its rows), so no separate fill of the output is needed. The host sets it only when
  // those items cover every such row (flash_forward_sm90_ws.cuh).
  bool zero_unreached = false;
  // Backward: fp32 accumulators (contiguous (B, N, heads, D)); delta = rowsum(dout * out) (B, H, N).
  void* delta = nullptr;  // float (double for f64)
  // Hopper backward: per (b, h, n) {lse * log2(e) (+inf for -inf), delta / output_scale}
  // (B, H, N) float2 (backward_row_terms); launch_backward makes it when the caller did not.
  const void* row_terms = nullptr;
  void* dq_accumulator = nullptr;
  void* dk_accumulator = nullptr;
  void* dv_accumulator = nullptr;
  // Backward: each key row receives exactly one contribution (head-groups mode or one
  // pattern, with as many kv heads as heads), so dK and dV go straight into `dk`, `dv`.
  bool direct_kv = false;
  // Backward: this launch's pattern reaches every key row of every head (LongNet mode,
  // dilation 1, one query head per kv head) and runs first, so it stores dK, dV into the
  // accumulators instead of adding (they are not zero-filled).
  bool store_kv = false;
  bool deterministic = false;
  // Launched with programmatic stream serialization (Hopper warp-specialised kernels): the
  // launch may start while the previous pattern's launch finishes; its CTAs wait for that
  // launch (wait_for_previous_launch) before they merge into the forward's accumulators or
  // add to the backward's dK/dV accumulators. Only for launches that follow another
  // pattern's launch with nothing queued between them.
  bool overlap_previous = false;
  // Deterministic warp-specialised Hopper backward: per (b, h, tensor row of a query
  // tile's first row), how many key tiles have added their dQ to that tile (zeroed before
  // the launch); the CTA of key tile t adds when it reads t, so every dQ element takes its
  // additions in key-tile order.
  int* dq_order = nullptr;
  // Causal forward launches of the warp-specialised Hopper kernel: a counter (zeroed before
  // the launch) from which each persistent CTA takes its next item once it has queued the
  // copies of its current one, so that CTAs which drew light items take more (null: the
  // static rounds). Items still start in cost order.
  unsigned long long* item_counter = nullptr;
  // Forward kernels: the patterns of this launch (several run in one launch when no row is
  // reached by two of them, i.e. head-groups mode). blockIdx.x spans all their CTAs.
  int slot_count = 0;
  PatternSlot slots[kMaxSlots];
  std::int64_t total_ctas = 0;
  // Block-sparse launches only.
  SparseLists sparse;
};

}  // namespace longnet::kernels::cuda
