// SIMT (no tensor core) dilated attention on one pattern: the exact path for f32 and f64
// inputs (fp32 / fp64 arithmetic throughout, as the CPU kernel) and the fallback for
// head dims or alignments the tensor-core kernels do not take. One warp per row: lanes
// split the head dimension (up to kMaxHeadDim), dot products reduce across the warp.
// Deterministic: the backward is two kernels, one owning each query row (dq) and one
// owning each key row (dk, dv), so nothing is accumulated with atomics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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

// Decodes blockIdx.x into (segment, first row of this block in the virtual sequence).
struct SimtRows {
  std::int64_t segment, first;
};
__device__ __forceinline__ SimtRows simt_rows(const PatternLaunch& p) {
  return {blockIdx.x / p.tiles_per_segment, (blockIdx.x % p.tiles_per_segment) * kSimtWarps};
}

// Forward: one warp per query row of this pattern.
template <class Element, class Compute>
__global__ void __launch_bounds__(kSimtWarps * 32) simt_forward_kernel(const PatternLaunch p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SimtRows rows = simt_rows(p);
  const int h = p.head_begin + blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const std::int64_t offset =
      pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
  if (offset < 0) return;
  const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, rows.segment);
  const std::int64_t i = rows.first + warp;
  if (i >= vs.length) return;
  const int kv_head = h / (p.heads / p.kv_heads);
  const std::int64_t n_row = vs.first_row + i * vs.row_step;

  Compute q[kSimtPerLane], o[kSimtPerLane];
  load_row(q, p.q.row<const Element>(b, n_row, h), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) o[m] = 0;
  Compute running_max = -INFINITY, running_sum = 0;
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  const std::int64_t key_end = p.causal ? i + 1 : vs.length;
  for (std::int64_t j = 0; j < key_end; ++j) {
    const std::int64_t key_row = vs.first_row + j * vs.row_step;
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
  }
  const Compute lse = running_max + log(running_sum);
  Compute* lse_slot = static_cast<Compute*>(p.lse) + (b * p.heads + h) * p.seq_len + n_row;
  if (!p.merge) {
    Element* out = p.out.row<Element>(b, n_row, h);
    const Compute factor =
        (sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale) / running_sum;
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
template <class Element, class Compute>
__global__ void __launch_bounds__(kSimtWarps * 32) simt_backward_dq_kernel(const PatternLaunch p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SimtRows rows = simt_rows(p);
  const int h = p.head_begin + blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const std::int64_t offset =
      pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
  if (offset < 0) return;
  const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, rows.segment);
  const std::int64_t i = rows.first + warp;
  if (i >= vs.length) return;
  const int kv_head = h / (p.heads / p.kv_heads);
  const std::int64_t n_row = vs.first_row + i * vs.row_step;
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  const Compute alpha = sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale;
  const Compute lse = static_cast<const Compute*>(p.lse)[(b * p.heads + h) * p.seq_len + n_row];
  const Compute delta = static_cast<const Compute*>(p.delta)[(b * p.heads + h) * p.seq_len + n_row];

  Compute q[kSimtPerLane], g[kSimtPerLane], dq[kSimtPerLane];
  load_row(q, p.q.row<const Element>(b, n_row, h), p.head_dim, lane);
  load_row(g, p.dout.row<const Element>(b, n_row, h), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) dq[m] = 0;
  const std::int64_t key_end = p.causal ? i + 1 : vs.length;
  for (std::int64_t j = 0; j < key_end; ++j) {
    const std::int64_t key_row = vs.first_row + j * vs.row_step;
    const Element* k = p.k.row<const Element>(b, key_row, kv_head);
    const Compute weight = exp_of(scale * dot_row(q, k, p.head_dim, lane) - lse);
    const Compute dp = alpha * dot_row(g, p.v.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
    const Compute ds = weight * (dp - delta);
#pragma unroll
    for (int m = 0; m < kSimtPerLane; ++m) {
      const int d = lane + 32 * m;
      if (d < p.head_dim) dq[m] += scale * ds * load<Compute>(k + d);
    }
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
template <class Element, class Compute>
__global__ void __launch_bounds__(kSimtWarps * 32)
    simt_backward_dkdv_kernel(const PatternLaunch p, std::int64_t tiles_per_offset) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t segment = blockIdx.x / p.tiles_per_segment;
  const std::int64_t within = blockIdx.x % p.tiles_per_segment;
  const std::int64_t offset = within / tiles_per_offset;
  const std::int64_t j = (within % tiles_per_offset) * kSimtWarps + warp;
  const int kv_head = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, segment);
  if (j >= vs.length) return;
  const int group = p.heads / p.kv_heads;
  const std::int64_t key_row = vs.first_row + j * vs.row_step;
  const Compute scale = sizeof(Compute) == 8 ? static_cast<Compute>(p.scale_exact) : p.scale;
  const Compute alpha = sizeof(Compute) == 8 ? static_cast<Compute>(p.output_scale_exact) : p.output_scale;

  Compute k[kSimtPerLane], v[kSimtPerLane], dk[kSimtPerLane], dv[kSimtPerLane];
  load_row(k, p.k.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
  load_row(v, p.v.row<const Element>(b, key_row, kv_head), p.head_dim, lane);
#pragma unroll
  for (int m = 0; m < kSimtPerLane; ++m) dk[m] = dv[m] = 0;
  bool touched = false;
  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    if (pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads) != offset) {
      continue;
    }
    touched = true;
    for (std::int64_t i = p.causal ? j : 0; i < vs.length; ++i) {
      const std::int64_t n_row = vs.first_row + i * vs.row_step;
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
