// Which keys a CTA of a dilated backward launch owns: grid (segments x key tiles, kv heads
// from p.kv_head_begin, batch), one tile of `keys` keys of one virtual sequence per CTA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/flash_params.cuh"

namespace longnet::kernels::cuda {

struct BackwardCta {
  std::int64_t segment = 0, k_begin = 0;
  int kv_head = 0;
  std::int64_t batch = 0;
};

// Non-causal launches: blockIdx.x = segment * tiles + tile, blockIdx.y = kv head - p.kv_head_begin,
// blockIdx.z = batch element (the key tiles of a sequence have consecutive blockIdx.x,
// which the deterministic dQ order relies on).
//
// Causal launches: the CTA of key tile t walks the query tiles from t on, so tile 0 is the
// longest, and a launch that ends on a sequence's first tiles leaves most SMs idle while
// they finish. The sequences (in the order above) keep that order except the last
// p.backward_tail_sequences, whose CTAs are numbered tile-major (tile 0 of each of them
// first), so the in-order dispatch ends the launch on short CTAs. Only the tail: the CTAs
// of one sequence share its Q, dO and dQ rows in L2, and numbering the whole launch
// tile-major made causal 1M forward+backward 16.9 -> 19.5 ms (benchmarks.md, 2026-12-04
// fourth session).
template <class Index, bool kDescendingTiles>
__device__ __forceinline__ BackwardCta dilated_backward_cta_in(const PatternLaunch& p, int keys) {
  BackwardCta cta;
  const auto tiles = static_cast<Index>(p.tiles_per_segment), segments = static_cast<Index>(p.segments);
  const auto kv_heads = static_cast<Index>(gridDim.y);
  if (!p.causal) {
    const Index segment = blockIdx.x / tiles;
    cta.segment = segment;
    cta.k_begin = static_cast<std::int64_t>(blockIdx.x - segment * tiles) * keys;
    cta.kv_head = p.kv_head_begin + static_cast<int>(blockIdx.y);
    cta.batch = blockIdx.z;
    return cta;
  }
  const Index sequences = segments * kv_heads * gridDim.z;
  const Index linear = blockIdx.x + static_cast<Index>(gridDim.x) * (blockIdx.y + kv_heads * blockIdx.z);
  const Index tail = p.backward_tail_sequences < sequences ? static_cast<Index>(p.backward_tail_sequences) : sequences;
  const Index before_tail = (sequences - tail) * tiles;
  Index sequence = 0, tile = 0;  // sequence: (batch, kv head, segment), segment fastest
  if constexpr (kDescendingTiles) {
    // Deterministic causal launches add dQ from the diagonal down (the CTA of key tile t
    // waits for those of tiles > t; flash_backward_sm90_ws.cuh): a sequence's tiles in
    // descending order, so every CTA waited for was dispatched before it. (A compile-time
    // choice: the runtime test in every instantiation measured 8 % slower on deterministic
    // non-causal launches, whose code it should not have touched; 2026-12-04, fifth session.)
    sequence = linear / tiles;
    tile = tiles - 1 - (linear - sequence * tiles);
  } else if (linear < before_tail) {
    sequence = linear / tiles;
    tile = linear - sequence * tiles;
  } else {
    const Index within = linear - before_tail;
    tile = within / tail;
    sequence = sequences - tail + (within - tile * tail);
  }
  cta.k_begin = static_cast<std::int64_t>(tile) * keys;
  const Index head_batch = sequence / segments;
  cta.segment = sequence - head_batch * segments;
  const Index batch = head_batch / kv_heads;
  cta.kv_head = p.kv_head_begin + static_cast<int>(head_batch - batch * kv_heads);
  cta.batch = batch;
  return cta;
}

// 32-bit index arithmetic when the grid's CTAs fit (every launch in practice): a 64-bit
// division is a ~70-instruction subroutine, and per-CTA set-up is paid once per CTA of a
// one-CTA-per-SM launch (the 64-bit form of this order cost ~0.4 ms at causal 1M).
// kDescendingTiles: a causal sequence's key tiles numbered last to first (deterministic
// causal launches of the warp-specialised kernel).
template <bool kDescendingTiles = false>
__device__ __forceinline__ BackwardCta dilated_backward_cta(const PatternLaunch& p, int keys) {
  const std::uint64_t ctas = static_cast<std::uint64_t>(gridDim.x) * gridDim.y * gridDim.z;
  return ctas < (std::uint64_t{1} << 32) ? dilated_backward_cta_in<std::uint32_t, kDescendingTiles>(p, keys)
                                          : dilated_backward_cta_in<std::uint64_t, kDescendingTiles>(p, keys);
}

// PatternLaunch::backward_tail_sequences for a launch of `tiles_per_segment` CTAs a
// sequence: about four waves of CTAs of a one-CTA-per-SM launch (a model of greedy
// dispatch on issue 5's patterns: makespan 1032 -> 926 steps; more gives little).
inline std::int64_t backward_tail_sequences(std::int64_t tiles_per_segment) {
  const std::int64_t ctas = 4 * static_cast<std::int64_t>(device_multiprocessors());
  return tiles_per_segment > 0 ? (ctas + tiles_per_segment - 1) / tiles_per_segment : 1;
}

// Whether a deterministic non-causal launch may walk its query tiles rotated (DqOrder::
// kRotated, flash_backward_sm90_ws.cuh): there the CTA of key tile t waits for the CTA of
// tile t + 1, dispatched after it, so all CTAs of a sequence must be able to run at once.
// With one CTA an SM and CTAs dispatched in index order, the CTAs before a sequence's
// finish without it, so tiles_per_segment <= SMs suffices; half the SMs leaves room for
// kernels of other streams (e.g. NCCL's) holding SMs meanwhile.
inline bool rotated_walk_fits(std::int64_t tiles_per_segment) {
  return tiles_per_segment <= device_multiprocessors() / 2;
}

// The kv heads a dilated backward launch's grid covers (blockIdx.y = kv head - begin):
// those of the launch's query heads. In head-groups mode a CTA of a kv head outside the
// pattern's group would start, find no head and exit: 5 of every 8 CTAs at H = 8 with
// three patterns.
// Sets p.kv_head_begin and returns the grid's kv-head extent (0: nothing to launch).
inline int cover_pattern_kv_heads(PatternLaunch& p) {
  const int group = p.heads / p.kv_heads;
  p.kv_head_begin = p.head_count > 0 ? p.head_begin / group : 0;
  return p.head_count > 0 ? (p.head_begin + p.head_count - 1) / group + 1 - p.kv_head_begin : 0;
}

}  // namespace longnet::kernels::cuda
