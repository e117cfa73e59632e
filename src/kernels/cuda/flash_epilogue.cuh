// The forward kernels' epilogue for one query row held by the 4 lanes of a row group:
// normalise by the row sum, then either write the output row and its lse (rows one
// pattern reaches) or merge them by log-sum-exp into the fp32 accumulators (LongNet mode).
// value(n, j) is the unnormalised output at column 8 n + 2 (lane % 4) + j.
#pragma once

#include <cmath>

#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace longnet::kernels::cuda {

// Every lane of the warp must call this (merging synchronises the warp).
template <class Element, int kHeadDim, class Value>
__device__ __forceinline__ void finish_query_row(const PatternLaunch& p, std::int64_t b, int h, std::int64_t n_row,
                                                 bool valid, float partial_sum, float row_max_log2, Value&& value) {
  using M = Mma<Element>;
  constexpr float kLn2 = 0.6931471805599453f;
  const int thread_in_group = threadIdx.x % 4;
  const float total = warp_group_sum(partial_sum);
  const float inverse = total > 0.0f ? 1.0f / total : 0.0f;
  const float lse = total > 0.0f ? (row_max_log2 + log2f(total)) * kLn2 : -INFINITY;
  float* lse_slot = static_cast<float*>(p.lse) + (b * p.heads + h) * p.seq_len + n_row;
  if (!p.merge) {
    if (!valid) return;
    Element* out = p.out.row<Element>(b, n_row, h);
    const float factor = inverse * p.output_scale;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      const int d = 8 * n + 2 * thread_in_group;
      if (d < p.head_dim) {
        *reinterpret_cast<std::uint32_t*>(out + d) = M::pack(value(n, 0) * factor, value(n, 1) * factor);
      }
    }
    if (thread_in_group == 0) *lse_slot = lse;
    return;
  }
  float* acc = static_cast<float*>(p.out_accumulator) + ((b * p.seq_len + n_row) * p.heads + h) * p.head_dim;
  if (p.store_first) {  // the row's first contribution, into unfilled accumulators
    if (!valid) return;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      const int d = 8 * n + 2 * thread_in_group;
      if (d < p.head_dim) {
        *reinterpret_cast<float2*>(acc + d) = make_float2(value(n, 0) * inverse, value(n, 1) * inverse);
      }
    }
    if (thread_in_group == 0) *lse_slot = lse;
    return;
  }
  const float old_lse = valid ? *lse_slot : -INFINITY;
  __syncwarp();  // all four lanes read the old lse before lane 0 replaces it
  if (!valid) return;
  float old_weight = 0.0f, new_weight = inverse, merged = lse;
  if (old_lse != -INFINITY) {
    merged = fmaxf(old_lse, lse) + log1pf(__expf(-fabsf(old_lse - lse)));
    old_weight = __expf(old_lse - merged);
    new_weight = inverse * __expf(lse - merged);
  }
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    const int d = 8 * n + 2 * thread_in_group;
    if (d < p.head_dim) {
      float2 stored = *reinterpret_cast<float2*>(acc + d);
      stored.x = stored.x * old_weight + value(n, 0) * new_weight;
      stored.y = stored.y * old_weight + value(n, 1) * new_weight;
      *reinterpret_cast<float2*>(acc + d) = stored;
    }
  }
  if (thread_in_group == 0) *lse_slot = merged;
}

// The backward kernels' end for one key row held by the 4 lanes of a row group: adds
// dk_scale * dK (the softmax scale, times output_scale where the kernel left it out of dS)
// and output_scale * dV (unscaled values dk(n, j), dv(n, j) at column
// 8 n + 2 (lane % 4) + j) to the fp32 accumulators, or stores them there when this launch
// makes the row's first contribution (`store`: PatternLaunch::store_kv), or writes them to
// dk, dv directly when it is the row's only contribution (direct_kv).
template <class Element, int kHeadDim, class DkValue, class DvValue>
__device__ __forceinline__ void finish_key_row(const PatternLaunch& p, std::int64_t b, int kv_head, std::int64_t n_row,
                                               bool store, float dk_scale, DkValue&& dk_value,
                                               DvValue&& dv_value) {
  using M = Mma<Element>;
  const int thread_in_group = threadIdx.x % 4;
  if (p.direct_kv) {
    Element* dk = p.dk.row<Element>(b, n_row, kv_head);
    Element* dv = p.dv.row<Element>(b, n_row, kv_head);
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      const int d = 8 * n + 2 * thread_in_group;
      if (d < p.head_dim) {
        *reinterpret_cast<std::uint32_t*>(dk + d) = M::pack(dk_scale * dk_value(n, 0), dk_scale * dk_value(n, 1));
        *reinterpret_cast<std::uint32_t*>(dv + d) =
            M::pack(p.output_scale * dv_value(n, 0), p.output_scale * dv_value(n, 1));
      }
    }
    return;
  }
  const std::int64_t index = ((b * p.seq_len + n_row) * p.kv_heads + kv_head) * p.head_dim;
  float* dk_acc = static_cast<float*>(p.dk_accumulator) + index;
  float* dv_acc = static_cast<float*>(p.dv_accumulator) + index;
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    const int d = 8 * n + 2 * thread_in_group;
    if (d < p.head_dim) {
      float2 k2 = store ? make_float2(0.0f, 0.0f) : *reinterpret_cast<float2*>(dk_acc + d);
      float2 v2 = store ? make_float2(0.0f, 0.0f) : *reinterpret_cast<float2*>(dv_acc + d);
      k2.x += dk_scale * dk_value(n, 0);
      k2.y += dk_scale * dk_value(n, 1);
      v2.x += p.output_scale * dv_value(n, 0);
      v2.y += p.output_scale * dv_value(n, 1);
      *reinterpret_cast<float2*>(dk_acc + d) = k2;
      *reinterpret_cast<float2*>(dv_acc + d) = v2;
    }
  }
}

}  // namespace longnet::kernels::cuda
