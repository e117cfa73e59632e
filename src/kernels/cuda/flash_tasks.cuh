// Tensor-core kernels of sequence-parallel dilated attention (kernels/dilated_attention_tasks.hpp):
// one rank's query ranges against key pieces that lie in its local rows or in the rows it
// received from other ranks. They are built from the tile primitives of the backward
// kernels (flash_backward.cuh: swizzled cp.async tiles, 16 x 64 warp products with
// mma.sync) and the forward's merge epilogue (flash_epilogue.cuh); only the walk differs:
// a CTA visits the pieces a work list names, each with its own base (local or gathered)
// and row stride, instead of the tiles of one virtual sequence.
//
// flash_tasks_forward_kernel: a CTA of 4 warps owns 64 queries of one query range and
//   head; it walks the key tiles of the range's pieces with one online softmax over all of
//   them (in base 2), double-buffered, and merges its rows by log-sum-exp into the fp32
//   accumulators (one launch per pattern, in pattern order, so no two CTAs of a launch
//   touch the same row: the planner's guarantee).
// flash_tasks_backward_kernel: a CTA owns 64 keys of one piece and walks the query tiles
//   of the piece's range for every head of the task (DESIGN 2.3 from the final lse and
//   delta), keeping dK and dV in registers; dQ, and at the end dK and dV, are added to the
//   fp32 outputs atomically, since a key row can be a piece of several ranges and a query
//   row attends several pieces. (Sums in a varying order: not bitwise repeatable.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/flash_backward.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_params.cuh"

namespace longnet::kernels::cuda {

// A key piece with its task's repeat shift applied: rows first_row + row_step * j,
// j < count, of the local rows (the task's kv head) or of the gathered rows. Every field
// is an int64 so the host can upload the lists as i64 tensors.
struct TaskPieceRows {
  std::int64_t first_row, row_step, count, gathered, diagonal;
};

// A forward CTA: queries [q_begin, q_begin + 64) of a query range (tensor rows first_row
// + row_step * i, i < count) of `head`, attending pieces [piece_begin, piece_end).
struct TaskQueryTile {
  std::int64_t first_row, row_step, count, q_begin, piece_begin, piece_end, head, kv_head;
};

// A backward CTA: keys [k_begin, k_begin + 64) of `piece`, attended by the query range
// (q_first_row, q_row_step, q_count) of the heads head_base + i for the set bits i of
// head_mask.
struct TaskKeyTile {
  std::int64_t piece, k_begin, q_first_row, q_row_step, q_count, kv_head, head_base, head_mask;
};

inline constexpr int kTaskTile = 64;  // queries (forward) or keys (backward) per CTA, and tile width
inline constexpr int kTaskThreads = 128;

// base: sizes, scales, the local operands, lse and delta (B, H, L) fp32, the forward's
// out_accumulator (merge), and dq, dk, dv (fp32 outputs, any row strides).
struct TaskLaunch {
  PatternLaunch base;
  DeviceRows k_gathered, v_gathered, dk_gathered, dv_gathered;  // rows (B-major inside), head stride unused
  const TaskPieceRows* pieces = nullptr;
  const TaskQueryTile* query_tiles = nullptr;
  const TaskKeyTile* key_tiles = nullptr;
};

template <class Element>
__device__ __forceinline__ const Element* piece_rows(const TaskLaunch& t, const DeviceRows& local,
                                                     const DeviceRows& gathered, const TaskPieceRows& piece,
                                                     std::int64_t b, int kv_head, std::int64_t& stride) {
  if (piece.gathered) {
    stride = piece.row_step * gathered.seq_stride;
    return gathered.row<const Element>(b, piece.first_row, 0);
  }
  stride = piece.row_step * local.seq_stride;
  return local.row<const Element>(b, piece.first_row, kv_head);
}

template <class Element, int kHeadDim>
__global__ void __launch_bounds__(kTaskThreads) flash_tasks_forward_kernel(const __grid_constant__ TaskLaunch t) {
  constexpr int kBlock = kTaskTile;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Element* sQ = reinterpret_cast<Element*>(shared_raw);
  Element* sK = sQ + kBlock * kHeadDim;      // [2][64 * D]
  Element* sV = sK + 2 * kBlock * kHeadDim;  // [2][64 * D]
  const PatternLaunch& p = t.base;
  const TaskQueryTile w = t.query_tiles[blockIdx.x];
  const std::int64_t b = blockIdx.y;
  const int h = static_cast<int>(w.head), kv_head = static_cast<int>(w.kv_head);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4;
  const int t4 = lane % 4;
  const int warp_row = 16 * warp;
  const int chunks_used = p.head_dim / 8;
  const std::int64_t q_end = min(w.count, w.q_begin + kBlock);

  load_rows<Element, kHeadDim, kTaskThreads>(sQ, p.q.row<const Element>(b, w.first_row, h),
                                             w.row_step * p.q.seq_stride, w.q_begin, q_end, chunks_used);
  // The key tiles: pieces in order, each from key 0 in steps of 64 up to its end (a
  // diagonal piece ends after the CTA's last query: later keys are masked for every row).
  auto piece_end_key = [&](const TaskPieceRows& piece) { return piece.diagonal ? min(piece.count, q_end) : piece.count; };
  std::int64_t piece_index = w.piece_begin;
  TaskPieceRows piece{};
  std::int64_t key0 = 0;
  // Moves to the first piece at or after piece_index with keys; false when none is left.
  auto seek_piece = [&]() {
    for (; piece_index < w.piece_end; ++piece_index) {
      piece = t.pieces[piece_index];
      if (piece_end_key(piece) > 0) return true;
    }
    return false;
  };
  auto load_tile = [&](const TaskPieceRows& rows, std::int64_t first_key, int stage) {
    std::int64_t k_stride = 0, v_stride = 0;
    const Element* k_base = piece_rows<Element>(t, p.k, t.k_gathered, rows, b, kv_head, k_stride);
    const Element* v_base = piece_rows<Element>(t, p.v, t.v_gathered, rows, b, kv_head, v_stride);
    const std::int64_t end = piece_end_key(rows);
    load_rows<Element, kHeadDim, kTaskThreads>(sK + stage * kBlock * kHeadDim, k_base, k_stride, first_key, end,
                                               chunks_used);
    load_rows<Element, kHeadDim, kTaskThreads>(sV + stage * kBlock * kHeadDim, v_base, v_stride, first_key, end,
                                               chunks_used);
  };
  bool have_tile = seek_piece();
  if (have_tile) load_tile(piece, 0, 0);
  copy_async_commit();

  float o[kHeadDim / 8][4];
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // scores in base 2

  for (int stage = 0; have_tile; stage ^= 1) {
    // The tile after this one, copied while this one is used.
    const TaskPieceRows current = piece;
    const std::int64_t current_key0 = key0;
    key0 += kBlock;
    bool prefetch = true;
    if (key0 >= piece_end_key(piece)) {
      ++piece_index;
      key0 = 0;
      prefetch = seek_piece();
    }
    if (prefetch) {
      load_tile(piece, key0, stage ^ 1);
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();
    const Element* k_tile = sK + stage * kBlock * kHeadDim;
    const Element* v_tile = sV + stage * kBlock * kHeadDim;

    float s[8][4];
    warp_rows_times_tile<Element, kHeadDim>(s, sQ, k_tile, warp_row, lane);
    // Keys past the piece's end, and on a diagonal piece keys after their query
    // (key0 + kj > q_begin + qi), are dropped.
    const int key_limit = static_cast<int>(min(piece_end_key(current) - current_key0, static_cast<std::int64_t>(kBlock)));
    const bool diagonal = current.diagonal != 0;
    const std::int64_t shift = w.q_begin - current_key0;
    const int diagonal_high = static_cast<int>(max(min(shift, std::int64_t{2 * kBlock}), std::int64_t{-2 * kBlock}));
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = warp_row + g + 8 * (e / 2);
        const int kj = 8 * n + 2 * t4 + (e & 1);
        float x = s[n][e] * p.scale_log2;
        if (kj >= key_limit || (diagonal && kj - qi > diagonal_high)) x = -INFINITY;
        s[n][e] = x;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], x);
      }
    }
    float reference[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float new_max = fmaxf(row_max[r], warp_group_max(tile_max[r]));
      reference[r] = new_max == -INFINITY ? 0.0f : new_max;
      const float correction = row_max[r] == -INFINITY ? 0.0f : fast_exp2(row_max[r] - reference[r]);
      row_max[r] = new_max;
      row_sum[r] *= correction;
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[n][2 * r] *= correction;
        o[n][2 * r + 1] *= correction;
      }
    }
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = fast_exp2(s[n][e] - reference[e / 2]);
        row_sum[e / 2] += s[n][e];
      }
    }
    warp_scores_times_tile<Element, kHeadDim>(o, s, v_tile, lane);
    __syncthreads();  // the next iteration's copies overwrite the stage just read
    have_tile = prefetch;
  }
  copy_async_wait<0>();  // a range without keys still copied Q

  {
    const std::int64_t i = w.q_begin + warp_row + g;
    const std::int64_t rows[2] = {w.first_row + i * w.row_step, w.first_row + (i + 8) * w.row_step};
    const bool valid[2] = {i < q_end, i + 8 < q_end};
    finish_query_rows<Element, kHeadDim>(p, b, h, rows, valid, row_sum, row_max,
                                         [&](int r, int n, int j) { return o[n][2 * r + j]; });
  }
}

// dst[0..head_dim) += (x, y) pairs of a row group's 4 lanes (fp32 atomics).
template <int kHeadDim, class Value>
__device__ __forceinline__ void add_row_atomically(float* dst, int head_dim, float factor, Value&& value) {
  const int t4 = threadIdx.x % 4;
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    const int d = 8 * n + 2 * t4;
    if (d < head_dim) atomicAdd(reinterpret_cast<float2*>(dst + d), make_float2(factor * value(n, 0), factor * value(n, 1)));
  }
}

template <class Element, int kHeadDim>
__global__ void __launch_bounds__(kTaskThreads) flash_tasks_backward_kernel(const __grid_constant__ TaskLaunch t) {
  using M = Mma<Element>;
  constexpr int kBlock = kTaskTile;
  constexpr int kLd = BackwardTile<kHeadDim>::kScoreLd;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Element* sQ_stages = reinterpret_cast<Element*>(shared_raw);  // [2][64 * D]
  Element* sdO_stages = sQ_stages + 2 * kBlock * kHeadDim;      // [2][64 * D]
  Element* sK = sdO_stages + 2 * kBlock * kHeadDim;
  Element* sV = sK + kBlock * kHeadDim;
  Element* sP = sV + kBlock * kHeadDim;  // [64][kLd]
  Element* sdS = sP + kBlock * kLd;
  float* sLse_stages = reinterpret_cast<float*>(sdS + kBlock * kLd);  // [2][64]
  float* sDelta_stages = sLse_stages + 2 * kBlock;                    // [2][64]

  const PatternLaunch& p = t.base;
  const TaskKeyTile w = t.key_tiles[blockIdx.x];
  const TaskPieceRows piece = t.pieces[w.piece];
  const std::int64_t b = blockIdx.y;
  const int kv_head = static_cast<int>(w.kv_head);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int warp_row = 16 * warp;
  const int chunks_used = p.head_dim / 8;
  const std::int64_t k_begin = w.k_begin, key_limit = piece.count;

  std::int64_t k_stride = 0, v_stride = 0;
  load_rows<Element, kHeadDim, kTaskThreads>(sK, piece_rows<Element>(t, p.k, t.k_gathered, piece, b, kv_head, k_stride),
                                             k_stride, k_begin, key_limit, chunks_used);
  load_rows<Element, kHeadDim, kTaskThreads>(sV, piece_rows<Element>(t, p.v, t.v_gathered, piece, b, kv_head, v_stride),
                                             v_stride, k_begin, key_limit, chunks_used);
  copy_async_commit();

  float dk[kHeadDim / 8][4], dv[kHeadDim / 8][4];
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
    dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
  }
  // A diagonal piece is the range's own rows: query i attends key j iff j <= i, so the
  // query tiles start at this CTA's first key.
  const bool diagonal = piece.diagonal != 0;
  const std::int64_t q_start = diagonal ? k_begin : 0;
  const std::int64_t L = p.seq_len;

  for (std::uint64_t mask = static_cast<std::uint64_t>(w.head_mask); mask != 0; mask &= mask - 1) {
    const int h = static_cast<int>(w.head_base) + __ffsll(static_cast<long long>(mask)) - 1;
    const std::int64_t step = w.q_row_step;
    const Element* q_base = p.q.row<const Element>(b, w.q_first_row, h);
    const Element* do_base = p.dout.row<const Element>(b, w.q_first_row, h);
    const float* lse_row = static_cast<const float*>(p.lse) + (b * p.heads + h) * L + w.q_first_row;
    const float* delta_row = static_cast<const float*>(p.delta) + (b * p.heads + h) * L + w.q_first_row;
    auto load_query_tile = [&](std::int64_t q_begin, int stage) {
      load_rows<Element, kHeadDim, kTaskThreads>(sQ_stages + stage * kBlock * kHeadDim, q_base,
                                                 step * p.q.seq_stride, q_begin, w.q_count, chunks_used);
      load_rows<Element, kHeadDim, kTaskThreads>(sdO_stages + stage * kBlock * kHeadDim, do_base,
                                                 step * p.dout.seq_stride, q_begin, w.q_count, chunks_used);
      if (tid < kBlock) {
        const std::int64_t i = q_begin + tid;
        // Rows past the range (and rows without keys) get lse = +inf, so P = 0 there.
        const float lse = i < w.q_count ? lse_row[i * step] : INFINITY;
        sLse_stages[stage * kBlock + tid] = lse == -INFINITY ? INFINITY : lse * kLog2e;
        sDelta_stages[stage * kBlock + tid] = i < w.q_count ? delta_row[i * step] : 0.0f;
      }
    };
    __syncthreads();  // the previous head's query tiles are no longer read
    load_query_tile(q_start, 0);
    copy_async_commit();
    int stage = 0;
    for (std::int64_t q_begin = q_start; q_begin < w.q_count; q_begin += kBlock, stage ^= 1) {
      __syncthreads();  // the other stage's tiles (previous step) are no longer read
      const bool prefetch = q_begin + kBlock < w.q_count;
      if (prefetch) {
        load_query_tile(q_begin + kBlock, stage ^ 1);
        copy_async_commit();
        copy_async_wait<1>();
      } else {
        copy_async_wait<0>();
      }
      __syncthreads();
      const Element* sQ = sQ_stages + stage * kBlock * kHeadDim;
      const Element* sdO = sdO_stages + stage * kBlock * kHeadDim;
      const float* sLse = sLse_stages + stage * kBlock;
      const float* sDelta = sDelta_stages + stage * kBlock;

      float s[8][4];
      warp_rows_times_tile<Element, kHeadDim>(s, sQ, sK, warp_row, lane);
      const bool on_diagonal = diagonal && q_begin == k_begin;  // later query tiles see every key
      const bool tail = k_begin + kBlock > key_limit;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = warp_row + g + 8 * (e / 2);
          const int kj = 8 * n + 2 * t4 + (e & 1);
          float value = fast_exp2(s[n][e] * p.scale_log2 - sLse[qi]);
          if ((on_diagonal && kj > qi) || (tail && k_begin + kj >= key_limit)) value = 0.0f;
          s[n][e] = value;
        }
      }
      float dp[8][4];
      warp_rows_times_tile<Element, kHeadDim>(dp, sdO, sV, warp_row, lane);
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = warp_row + g + 8 * (e / 2);
          dp[n][e] = s[n][e] * (p.output_scale * dp[n][e] - sDelta[qi]);
        }
      }
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int qi = warp_row + g + 8 * r;
          const int kj = 8 * n + 2 * t4;
          *reinterpret_cast<std::uint32_t*>(sP + qi * kLd + kj) = M::pack(s[n][2 * r], s[n][2 * r + 1]);
          *reinterpret_cast<std::uint32_t*>(sdS + qi * kLd + kj) = M::pack(dp[n][2 * r], dp[n][2 * r + 1]);
        }
      }
      // dQ += scale dS K for this warp's queries.
      float dq[kHeadDim / 8][4];
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
      warp_scores_times_tile<Element, kHeadDim>(dq, dp, sK, lane);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const std::int64_t i = q_begin + warp_row + g + 8 * r;
        if (i >= w.q_count) continue;
        add_row_atomically<kHeadDim>(p.dq.row<float>(b, w.q_first_row + i * step, h), p.head_dim, p.scale,
                                     [&](int n, int j) { return dq[n][2 * r + j]; });
      }
      __syncthreads();
      warp_transposed_times_tile<Element, kHeadDim>(dv, sP, sdO, warp_row, lane);
      warp_transposed_times_tile<Element, kHeadDim>(dk, sdS, sQ, warp_row, lane);
    }
  }
  copy_async_wait<0>();  // no head or no query tile: K and V were still copied

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t j = k_begin + warp_row + g + 8 * r;
    if (j >= key_limit) continue;
    const std::int64_t row = piece.first_row + j * piece.row_step;
    float* dk_row = piece.gathered ? t.dk_gathered.row<float>(b, row, 0) : p.dk.row<float>(b, row, kv_head);
    float* dv_row = piece.gathered ? t.dv_gathered.row<float>(b, row, 0) : p.dv.row<float>(b, row, kv_head);
    add_row_atomically<kHeadDim>(dk_row, p.head_dim, p.scale, [&](int n, int j2) { return dk[n][2 * r + j2]; });
    add_row_atomically<kHeadDim>(dv_row, p.head_dim, p.output_scale, [&](int n, int j2) { return dv[n][2 * r + j2]; });
  }
}

template <int kHeadDim>
constexpr int task_forward_shared_bytes() {
  return 5 * kTaskTile * kHeadDim * 2;  // Q + 2 stages of K and V
}

}  // namespace longnet::kernels::cuda
