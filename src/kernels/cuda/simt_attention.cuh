// SIMT (no tensor core) dilated attention on one pattern: the exact path for f32 and f64
// inputs (fp32 / fp64 arithmetic throughout, as the CPU kernel) and the fallback for
// head dims or alignments the tensor-core kernels do not take. One warp per row: lanes
// split the head dimension (up to kMaxHeadDim), dot products reduce across the warp.
// Deterministic: the backward is two kernels, one owning each query row (dq) and one
// owning each key row (dk, dv), so nothing is accumulated with atomics. kSparse: a
// block-sparse launch — a warp owns a row of the whole sequence and visits the keys of
// its query block's listed blocks (or, for a key row, the queries of the query blocks that
// list its key block), masked by causal and the partial blocks' band.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/block_sparse_tiles.cuh"
#include "kernels/cuda/flash_params.cuh"

namespace longnet::kernels::cuda {

inline constexpr int kSimtMaxHeadDim = 256;
inline constexpr int kSimtPerLane = kSimtMaxHeadDim / 32;
inline constexpr int kSimtWarps = 8;  // rows per block

template <class T>
__device__ __forceinline__ float load_as_float(const T* p) {
  return static_cast<float>(*p);
}
template <>
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
template <>
__device__ __forceinline__ float load_as_float(const __half* p) {
  return __half2float(*p);
}

template <class Compute, class Element>
__device__ __forceinline__ Compute load(const Element* p) {
  if constexpr (sizeof(Compute) == 8) {
    return static_cast<Compute>(*p);  // f64 inputs only
  } else {
    return load_as_float(p);
  }
}

template <class Element>
__device__ __forceinline__ void store(Element* p, float x) {
  if constexpr (sizeof(Element) == 2) {
    if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
      *p = __float2bfloat16_rn(x);
    } else {
      *p = __float2half_rn(x);
    }
  } else {
    *p = static_cast<Element>(x);
  }
}
template <class Element>
__device__ __forceinline__ void store(Element* p, double x) {
  *p = static_cast<Element>(x);
}

template <class Compute>
__device__ __forceinline__ Compute warp_sum(Compute x) {
#pragma unroll
  for (int m = 16; m > 0; m /= 2) x += __shfl_xor_sync(0xffffffff, x, m);
  return x;
}

template <class Compute>
__device__ __forceinline__ Compute exp_of(Compute x) {
  if constexpr (sizeof(Compute) == 8) {
    return exp(x);
  } else {
    return expf(x);
  }
}

// Loads a row (D elements) into per-lane registers: lane holds d = lane + 32 m.
template <class Compute, class Element>
__device__ __forceinline__ void load_row(Compute (&out)[kSimtPerLane], const Element* row, int head_dim, int lane) {
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) {
    const int d = lane + 32 * m;
    out[m] = d < head_dim ? load<Compute>(row + d) : Compute(0);
  }
}

template <class Compute, class Element>
__device__ __forceinline__ Compute dot_row(const Compute (&x)[kSimtPerLane], const Element* row, int head_dim,
                                           int lane) {
  Compute partial = 0;
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) {
    const int d = lane + 32 * m;
    if (d < head_dim) partial += x[m] * load<Compute>(row + d);
  }
  return warp_sum(partial);
}

// Block-sparse: calls visit(other) for every position `other` on the far side of list
// entries [begin, end) (key blocks of a query row, or query blocks of a key row) whose pair
// with the warp's own position `own` the mask allows. own_is_query: own is a query.
template <class Visit>
__device__ __forceinline__ void visit_sparse_pairs(const PatternLaunch& p, const std::int32_t* indices,
                                                   const std::uint8_t* flags, std::int64_t begin, std::int64_t end,
                                                   std::int64_t block, std::int64_t own, bool own_is_query,
                                                   Visit&& visit) {
  for (std::int64_t n = begin; n < end; ++n) {
    const Band band = tile_band(p, flags[n] != 0);
    std::int64_t first = indices[n] * block, last = first + block - 1;
    last = last < p.seq_len - 1 ? last : p.seq_len - 1;
    // query - key in [lo, hi]: keys in [own - hi, own - lo], queries in [own + lo, own + hi].
    if (own_is_query) {
      if (band.hi != kUnboundedDistance && own - band.hi > first) first = own - band.hi;
      if (band.lo != -kUnboundedDistance && own - band.lo < last) last = own - band.lo;
    } else {
      if (band.lo != -kUnboundedDistance && own + band.lo > first) first = own + band.lo;
      if (band.hi != kUnboundedDistance && own + band.hi < last) last = own + band.hi;
    }
    for (std::int64_t other = first; other <= last; ++other) visit(other);
  }
}

// Decodes blockIdx.x into (segment, first row of this block in the virtual sequence).
struct SimtRows {
  std::int64_t segment, first;
};
__device__ __forceinline__ SimtRows simt_rows(const PatternLaunch& p) {
  return {blockIdx.x / p.tiles_per_segment, (blockIdx.x % p.tiles_per_segment) * kSimtWarps};
}

// Forward: one warp per query row of this pattern (or of the sequence, kSparse).
template <class Element, class Compute, bool kSparse = false>
__global__ void __launch_bounds__(kSimtWarps * 32) simt_forward_kernel(const PatternLaunch p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  SimtRows rows{};
  if constexpr (!kSparse) rows = simt_rows(p);
  const int h = p.head_begin + blockIdx.y;
  const std::int64_t b = blockIdx.z;
  // The row: tensor row n_row; dilated: index i of virtual sequence vs.
  std::int64_t n_row = 0, i = 0;
  VirtualSequence vs{};
  if constexpr (kSparse) {
    n_row = static_cast<std::int64_t>(blockIdx.x) * kSimtWarps + warp;
    if (n_row >= p.seq_len) return;
  } else {
    const std::int64_t offset =
        pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
    if (offset < 0) return;
    vs = virtual_sequence(p.seq_len, p.pattern, offset, rows.segment);
    i = rows.first + warp;
    if (i >= vs.length) return;
    n_row = vs.first_row + i * vs.row_step;
  }
  const int kv_head = h / (p.heads / p.kv_heads);

  Compute q[kSimtPerLane], o[kSimtPerLane];
  load_row(q, p.q.row<const Element>(b, n_row, h), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) o[m] = 0;
  Compute running_max = -INFINITY, running_sum = 0;
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  auto visit = [&](std::int64_t key_row) {
    const Compute x = scale * dot_row(q, p.k.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
    const Compute new_max = x > running_max ? x : running_max;
    const Compute correction = exp_of(running_max - new_max);
    const Compute weight = exp_of(x - new_max);
    running_sum = running_sum * correction + weight;
    running_max = new_max;
    const Element* v = p.v.row<const Element>(b, key_row, kv_head);
#pragma unroll
    for (int m = 0; m < kSimtPerLane; ++m) {
      const int d = lane + 32 * m;
      if (d < p.head_dim) o[m] = o[m] * correction + weight * load<Compute>(v + d);
    }
  };
  if constexpr (kSparse) {
    const std::int64_t list = sparse_mask_head(p, h) * p.sparse.query_blocks + n_row / p.sparse.block_q;
    visit_sparse_pairs(p, p.sparse.column_indices, p.sparse.row_partial, p.sparse.row_offsets[list],
                       p.sparse.row_offsets[list + 1], p.sparse.block_k, n_row, true, visit);
  } else {
    const std::int64_t key_end = p.causal ? i + 1 : vs.length;
    for (std::int64_t j = 0; j < key_end; ++j) visit(vs.first_row + j * vs.row_step);
  }
  const Compute lse = running_max + log(running_sum);
  Compute* lse_slot = static_cast<Compute*>(p.lse) + (b * p.heads + h) * p.seq_len + n_row;
  if (!p.merge) {
    Element* out = p.out.row<Element>(b, n_row, h);
    Compute factor = (sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale) / running_sum;
    if constexpr (kSparse) {
      if (running_sum == 0) factor = 0;  // a row without keys: out 0, lse -inf
    }
#pragma unroll
    for (int m = 0; m < kSimtPerLane; ++m) {
      const int d = lane + 32 * m;
      if (d < p.head_dim) store(out + d, o[m] * factor);
    }
    if (lane == 0) *lse_slot = lse;
    return;
  }
  const Compute old_lse = *lse_slot;
  __syncwarp();
  Compute old_weight = 0, new_weight = 1 / running_sum, merged = lse;
  if (old_lse != -INFINITY) {
    merged = (old_lse > lse ? old_lse : lse) + log1p(exp_of(-fabs(old_lse - lse)));
    old_weight = exp_of(old_lse - merged);
    new_weight = exp_of(lse - merged) / running_sum;
  }
  Compute* acc = static_cast<Compute*>(p.out_accumulator) + ((b * p.seq_len + n_row) * p.heads + h) * p.head_dim;
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) {
    const int d = lane + 32 * m;
    if (d < p.head_dim) acc[d] = acc[d] * old_weight + o[m] * new_weight;
  }
  if (lane == 0) *lse_slot = merged;
}

// Backward, query side: dq += scale * sum_k dS k with dS = P (alpha dO.v - delta).
template <class Element, class Compute, bool kSparse = false>
__global__ void __launch_bounds__(kSimtWarps * 32) simt_backward_dq_kernel(const PatternLaunch p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  SimtRows rows{};
  if constexpr (!kSparse) rows = simt_rows(p);
  const int h = p.head_begin + blockIdx.y;
  const std::int64_t b = blockIdx.z;
  std::int64_t n_row = 0, i = 0;
  VirtualSequence vs{};
  if constexpr (kSparse) {
    n_row = static_cast<std::int64_t>(blockIdx.x) * kSimtWarps + warp;
    if (n_row >= p.seq_len) return;
  } else {
    const std::int64_t offset =
        pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
    if (offset < 0) return;
    vs = virtual_sequence(p.seq_len, p.pattern, offset, rows.segment);
    i = rows.first + warp;
    if (i >= vs.length) return;
    n_row = vs.first_row + i * vs.row_step;
  }
  const int kv_head = h / (p.heads / p.kv_heads);
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  const Compute alpha = sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale;
  const Compute lse = static_cast<const Compute*>(p.lse)[(b * p.heads + h) * p.seq_len + n_row];
  const Compute delta = static_cast<const Compute*>(p.delta)[(b * p.heads + h) * p.seq_len + n_row];

  Compute q[kSimtPerLane], g[kSimtPerLane], dq[kSimtPerLane];
  load_row(q, p.q.row<const Element>(b, n_row, h), p.head_dim, lane);
  load_row(g, p.dout.row<const Element>(b, n_row, h), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) dq[m] = 0;
  auto visit = [&](std::int64_t key_row) {
    const Element* k = p.k.row<const Element>(b, key_row, kv_head);
    const Compute weight = exp_of(scale * dot_row(q, k, p.head_dim, lane) - lse);
    const Compute dp = alpha * dot_row(g, p.v.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
    const Compute ds = weight * (dp - delta);
#pragma unroll
    for (int m = 0; m < kSimtPerLane; ++m) {
      const int d = lane + 32 * m;
      if (d < p.head_dim) dq[m] += scale * ds * load<Compute>(k + d);
    }
  };
  if constexpr (kSparse) {
    const std::int64_t list = sparse_mask_head(p, h) * p.sparse.query_blocks + n_row / p.sparse.block_q;
    visit_sparse_pairs(p, p.sparse.column_indices, p.sparse.row_partial, p.sparse.row_offsets[list],
                       p.sparse.row_offsets[list + 1], p.sparse.block_k, n_row, true, visit);
  } else {
    const std::int64_t key_end = p.causal ? i + 1 : vs.length;
    for (std::int64_t j = 0; j < key_end; ++j) visit(vs.first_row + j * vs.row_step);
  }
  Compute* acc = static_cast<Compute*>(p.dq_accumulator) + ((b * p.seq_len + n_row) * p.heads + h) * p.head_dim;
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) {
    const int d = lane + 32 * m;
    if (d < p.head_dim) acc[d] += dq[m];
  }
}

// Backward, key side: for key row j of virtual sequence (segment, offset), every query
// head of its kv group that uses `offset` contributes dv += alpha P dO and dk += scale dS q.
// Grid x: segment * tiles_per_segment + tile, tiles covering offsets x rows (offset-major).
// kSparse: key row j of the sequence, every query head of the group, the queries of the
// query blocks that list its key block.
template <class Element, class Compute, bool kSparse = false>
__global__ void __launch_bounds__(kSimtWarps * 32)
    simt_backward_dkdv_kernel(const PatternLaunch p, std::int64_t tiles_per_offset) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Dilated: key row j of virtual sequence (segment, offset). (The dilated instantiation
  // keeps the statement order it had before kSparse existed: it compiles to the same code.)
  std::int64_t segment = 0, offset = 0, j = 0;
  if constexpr (!kSparse) {
    segment = blockIdx.x / p.tiles_per_segment;
    const std::int64_t within = blockIdx.x % p.tiles_per_segment;
    offset = within / tiles_per_offset;
    j = (within % tiles_per_offset) * kSimtWarps + warp;
  }
  const int kv_head = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  std::int64_t key_row = 0;
  VirtualSequence vs{};
  if constexpr (kSparse) {
    key_row = static_cast<std::int64_t>(blockIdx.x) * kSimtWarps + warp;
    if (key_row >= p.seq_len) return;
  } else {
    vs = virtual_sequence(p.seq_len, p.pattern, offset, segment);
    if (j >= vs.length) return;
  }
  const int group = p.heads / p.kv_heads;
  if constexpr (!kSparse) key_row = vs.first_row + j * vs.row_step;
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  const Compute alpha = sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale;

  Compute k[kSimtPerLane], v[kSimtPerLane], dk[kSimtPerLane], dv[kSimtPerLane];
  load_row(k, p.k.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
  load_row(v, p.v.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) dk[m] = dv[m] = 0;
  bool touched = kSparse;
  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    if constexpr (!kSparse) {
      if (pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads) != offset) {
        continue;
      }
      touched = true;
    }
    auto visit = [&](std::int64_t n_row) {
      const Element* q = p.q.row<const Element>(b, n_row, h);
      const Element* g = p.dout.row<const Element>(b, n_row, h);
      const Compute lse = static_cast<const Compute*>(p.lse)[(b * p.heads + h) * p.seq_len + n_row];
      const Compute delta = static_cast<const Compute*>(p.delta)[(b * p.heads + h) * p.seq_len + n_row];
      const Compute weight = exp_of(scale * dot_row(k, q, p.head_dim, lane) - lse);
      const Compute dp = alpha * dot_row(v, g, p.head_dim, lane);
      const Compute ds = weight * (dp - delta);
#pragma unroll
      for (int m = 0; m < kSimtPerLane; ++m) {
        const int d = lane + 32 * m;
        if (d < p.head_dim) {
          dv[m] += alpha * weight * load<Compute>(g + d);
          dk[m] += scale * ds * load<Compute>(q + d);
        }
      }
    };
    if constexpr (kSparse) {
      const std::int64_t list = sparse_mask_head(p, h) * p.sparse.key_blocks + key_row / p.sparse.block_k;
      visit_sparse_pairs(p, p.sparse.row_indices, p.sparse.column_partial, p.sparse.column_offsets[list],
                         p.sparse.column_offsets[list + 1], p.sparse.block_q, key_row, false, visit);
    } else {
      for (std::int64_t i = p.causal ? j : 0; i < vs.length; ++i) visit(vs.first_row + i * vs.row_step);
    }
  }
  if (!touched) return;
  const std::int64_t index = ((b * p.seq_len + key_row) * p.kv_heads + kv_head) * p.head_dim;
  Compute* dk_acc = static_cast<Compute*>(p.dk_accumulator) + index;
  Compute* dv_acc = static_cast<Compute*>(p.dv_accumulator) + index;
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) {
    const int d = lane + 32 * m;
    if (d < p.head_dim) {
      dk_acc[d] += dk[m];
      dv_acc[d] += dv[m];
    }
  }
}

}  // namespace longnet::kernels::cuda
