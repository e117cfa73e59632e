// Tensor-core backward of one dilated pattern (FlashAttention-2 style, mma.sync).
//
// flash_backward_kv_kernel: a CTA of 4 warps owns 64 keys of one virtual sequence for
// one kv head and walks the query tiles of every query head of its group that uses the
// same offset. Per query tile of 64 (DESIGN 2.3, from the final lse and delta =
// rowsum(dO * O)):
//     S = Q K^T, P = exp(scale S - lse)              (warps split queries)
//     dP = alpha dO V^T, dS = P (dP - delta)         (warps split queries)
//     dV += alpha P^T dO, dK += dS^T Q               (warps split keys; P, dS via smem)
//     dQ += dS K                                     (fp32 atomics; skipped when deterministic)
// dK, dV stay in registers and are added to fp32 accumulators the CTA owns for this
// pattern (no atomics). flash_backward_dq_kernel computes dQ without atomics: a CTA owns
// 64 queries and walks the key tiles (deterministic mode).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/backward_order.cuh"
#include "kernels/cuda/block_sparse_tiles.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace longnet::kernels::cuda {

template <int kHeadDim>
struct BackwardTile {
  static constexpr int kBlock = 64;  // keys per CTA and queries per step
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kScoreLd = 72;  // row length of the P and dS tiles (64 padded by 8: no bank conflicts)
  // Two stages of Q and dO, K and V tiles (64 x D) + P and dS (64 x kScoreLd) + two stages
  // of lse and delta (64 floats each).
  static constexpr int kSharedBytes = 6 * kBlock * kHeadDim * 2 + 2 * kBlock * kScoreLd * 2 + 4 * kBlock * 4;
};
static_assert(BackwardTile<64>::kBlock == kSparseTileRows && BackwardTile<128>::kBlock == kSparseTileRows,
              "the block-sparse walkers cut tiles of the backward's query and key tiles");

// Loads rows [first, first + 64) of a virtual sequence into a swizzled shared tile.
template <class Element, int kHeadDim, int kThreads>
__device__ __forceinline__ void load_rows(Element* tile, const Element* base, std::int64_t stride, std::int64_t first,
                                          std::int64_t length, int chunks_used) {
  constexpr int kChunks = kHeadDim / 8;
  for (int c = threadIdx.x; c < 64 * kChunks; c += kThreads) {
    const int row = c / kChunks, chunk = c % kChunks;
    const std::int64_t j = first + row;
    const bool valid = j < length && chunk < chunks_used;
    copy_async_16(tile + swizzled_offset<kHeadDim>(row, chunk), base + (valid ? j * stride + chunk * 8 : 0), valid);
  }
}

// 16 x 64 score block of this warp: rows warp_row.. of `a` (row-major tile) times the 64
// rows of `b` (row-major tile) transposed: C = A B^T, k over the head dimension.
template <class Element, int kHeadDim>
__device__ __forceinline__ void warp_rows_times_tile(float (&c)[8][4], const Element* a, const Element* b, int warp_row,
                                                     int lane) {
  using M = Mma<Element>;
#pragma unroll
  for (int n = 0; n < 8; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
    std::uint32_t af[4];
    load_matrix_x4(af, a + swizzled_offset<kHeadDim>(warp_row + (lane % 8) + 8 * ((lane / 8) % 2), 2 * ks + lane / 16));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      std::uint32_t bf[4];
      load_matrix_x4(bf,
                     b + swizzled_offset<kHeadDim>(16 * np + (lane % 8) + 8 * (lane / 16), 2 * ks + (lane / 8) % 2));
      M::run(c[2 * np], af, bf[0], bf[1]);
      M::run(c[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 rows x D) += A (16 x 64, from registers as C fragments) * tile (64 x D, row-major).
template <class Element, int kHeadDim>
__device__ __forceinline__ void warp_scores_times_tile(float (&acc)[kHeadDim / 8][4], const float (&s)[8][4],
                                                       const Element* tile, int lane) {
  using M = Mma<Element>;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const std::uint32_t a[4] = {M::pack(s[2 * kk][0], s[2 * kk][1]), M::pack(s[2 * kk][2], s[2 * kk][3]),
                                M::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                M::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < kHeadDim / 16; ++dp) {
      std::uint32_t bf[4];
      load_matrix_x4_transposed(
          bf, tile + swizzled_offset<kHeadDim>(16 * kk + (lane % 8) + 8 * ((lane / 8) % 2), 2 * dp + lane / 16));
      M::run(acc[2 * dp], a, bf[0], bf[1]);
      M::run(acc[2 * dp + 1], a, bf[2], bf[3]);
    }
  }
}

// acc (16 keys x D) += X^T (16 keys x 64 queries) * tile (64 queries x D), X (64 x 64,
// queries x keys, plain row-major with 64-element rows padded by 8) in shared memory.
template <class Element, int kHeadDim>
__device__ __forceinline__ void warp_transposed_times_tile(float (&acc)[kHeadDim / 8][4], const Element* x,
                                                           const Element* tile, int key_row, int lane) {
  using M = Mma<Element>;
  constexpr int kLd = BackwardTile<kHeadDim>::kScoreLd;
#pragma unroll
  for (int qs = 0; qs < 4; ++qs) {  // 16 queries per k-step
    std::uint32_t af[4];
    const int query = 16 * qs + (lane % 8) + 8 * (lane / 16);
    const int key = key_row + 8 * ((lane / 8) % 2);
    load_matrix_x4_transposed(af, x + query * kLd + key);
#pragma unroll
    for (int dp = 0; dp < kHeadDim / 16; ++dp) {
      std::uint32_t bf[4];
      load_matrix_x4_transposed(
          bf, tile + swizzled_offset<kHeadDim>(16 * qs + (lane % 8) + 8 * ((lane / 8) % 2), 2 * dp + lane / 16));
      M::run(acc[2 * dp], af, bf[0], bf[1]);
      M::run(acc[2 * dp + 1], af, bf[2], bf[3]);
    }
  }
}

template <class Element, int kHeadDim, bool kSparse = false>
__global__ void __launch_bounds__(BackwardTile<kHeadDim>::kThreads) flash_backward_kv_kernel(const PatternLaunch p) {
  using Tile = BackwardTile<kHeadDim>;
  using M = Mma<Element>;
  constexpr int kBlock = Tile::kBlock;
  constexpr int kLd = Tile::kScoreLd;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Element* sQ_stages = reinterpret_cast<Element*>(shared_raw);  // [2][64 * D]
  Element* sdO_stages = sQ_stages + 2 * kBlock * kHeadDim;      // [2][64 * D]
  Element* sK = sdO_stages + 2 * kBlock * kHeadDim;
  Element* sV = sK + kBlock * kHeadDim;
  Element* sP = sV + kBlock * kHeadDim;  // [64][kLd]
  Element* sdS = sP + kBlock * kLd;
  float* sLse_stages = reinterpret_cast<float*>(sdS + kBlock * kLd);  // [2][64]
  float* sDelta_stages = sLse_stages + 2 * kBlock;                    // [2][64]

  // Keys k_begin + j of the CTA; dilated: of virtual sequence (segment, offset), sparse:
  // rows of one key block of the whole sequence (key_block, up to key_limit).
  std::int64_t segment = 0, k_begin = 0, key_block = 0, key_limit = 0;
  int kv_head = static_cast<int>(blockIdx.y);
  std::int64_t b = blockIdx.z;
  if constexpr (kSparse) {
    const SparseRows rows = sparse_rows(p, blockIdx.x, p.sparse.block_k, kBlock);
    key_block = rows.block;
    k_begin = rows.begin;
    key_limit = rows.end;
  } else {
    const BackwardCta cta = dilated_backward_cta(p, kBlock);
    segment = cta.segment;
    k_begin = cta.k_begin;
    kv_head = cta.kv_head;
    b = cta.batch;
  }
  const int group = p.heads / p.kv_heads;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int warp_row = 16 * warp;
  const int chunks_used = p.head_dim / 8;

  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    // Query and key rows i of this head are tensor rows first_row + i * step; the queries
    // of a dilated launch are the L rows of the virtual sequence, like its keys.
    std::int64_t first_row = 0, step = 1, L = 0;
    SparseQueryTiles walker{};
    if constexpr (kSparse) {
      walker = sparse_query_tiles(p, h, key_block, k_begin, key_limit - 1);
    } else {
      const std::int64_t offset =
          pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
      if (offset < 0) continue;
      const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, segment);
      L = vs.length;
      if (k_begin >= L) continue;
      first_row = vs.first_row;
      step = vs.row_step;
      key_limit = L;
    }
    __syncthreads();  // the previous head's tiles are no longer read
    load_rows<Element, kHeadDim, Tile::kThreads>(sK, p.k.row<const Element>(b, first_row, kv_head),
                                                 step * p.k.seq_stride, k_begin, key_limit, chunks_used);
    load_rows<Element, kHeadDim, Tile::kThreads>(sV, p.v.row<const Element>(b, first_row, kv_head),
                                                 step * p.v.seq_stride, k_begin, key_limit, chunks_used);
    copy_async_commit();

    float dk[kHeadDim / 8][4], dv[kHeadDim / 8][4];
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
      dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
    }
    const Element* q_base = p.q.row<const Element>(b, first_row, h);
    const Element* do_base = p.dout.row<const Element>(b, first_row, h);
    const float* lse_row = static_cast<const float*>(p.lse) + (b * p.heads + h) * p.seq_len + first_row;
    const float* delta_row = static_cast<const float*>(p.delta) + (b * p.heads + h) * p.seq_len + first_row;

    // Query tiles [q_begin, q_begin + 64) of which those before query_limit exist: q_first,
    // q_first + 64, ... < L, or the walker's; tile t + 1 is copied while t is used.
    auto load_query_tile = [&](std::int64_t q_begin, std::int64_t query_limit, int stage) {
      load_rows<Element, kHeadDim, Tile::kThreads>(sQ_stages + stage * kBlock * kHeadDim, q_base, step * p.q.seq_stride,
                                                   q_begin, query_limit, chunks_used);
      load_rows<Element, kHeadDim, Tile::kThreads>(sdO_stages + stage * kBlock * kHeadDim, do_base,
                                                   step * p.dout.seq_stride, q_begin, query_limit, chunks_used);
      if (tid < kBlock) {
        const std::int64_t i = q_begin + tid;
        // Copied with the tiles, as in flash_backward_sm90.cuh (a plain load stalls the
        // CTA at the next barrier); rows past the end: lse = delta = 0 beside zero Q and
        // dO rows, so P = 1 there but dO = 0 and dS = 0, and their dQ is not written.
        const bool valid = i < query_limit;
        copy_async_4(sLse_stages + stage * kBlock + tid, lse_row + (valid ? i * step : 0), valid);
        copy_async_4(sDelta_stages + stage * kBlock + tid, delta_row + (valid ? i * step : 0), valid);
      }
    };
    const std::int64_t q_first = p.causal ? k_begin : 0;
    SparseTile current{}, following{};
    bool have_tile = true;
    if constexpr (kSparse) {
      have_tile = walker.next(p, current);
      if (have_tile) load_query_tile(current.start, current.start + current.count, 0);
    } else {
      current.start = q_first;
      load_query_tile(q_first, L, 0);
    }
    copy_async_commit();
    int stage = 0;
    for (; kSparse ? have_tile : current.start < L; stage ^= 1) {
      const std::int64_t q_begin = current.start;
      const std::int64_t query_limit = kSparse ? current.start + current.count : L;
      __syncthreads();  // the other stage's tiles (previous step) are no longer read
      bool prefetch = false;
      if constexpr (kSparse) {
        prefetch = walker.next(p, following);
        if (prefetch) load_query_tile(following.start, following.start + following.count, stage ^ 1);
      } else {
        prefetch = q_begin + kBlock < L;
        following.start = q_begin + kBlock;
        if (prefetch) load_query_tile(q_begin + kBlock, L, stage ^ 1);
      }
      if (prefetch) {
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

      // S and P for this warp's 16 queries x 64 keys.
      float s[8][4];
      warp_rows_times_tile<Element, kHeadDim>(s, sQ, sK, warp_row, lane);
      // Dilated: the causal diagonal tile and the sequence's tail; sparse: the band and the
      // key block's tail (kept iff diagonals.low <= kj - qi <= diagonals.high).
      bool diagonal = false, masked = false;
      TileDiagonals diagonals{};
      if constexpr (kSparse) {
        const Band band = tile_band(p, current.partial);
        masked = !band_covers(band, q_begin, q_begin + kBlock - 1, k_begin, k_begin + kBlock - 1);
        diagonals = tile_diagonals(band, q_begin, k_begin, 2 * kBlock);
      } else {
        diagonal = p.causal && q_begin == k_begin;
      }
      const bool tail = k_begin + kBlock > key_limit;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = warp_row + g + 8 * (e / 2);
          const int kj = 8 * n + 2 * t + (e & 1);
          float value = fast_exp2(s[n][e] * p.scale_log2 - lse_in_log2(sLse[qi]));
          if constexpr (kSparse) {
            if ((masked && (kj - qi < diagonals.low || kj - qi > diagonals.high)) ||
                (tail && k_begin + kj >= key_limit)) {
              value = 0.0f;
            }
          } else {
            if ((diagonal && kj > qi) || (tail && k_begin + kj >= L)) value = 0.0f;
          }
          s[n][e] = value;
        }
      }
      // dP = alpha dO V^T, dS = P (dP - delta).
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
      // P and dS to shared memory (queries x keys) for the key-side products.
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int qi = warp_row + g + 8 * r;
          const int kj = 8 * n + 2 * t;
          *reinterpret_cast<std::uint32_t*>(sP + qi * kLd + kj) = M::pack(s[n][2 * r], s[n][2 * r + 1]);
          *reinterpret_cast<std::uint32_t*>(sdS + qi * kLd + kj) = M::pack(dp[n][2 * r], dp[n][2 * r + 1]);
        }
      }
      // dQ += scale dS K (queries stay split by warp), added atomically.
      if (!p.deterministic) {
        float dq[kHeadDim / 8][4];
#pragma unroll
        for (int n = 0; n < kHeadDim / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
        warp_scores_times_tile<Element, kHeadDim>(dq, dp, sK, lane);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const std::int64_t i = q_begin + warp_row + g + 8 * r;
          if (i >= query_limit) continue;
          float* acc = static_cast<float*>(p.dq_accumulator) +
                       ((b * p.seq_len + first_row + i * step) * p.heads + h) * p.head_dim;
#pragma unroll
          for (int n = 0; n < kHeadDim / 8; ++n) {
            const int d = 8 * n + 2 * t;
            if (d < p.head_dim) {
              atomicAdd(reinterpret_cast<float2*>(acc + d),
                        make_float2(p.scale * dq[n][2 * r], p.scale * dq[n][2 * r + 1]));
            }
          }
        }
      }
      __syncthreads();
      // dV += P^T dO and dK += dS^T Q for this warp's 16 keys.
      warp_transposed_times_tile<Element, kHeadDim>(dv, sP, sdO, warp_row, lane);
      warp_transposed_times_tile<Element, kHeadDim>(dk, sdS, sQ, warp_row, lane);
      current = following;
      have_tile = prefetch;
    }
    if constexpr (kSparse) copy_async_wait<0>();  // a key block no query lists still copied K, V

      // This head's dK, dV for the rows this CTA owns (zero where no query reached them).
    {
      const std::int64_t j = k_begin + warp_row + g;
      const std::int64_t rows[2] = {first_row + j * step, first_row + (j + 8) * step};
      const bool valid[2] = {j < key_limit, j + 8 < key_limit};
      finish_key_rows<Element, kHeadDim>(
          p, b, kv_head, rows, valid, p.store_kv, p.scale, [&](int r, int n, int j2) { return dk[n][2 * r + j2]; },
          [&](int r, int n, int j2) { return dv[n][2 * r + j2]; });
    }
  }
}

// Deterministic dQ: a CTA owns 64 queries of one head and walks the key tiles (of its
// virtual sequence, or the listed ones of its query block).
template <class Element, int kHeadDim, bool kSparse = false>
__global__ void __launch_bounds__(BackwardTile<kHeadDim>::kThreads) flash_backward_dq_kernel(const PatternLaunch p) {
  using Tile = BackwardTile<kHeadDim>;
  constexpr int kBlock = Tile::kBlock;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Element* sQ = reinterpret_cast<Element*>(shared_raw);
  Element* sdO = sQ + kBlock * kHeadDim;
  Element* sK = sdO + kBlock * kHeadDim;
  Element* sV = sK + kBlock * kHeadDim;
  float* sLse = reinterpret_cast<float*>(sV + kBlock * kHeadDim);
  float* sDelta = sLse + kBlock;

  // Queries q_begin + i < query_limit, tensor rows first_row + i * step; keys of a dilated
  // launch: the L rows of the virtual sequence. (The dilated instantiation keeps the
  // statement order it had before kSparse existed: it compiles to the same code.)
  std::int64_t segment = 0, q_begin = 0;
  if constexpr (!kSparse) {
    segment = blockIdx.x / p.tiles_per_segment;
    q_begin = (blockIdx.x % p.tiles_per_segment) * kBlock;
  }
  const int h = p.head_begin + blockIdx.y;
  const std::int64_t b = blockIdx.z;
  std::int64_t query_limit = 0, first_row = 0, step = 1, L = 0;
  SparseKeyTiles walker{};
  if constexpr (kSparse) {
    const SparseRows rows = sparse_rows(p, blockIdx.x, p.sparse.block_q, kBlock);
    q_begin = rows.begin;
    query_limit = rows.end;
    walker = sparse_key_tiles(p, h, rows.block, rows.begin, rows.end - 1);
  } else {
    const std::int64_t offset =
        pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
    if (offset < 0) return;
    const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, segment);
    L = vs.length;
    if (q_begin >= L) return;
    query_limit = L;
    first_row = vs.first_row;
    step = vs.row_step;
  }
  const int kv_head = h / (p.heads / p.kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int warp_row = 16 * warp;
  const int chunks_used = p.head_dim / 8;

  load_rows<Element, kHeadDim, Tile::kThreads>(sQ, p.q.row<const Element>(b, first_row, h), step * p.q.seq_stride,
                                               q_begin, query_limit, chunks_used);
  load_rows<Element, kHeadDim, Tile::kThreads>(sdO, p.dout.row<const Element>(b, first_row, h),
                                               step * p.dout.seq_stride, q_begin, query_limit, chunks_used);
  if (tid < kBlock) {
    const std::int64_t i = q_begin + tid;
    const float* lse_row = static_cast<const float*>(p.lse) + (b * p.heads + h) * p.seq_len + first_row;
    const float* delta_row = static_cast<const float*>(p.delta) + (b * p.heads + h) * p.seq_len + first_row;
    // Rows past the end (and rows without keys) get lse = +inf, so P = 0 there.
    if constexpr (kSparse) {
      const float lse = i < query_limit ? lse_row[i * step] : INFINITY;
      sLse[tid] = lse == -INFINITY ? INFINITY : lse * kLog2e;
    } else {
      sLse[tid] = i < L ? lse_row[i * step] * kLog2e : INFINITY;
    }
    sDelta[tid] = i < query_limit ? delta_row[i * step] : 0.0f;
  }
  float dq[kHeadDim / 8][4];
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
  const std::int64_t key_end = p.causal ? min(L, q_begin + kBlock) : L;
  // Key tiles: k_begin = 0, 64, ... < key_end, or the walker's.
  SparseTile tile{0, 0, false};
  bool have_tile = false;
  if constexpr (kSparse) have_tile = walker.next(p, tile);
  for (std::int64_t k_begin = 0; kSparse ? have_tile : k_begin < key_end; k_begin += kBlock) {
    if constexpr (kSparse) k_begin = tile.start;
    const std::int64_t key_limit = kSparse ? tile.start + tile.count : L;
    __syncthreads();
    load_rows<Element, kHeadDim, Tile::kThreads>(sK, p.k.row<const Element>(b, first_row, kv_head),
                                                 step * p.k.seq_stride, k_begin, key_limit, chunks_used);
    load_rows<Element, kHeadDim, Tile::kThreads>(sV, p.v.row<const Element>(b, first_row, kv_head),
                                                 step * p.v.seq_stride, k_begin, key_limit, chunks_used);
    copy_async_commit();
    copy_async_wait<0>();
    __syncthreads();
    float s[8][4], dp[8][4];
    warp_rows_times_tile<Element, kHeadDim>(s, sQ, sK, warp_row, lane);
    warp_rows_times_tile<Element, kHeadDim>(dp, sdO, sV, warp_row, lane);
    // Dilated: the causal diagonal tile; sparse: a tile the band cuts (kept iff
    // diagonal_low <= kj - qi <= diagonal_high). Both: the keys' tail.
    bool masked;
    int diagonal_low = 0, diagonal_high = 0;
    if constexpr (kSparse) {
      const Band band = tile_band(p, tile.partial);
      masked = !band_covers(band, q_begin, q_begin + kBlock - 1, k_begin, k_begin + kBlock - 1);
      const TileDiagonals diagonals = tile_diagonals(band, q_begin, k_begin, 2 * kBlock);
      diagonal_low = diagonals.low;
      diagonal_high = diagonals.high;
    } else {
      masked = p.causal && q_begin == k_begin;
    }
    const bool tail = k_begin + kBlock > key_limit;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = warp_row + g + 8 * (e / 2);
        const int kj = 8 * n + 2 * t + (e & 1);
        float weight = fast_exp2(s[n][e] * p.scale_log2 - sLse[qi]);
        if (tile_pair_dropped<kSparse>(masked, diagonal_low, diagonal_high, tail, k_begin, key_limit, qi, kj)) {
          weight = 0.0f;
        }
        dp[n][e] = weight * (p.output_scale * dp[n][e] - sDelta[qi]);
      }
    }
    warp_scores_times_tile<Element, kHeadDim>(dq, dp, sK, lane);
    if constexpr (kSparse) have_tile = walker.next(p, tile);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t i = q_begin + warp_row + g + 8 * r;
    if (i >= query_limit) continue;
    float* acc =
        static_cast<float*>(p.dq_accumulator) + ((b * p.seq_len + first_row + i * step) * p.heads + h) * p.head_dim;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      const int d = 8 * n + 2 * t;
      if (d < p.head_dim) {
        float2 value = *reinterpret_cast<float2*>(acc + d);
        value.x += p.scale * dq[n][2 * r];
        value.y += p.scale * dq[n][2 * r + 1];
        *reinterpret_cast<float2*>(acc + d) = value;
      }
    }
  }
}

// Deterministic dQ: CTAs of 64 queries that walk the key tiles (dilated: p.tiles_per_segment
// query tiles per segment; sparse: every query block in tiles of 64).
template <class Element, int kHeadDim, bool kSparse>
void launch_flash_backward_dq(const PatternLaunch& p, cudaStream_t stream) {
  using Tile = BackwardTile<kHeadDim>;
  auto dq_kernel = flash_backward_dq_kernel<Element, kHeadDim, kSparse>;
  constexpr int kDqShared = 4 * Tile::kBlock * kHeadDim * 2 + 2 * Tile::kBlock * 4;
  if (kDqShared > 48 * 1024) {
    cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kDqShared);
  }
  PatternLaunch queries = p;
  std::int64_t dq_ctas = 0;
  if constexpr (kSparse) {
    queries.sparse.tiles_per_block = (p.sparse.block_q + Tile::kBlock - 1) / Tile::kBlock;
    dq_ctas = p.sparse.query_blocks * queries.sparse.tiles_per_block;
  } else {
    dq_ctas = p.segments * p.tiles_per_segment;
  }
  const dim3 dq_grid(static_cast<unsigned>(dq_ctas), static_cast<unsigned>(p.head_count),
                     static_cast<unsigned>(p.batch));
  dq_kernel<<<dq_grid, Tile::kThreads, kDqShared, stream>>>(queries);
}

// Dilated: kv_tiles_per_segment key tiles per segment. Sparse: the CTAs cover every key
// block (dK, dV) and every query block (dQ) in tiles of 64.
template <class Element, int kHeadDim, bool kSparse>
void launch_flash_backward(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream) {
  using Tile = BackwardTile<kHeadDim>;
  auto kv_kernel = flash_backward_kv_kernel<Element, kHeadDim, kSparse>;
  if (Tile::kSharedBytes > 48 * 1024) {
    cudaFuncSetAttribute(kv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSharedBytes);
  }
  PatternLaunch kv = p;
  std::int64_t kv_ctas = 0;
  if constexpr (kSparse) {
    kv.sparse.tiles_per_block = (p.sparse.block_k + Tile::kBlock - 1) / Tile::kBlock;
    kv_ctas = p.sparse.key_blocks * kv.sparse.tiles_per_block;
  } else {
    kv.tiles_per_segment = kv_tiles_per_segment;
    kv.backward_tail_sequences = backward_tail_sequences(kv.tiles_per_segment);
    kv_ctas = p.segments * kv_tiles_per_segment;
  }
  const int grid_kv_heads = kSparse ? p.kv_heads : cover_pattern_kv_heads(kv);
  if (kv_ctas > 0 && grid_kv_heads > 0) {
    const dim3 kv_grid(static_cast<unsigned>(kv_ctas), static_cast<unsigned>(grid_kv_heads),
                       static_cast<unsigned>(p.batch));
    kv_kernel<<<kv_grid, Tile::kThreads, Tile::kSharedBytes, stream>>>(kv);
  }
  if (p.deterministic) launch_flash_backward_dq<Element, kHeadDim, kSparse>(p, stream);
}

}  // namespace longnet::kernels::cuda
