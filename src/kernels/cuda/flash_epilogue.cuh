// The attention kernels' epilogues: the forward's output rows and lse, the backward's dK
// and dV rows, each for the two rows a thread holds of a 16-row MMA tile, and the L2
// prefetches that let a merge's loads wait on L2.
#pragma once

#include <cmath>

#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace longnet::kernels::cuda {

// Brings into L2 the memory a later merge reads (prefetch.global.L2): issued when
// a tile of work starts, so that its epilogue's loads wait on L2 rather than on DRAM. A
// hint only: L2 is where global memory is coherent, so a line fetched before the previous
// launch's last writes still reads them.
__device__ __forceinline__ void prefetch_l2(const void* address) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
}

// The 128-byte lines of one fp32 row of head_dim values a lane of a row group's pair
// prefetches: half 0 or 1 takes every other line.
template <int kHeadDim>
__device__ __forceinline__ void prefetch_row_lines(const float* row, int head_dim, int half) {
#pragma unroll
  for (int line = half; line < kHeadDim / 32; line += 2) {
    if (line * 32 < head_dim) prefetch_l2(row + line * 32);
  }
}

// Calls body(n, d) for the column pairs d = 8 n + 2 (lane % 4) that this lane holds of a
// row of an MMA tile (value(.., n, 0) and (.., n, 1) are columns d and d + 1), those the
// head has (d < head_dim).
template <int kHeadDim, class Body>
__device__ __forceinline__ void for_lane_column_pairs(int head_dim, Body&& body) {
  const int thread_in_group = threadIdx.x % 4;
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    const int d = 8 * n + 2 * thread_in_group;
    if (d < head_dim) body(n, d);
  }
}

// A thread's two rows of a 16-row MMA tile (rows g and g + 8 of its row group: value(r, n,
// j) is row r's unnormalised output at column 8 n + 2 (lane % 4) + j): when this launch
// merges into accumulators a previous one wrote, lanes 0-1 of each row group prefetch row
// 0's accumulator row and lse, lanes 2-3 row 1's.
template <int kHeadDim>
__device__ __forceinline__ void prefetch_query_rows(const PatternLaunch& p, std::int64_t b, int h,
                                                    const std::int64_t (&n_row)[2], const bool (&valid)[2]) {
  if (!p.merge) return;
  // (Selected, not indexed by a lane-dependent r: that put the arrays in local memory.)
  const int thread_in_group = threadIdx.x % 4;
  const bool second = thread_in_group >= 2;
  if (!(second ? valid[1] : valid[0])) return;
  const std::int64_t row = second ? n_row[1] : n_row[0];
  const float* acc = static_cast<const float*>(p.out_accumulator) + ((b * p.seq_len + row) * p.heads + h) * p.head_dim;
  prefetch_row_lines<kHeadDim>(acc, p.head_dim, thread_in_group % 2);
  if (thread_in_group % 2 == 0) prefetch_l2(static_cast<const float*>(p.lse) + (b * p.heads + h) * p.seq_len + row);
}

// The forward kernels' epilogue for a thread's two query rows (as above; the 4 lanes of a
// row group hold a row): normalise by the row sum, then either write the output rows and
// their lse (rows one pattern reaches) or merge them with the fp32 accumulators by
// log-sum-exp (LongNet mode), back into them or, for the rows' last pattern (merge_last),
// into the output.
// Every lane of the warp must call this (merging synchronises the warp).
template <class Element, int kHeadDim, class Value>
__device__ __forceinline__ void finish_query_rows(const PatternLaunch& p, std::int64_t b, int h,
                                                  const std::int64_t (&n_row)[2], const bool (&valid)[2],
                                                  const float (&partial_sum)[2], const float (&row_max_log2)[2],
                                                  Value&& value) {
  using M = Mma<Element>;
  constexpr float kLn2 = 0.6931471805599453f;
  constexpr int kColumnPairs = kHeadDim / 8;
  const int thread_in_group = threadIdx.x % 4;
  float inverse[2], lse[2];
  float* lse_slot[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = warp_group_sum(partial_sum[r]);
    inverse[r] = total > 0.0f ? 1.0f / total : 0.0f;
    lse[r] = total > 0.0f ? (row_max_log2[r] + log2f(total)) * kLn2 : -INFINITY;
    lse_slot[r] = static_cast<float*>(p.lse) + (b * p.heads + h) * p.seq_len + n_row[r];
  }
  if (!p.merge) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (!valid[r]) continue;
      Element* out = p.out.row<Element>(b, n_row[r], h);
      const float factor = inverse[r] * p.output_scale;
      for_lane_column_pairs<kHeadDim>(p.head_dim, [&](int n, int d) {
        *reinterpret_cast<std::uint32_t*>(out + d) = M::pack(value(r, n, 0) * factor, value(r, n, 1) * factor);
      });
      if (thread_in_group == 0) *lse_slot[r] = lse[r];
    }
    return;
  }
  float* acc[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    acc[r] = static_cast<float*>(p.out_accumulator) + ((b * p.seq_len + n_row[r]) * p.heads + h) * p.head_dim;
  }
  // Every load of both rows before any store: one memory round trip. (Row by row, with each
  // row's lse read first, ptxas kept them in six dependent round trips at the end of every
  // item, while the tensor cores waited.)
  float old_lse[2];
  float2 stored[2][kColumnPairs];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    old_lse[r] = valid[r] ? *lse_slot[r] : -INFINITY;
#pragma unroll
    for (int n = 0; n < kColumnPairs; ++n) {  // (every pair assigned: zeros where not read)
      const int d = 8 * n + 2 * (threadIdx.x % 4);
      stored[r][n] =
          valid[r] && d < p.head_dim ? *reinterpret_cast<const float2*>(acc[r] + d) : make_float2(0.0f, 0.0f);
    }
  }
  __syncwarp();  // all four lanes read the old lse before lane 0 replaces it
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!valid[r]) continue;
    float old_weight = 0.0f, new_weight = inverse[r], merged = lse[r];
    const bool earlier = old_lse[r] != -INFINITY;  // else the accumulator row was never written
    if (earlier) {
      merged = fmaxf(old_lse[r], lse[r]) + log1pf(__expf(-fabsf(old_lse[r] - lse[r])));
      old_weight = __expf(old_lse[r] - merged);
      new_weight = inverse[r] * __expf(lse[r] - merged);
    }
    const auto combined = [&](int n, int j) {
      const float old_value = j == 0 ? stored[r][n].x : stored[r][n].y;
      return (earlier ? old_value * old_weight : 0.0f) + value(r, n, j) * new_weight;
    };
    if (p.merge_last) {
      Element* out = p.out.row<Element>(b, n_row[r], h);
      for_lane_column_pairs<kHeadDim>(p.head_dim, [&](int n, int d) {
        *reinterpret_cast<std::uint32_t*>(out + d) =
            M::pack(combined(n, 0) * p.output_scale, combined(n, 1) * p.output_scale);
      });
    } else {
      for_lane_column_pairs<kHeadDim>(p.head_dim, [&](int n, int d) {
        *reinterpret_cast<float2*>(acc[r] + d) = make_float2(combined(n, 0), combined(n, 1));
      });
    }
    if (thread_in_group == 0) *lse_slot[r] = merged;
  }
}

// The backward's accumulator rows of key row n_row (dK's, then dV's at the same index).
__device__ __forceinline__ std::int64_t key_accumulator_index(const PatternLaunch& p, std::int64_t b, int kv_head,
                                                              std::int64_t n_row) {
  return ((b * p.seq_len + n_row) * p.kv_heads + kv_head) * p.head_dim;
}

// As prefetch_query_rows, for the dK and dV accumulator rows a backward launch adds to
// (neither the rows' first contribution nor written directly).
template <int kHeadDim>
__device__ __forceinline__ void prefetch_key_rows(const PatternLaunch& p, bool store, std::int64_t b, int kv_head,
                                                  const std::int64_t (&n_row)[2], const bool (&valid)[2]) {
  if (p.direct_kv || store) return;
  const int thread_in_group = threadIdx.x % 4;
  const bool second = thread_in_group >= 2;
  if (!(second ? valid[1] : valid[0])) return;
  const std::int64_t index = key_accumulator_index(p, b, kv_head, second ? n_row[1] : n_row[0]);
  prefetch_row_lines<kHeadDim>(static_cast<const float*>(p.dk_accumulator) + index, p.head_dim, thread_in_group % 2);
  prefetch_row_lines<kHeadDim>(static_cast<const float*>(p.dv_accumulator) + index, p.head_dim, thread_in_group % 2);
}

// The backward kernels' end for a thread's two key rows (rows g and g + 8 of its row group;
// the 4 lanes of a row group hold a row): adds dk_scale * dK (the softmax scale, times
// output_scale where the kernel left it out of dS) and output_scale * dV (unscaled values
// dk(r, n, j), dv(r, n, j) of row r at column 8 n + 2 (lane % 4) + j) to the fp32
// accumulators, or stores them there when this launch makes the rows' first contribution
// (`store`: PatternLaunch::store_kv), or writes them to dk, dv directly when it is the rows'
// only contribution (direct_kv). Rows that are not `valid` are left alone.
template <class Element, int kHeadDim, class DkValue, class DvValue>
__device__ __forceinline__ void finish_key_rows(const PatternLaunch& p, std::int64_t b, int kv_head,
                                                const std::int64_t (&n_row)[2], const bool (&valid)[2], bool store,
                                                float dk_scale, DkValue&& dk_value, DvValue&& dv_value) {
  using M = Mma<Element>;
  constexpr int kColumnPairs = kHeadDim / 8;
  if (p.direct_kv) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (!valid[r]) continue;
      Element* dk = p.dk.row<Element>(b, n_row[r], kv_head);
      Element* dv = p.dv.row<Element>(b, n_row[r], kv_head);
      for_lane_column_pairs<kHeadDim>(p.head_dim, [&](int n, int d) {
        *reinterpret_cast<std::uint32_t*>(dk + d) = M::pack(dk_scale * dk_value(r, n, 0), dk_scale * dk_value(r, n, 1));
        *reinterpret_cast<std::uint32_t*>(dv + d) =
            M::pack(p.output_scale * dv_value(r, n, 0), p.output_scale * dv_value(r, n, 1));
      });
    }
    return;
  }
  float* dk_acc[2];
  float* dv_acc[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t index = key_accumulator_index(p, b, kv_head, n_row[r]);
    dk_acc[r] = static_cast<float*>(p.dk_accumulator) + index;
    dv_acc[r] = static_cast<float*>(p.dv_accumulator) + index;
  }
  // Every load before any store (one memory round trip): dk_acc and dv_acc may alias as
  // far as the compiler knows, so loads and stores interleaved by column were sixteen
  // dependent round trips at the end of every CTA.
  float2 k2[2][kColumnPairs], v2[2][kColumnPairs];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int n = 0; n < kColumnPairs; ++n) {  // (every pair assigned: zeros where not read)
      const int d = 8 * n + 2 * (threadIdx.x % 4);
      const bool read = !store && valid[r] && d < p.head_dim;
      k2[r][n] = read ? *reinterpret_cast<const float2*>(dk_acc[r] + d) : make_float2(0.0f, 0.0f);
      v2[r][n] = read ? *reinterpret_cast<const float2*>(dv_acc[r] + d) : make_float2(0.0f, 0.0f);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!valid[r]) continue;
    for_lane_column_pairs<kHeadDim>(p.head_dim, [&](int n, int d) {
      *reinterpret_cast<float2*>(dk_acc[r] + d) =
          make_float2(k2[r][n].x + dk_scale * dk_value(r, n, 0), k2[r][n].y + dk_scale * dk_value(r, n, 1));
      *reinterpret_cast<float2*>(dv_acc[r] + d) =
          make_float2(v2[r][n].x + p.output_scale * dv_value(r, n, 0), v2[r][n].y + p.output_scale * dv_value(r, n, 1));
    });
  }
}

}  // namespace longnet::kernels::cuda
