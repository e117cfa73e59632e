// Hopper (sm_90a) backward of dilated attention, in the transposed form: a CTA owns 128
// keys of one virtual sequence for one kv head (two warpgroups of 64 keys) and walks the
// query tiles (64) of every query head of its group that uses the same offset:
//     S^T = K Q^T, dP^T = V dO^T                 (wgmma, both operands in shared memory)
//     P^T = exp(scale S^T - lse), dS'^T = P^T (dP^T - delta / alpha)
//     dV += alpha P^T dO, dK += alpha scale dS'^T Q (wgmma, A = P^T / dS'^T from registers)
//     dQ += alpha scale dS' K                    (wgmma from shared memory; fp32 atomics)
// (dS = alpha dS': alpha, the output scale, is applied once to dK and dQ instead of to
// every element; lse in log2 units and delta / alpha come per row from
// PatternLaunch::row_terms.)
// dK and dV stay in registers and are added to the fp32 accumulators of the rows the CTA
// owns for this pattern. The two warpgroups share the Q and dO tiles and write dS^T to
// one 128-key tile, so each computes half of dQ's columns over all 128 keys: one fp32
// atomic per query element per 128 keys instead of per 64 (the atomics and the Q/dO loads
// bound the one-warpgroup kernel on L2).
// Tiles use the canonical 128-byte-swizzle layout of flash_forward_sm90.cuh. kSparse: a
// block-sparse launch — the CTA owns 64 keys of one key block and walks the query tiles of
// the query blocks that list it (block_sparse_tiles.cuh); the dilated instantiation is
// unchanged but for a CTA of one warpgroup (the walker cuts 64-key tiles).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/backward_order.cuh"
#include "kernels/cuda/block_sparse_tiles.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_forward_sm90.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace longnet::kernels::cuda {

// kGroups warpgroups of 64 keys each: 2 for dilated launches, 1 for block-sparse ones.
template <int kHeadDim, int kGroups>
struct Sm90BackwardTile {
  static constexpr int kThreads = 128 * kGroups;
  static constexpr int kBlock = 64;              // keys per warpgroup, queries per step
  static constexpr int kKeys = kBlock * kGroups;  // keys per CTA
  static constexpr int kDqColumns = kHeadDim / kGroups;  // dQ columns per warpgroup
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kTileBytes = kBlock * kHeadDim * 2;
  // Query-tile stages (Q, dO, lse, delta). Three let a step load the next tile into the
  // stage read two steps ago, which the previous step's mid-step barrier already freed, so
  // a step needs no barrier at its top; the one-warpgroup sparse kernel keeps two (two CTAs
  // per SM must fit).
  static constexpr int kStages = kGroups == 2 ? 3 : 2;
  // K, V (kKeys rows), kStages stages of Q and dO, dS^T (kKeys x 64), kStages stages of the
  // row terms (lse, delta: 8 bytes a query), alignment slack.
  static constexpr int kSharedBytes = 2 * kGroups * kTileBytes + 2 * kStages * kTileBytes + kKeys * kBlock * 2 +
                                      2 * kStages * kBlock * 4 + 1024;
  static constexpr int kMinBlocksPerSm = kGroups == 1 ? 2 : 1;
};
static_assert(Sm90BackwardTile<64, 1>::kBlock == kSparseTileRows && Sm90BackwardTile<128, 1>::kBlock == kSparseTileRows,
              "the block-sparse walker cuts tiles of the backward's query tile");

template <bool kSparse>
inline constexpr int kSm90BackwardGroups = kSparse ? 1 : 2;

// dQ (64 x kColumns) += A (64 x 16) B (16 x kColumns), both from shared memory MN-major.
template <class Element, int kColumns>
__device__ __forceinline__ void wgmma_dq_step(float (&dq)[kColumns / 2], std::uint64_t a, std::uint64_t b,
                                              int accumulate) {
  if constexpr (kColumns == 128) {
    wgmma_ss_m64n128k16<Element, 1, 1>(dq, a, b, accumulate);
  } else if constexpr (kColumns == 64) {
    wgmma_ss_m64n64k16<Element, 1, 1>(dq, a, b, accumulate);
  } else {
    static_assert(kColumns == 32, "dQ columns per warpgroup: 32, 64 or 128");
    wgmma_ss_m64n32k16<Element, 1, 1>(dq, a, b, accumulate);
  }
}

// The per-step arithmetic of a consumer warpgroup's 64 keys x 64 queries, shared by this
// kernel and the warp-specialised one (flash_backward_sm90_ws.cuh). Thread element (n, e)
// of a score tile is key row 16 warp + g + 8 (e / 2), query column 8 n + 2 t + (e & 1)
// (g = lane / 4, t = lane % 4).

// The row terms {lse · log2 e, delta / alpha} of query columns 8 n + 2 t and 8 n + 2 t + 1
// in one 16-byte load: x, y of the first, z, w of the second.
__device__ __forceinline__ float4 backward_terms(const float2* terms, int n, int t) {
  return *reinterpret_cast<const float4*>(terms + 8 * n + 2 * t);
}

// The warp-specialised backward keeps a step's row terms as two arrays, lse · log2 e and
// delta / alpha of its 64 query rows: a thread's two columns 8 n + 2 t and + 1 are one
// 8-byte load from each. (From interleaved {lse, delta} pairs the compiler loaded only the
// two fields a function used, as two 4-byte loads: 32 loads a step instead of 16.)
__device__ __forceinline__ float2 backward_column_pair(const float* terms, int n, int t) {
  return *reinterpret_cast<const float2*>(terms + 8 * n + 2 * t);
}

// P^T = exp2(scale_log2 S^T - lse) in place (`lse`: a step's lse · log2 e array). kMasked:
// elements for which masked_out(r, c) holds are zero, where the element is in the
// thread's key row r (0 or 1: key row 16 warp + g + 8 r of the warpgroup) and query
// column c + 2 t (c = 8 n + (e & 1), known at compile time, so a caller's test can be one
// compare against a per-row bound); interior tiles skip the tests.
template <bool kMasked, class MaskedOut>
__device__ __forceinline__ void backward_probabilities(float (&st)[32], const float* lse, float scale_log2, int t,
                                                       MaskedOut&& masked_out) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    const float2 pair = backward_column_pair(lse, n, t);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float weight = fast_exp2(st[4 * n + e] * scale_log2 - ((e & 1) ? pair.y : pair.x));
      if constexpr (kMasked) {
        if (masked_out(e / 2, 8 * n + (e & 1))) weight = 0.0f;
      }
      st[4 * n + e] = weight;
    }
  }
}

// dS'^T = P^T (dP^T - delta / alpha), into dpt (`delta`: a step's delta / alpha array).
__device__ __forceinline__ void backward_ds(const float (&st)[32], float (&dpt)[32], const float* delta, int t) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    const float2 pair = backward_column_pair(delta, n, t);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      dpt[4 * n + e] = st[4 * n + e] * (dpt[4 * n + e] - ((e & 1) ? pair.y : pair.x));
    }
  }
}

// The A fragments (four k-steps of 16 queries) of P^T and dS'^T.
template <class Element>
__device__ __forceinline__ void pack_backward_fragments(const float (&st)[32], const float (&dpt)[32],
                                                        std::uint32_t (&a_p)[4][4], std::uint32_t (&a_ds)[4][4]) {
  using M = Mma<Element>;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      a_p[kk][r] = M::pack(st[8 * kk + 2 * r], st[8 * kk + 2 * r + 1]);
      a_ds[kk][r] = M::pack(dpt[8 * kk + 2 * r], dpt[8 * kk + 2 * r + 1]);
    }
  }
}

// This thread's dS'^T elements into a swizzled tile of `rows` keys x 64 queries, whose key
// row first_row + 16 warp + g is the warp's first.
template <class Element>
__device__ __forceinline__ void store_ds_tile(Element* tile, int rows, int first_row, const float (&dpt)[32], int warp,
                                              int g, int t) {
  using M = Mma<Element>;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int kr = first_row + warp * 16 + g + 8 * r;
      const int qc = 8 * n + 2 * t;
      *reinterpret_cast<std::uint32_t*>(tile + sw128_offset<64>(rows, kr, qc / 8) + qc % 8) =
          M::pack(dpt[4 * n + 2 * r], dpt[4 * n + 2 * r + 1]);
    }
  }
}

// dV += P^T dO or dK += dS'^T Q over one 64-query step: A from registers, B (queries x D,
// D contiguous: MN-major) `stage_bytes` past the descriptor `columns`.
template <class Element, int kHeadDim>
__device__ __forceinline__ void wgmma_key_rows_step(float (&acc)[kHeadDim / 2], const std::uint32_t (&a)[4][4],
                                                    std::uint64_t columns, int stage_bytes) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const std::uint64_t b = descriptor_at(columns, stage_bytes + kk * 16 * 64 * 2);
    if constexpr (kHeadDim == 64) {
      wgmma_rs_m64n64k16<Element, 1>(acc, a[kk], b, 1);
    } else {
      wgmma_rs_m64n128k16<Element, 1>(acc, a[kk], b, 1);
    }
  }
}

// kStoreKv: the launch's PatternLaunch::store_kv, a template argument so that the kernel
// of every other launch is compiled without that path.
template <class Element, int kHeadDim, bool kSparse = false, bool kStoreKv = false>
__global__ void __launch_bounds__(Sm90BackwardTile<kHeadDim, kSm90BackwardGroups<kSparse>>::kThreads,
                                  Sm90BackwardTile<kHeadDim, kSm90BackwardGroups<kSparse>>::kMinBlocksPerSm)
    flash_backward_sm90_kernel(const __grid_constant__ PatternLaunch p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kGroups = kSm90BackwardGroups<kSparse>;
  using Tile = Sm90BackwardTile<kHeadDim, kGroups>;
  constexpr int kBlock = Tile::kBlock, kKeys = Tile::kKeys, kChunks = Tile::kChunks, kThreads = Tile::kThreads;
  constexpr int kDqColumns = Tile::kDqColumns;
  constexpr int kRowsPerPass = kThreads / kChunks;
  constexpr int kDTiles = kHeadDim / 8;
  constexpr int kTile = kBlock * kHeadDim;  // elements of one 64-row tile
  constexpr int kStages = Tile::kStages;
  extern __shared__ unsigned char shared_raw[];
  // Aligned to 1024 bytes (the 128-byte swizzle's period) by an offset from shared_raw:
  // rounding the address as an integer made every pointer below generic, so the
  // compiler addressed lse, delta and dS^T with 64-bit arithmetic and generic loads.
  unsigned char* shared_base = shared_raw + ((1024 - (shared_address(shared_raw) & 1023)) & 1023);
  Element* sK = reinterpret_cast<Element*>(shared_base);              // kKeys rows
  Element* sV = sK + kGroups * kTile;                                    // kKeys rows
  Element* sQ_stages = sV + kGroups * kTile;                             // [kStages][kTile]
  Element* sdO_stages = sQ_stages + kStages * kTile;                     // [kStages][kTile]
  Element* sdS = sdO_stages + kStages * kTile;                           // kKeys keys x 64 queries
  float2* sTerms_stages = reinterpret_cast<float2*>(sdS + kKeys * kBlock);  // [kStages][64]

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
    const BackwardCta cta = dilated_backward_cta(p, kKeys);
    segment = cta.segment;
    k_begin = cta.k_begin;
    kv_head = cta.kv_head;
    b = cta.batch;
  }
  const int group_size = p.heads / p.kv_heads;
  const int tid = threadIdx.x, warp = (tid / 32) % 4, lane = tid % 32;
  // A compile-time 0 for one warpgroup; else read through a shuffle so that the compiler
  // knows it warp-uniform and keeps the descriptors built from it in uniform registers.
  const int group = kGroups == 1 ? 0 : __shfl_sync(0xffffffffu, tid / 128, 0);
  // This warpgroup's keys start at k_group.
  const std::int64_t k_group = k_begin + group * kBlock;
  const int g = lane / 4, t = lane % 4;
  const float ds_scale = p.scale * p.output_scale;  // of dS' in dK and dQ
  const int copy_row = tid / kChunks, copy_chunk = tid % kChunks;
  const bool chunk_used = copy_chunk < p.head_dim / 8;
  // Descriptor bases of the products' operands; a step offsets them (descriptor_at) by its
  // stage and k-step. Element offsets are in units of 2 bytes.
  constexpr int kStageBytes = kTile * 2;
  const int column0 = group * kDqColumns;  // this warpgroup's dQ columns
  const std::uint64_t k_rows_desc = matrix_descriptor(sK + group * kBlock * 64, 16, 1024);
  const std::uint64_t v_rows_desc = matrix_descriptor(sV + group * kBlock * 64, 16, 1024);
  const std::uint64_t q_rows_desc = matrix_descriptor(sQ_stages, 16, 1024);
  const std::uint64_t do_rows_desc = matrix_descriptor(sdO_stages, 16, 1024);
  const std::uint64_t q_columns_desc = matrix_descriptor(sQ_stages, kBlock * 128, 1024);
  const std::uint64_t do_columns_desc = matrix_descriptor(sdO_stages, kBlock * 128, 1024);
  const std::uint64_t ds_desc = matrix_descriptor(sdS, kKeys * 128, 1024);
  const std::uint64_t k_columns_desc =
      matrix_descriptor(sK + (column0 / 64) * kKeys * 64 + column0 % 64, kKeys * 128, 1024);

  // Copies rows [first, first + kRows) of a virtual sequence into a swizzled kRows-row tile.
  auto load_tile = [&]<int kRows>(Element* tile, const Element* base, std::int64_t stride, std::int64_t first,
                                  std::int64_t length) {
    static_assert(kRows % kRowsPerPass == 0, "every thread copies the same number of rows");
    const Element* source = base + copy_chunk * 8;
#pragma unroll
    for (int pass = 0; pass < kRows / kRowsPerPass; ++pass) {
      const int row = copy_row + pass * kRowsPerPass;
      const std::int64_t j = first + row;
      const bool valid = chunk_used && j < length;
      copy_async_16(tile + sw128_offset<kHeadDim>(kRows, row, copy_chunk), source + (valid ? j : 0) * stride, valid);
    }
  };

  for (int h = kv_head * group_size; h < (kv_head + 1) * group_size; ++h) {
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
    const Element* q_base = p.q.row<const Element>(b, first_row, h);
    const Element* do_base = p.dout.row<const Element>(b, first_row, h);
    const float2* terms_row = static_cast<const float2*>(p.row_terms) + (b * p.heads + h) * p.seq_len + first_row;

    __syncthreads();  // the previous head's tiles are no longer read
    load_tile.template operator()<kKeys>(sK, p.k.row<const Element>(b, first_row, kv_head), step * p.k.seq_stride,
                                         k_begin, key_limit);
    load_tile.template operator()<kKeys>(sV, p.v.row<const Element>(b, first_row, kv_head), step * p.v.seq_stride,
                                         k_begin, key_limit);
    // Query tiles [q_begin, q_begin + 64) of which those before query_limit exist.
    auto load_queries = [&](std::int64_t q_begin, std::int64_t query_limit, int stage) {
      load_tile.template operator()<kBlock>(sQ_stages + stage * kTile, q_base, step * p.q.seq_stride, q_begin,
                                            query_limit);
      load_tile.template operator()<kBlock>(sdO_stages + stage * kTile, do_base, step * p.dout.seq_stride, q_begin,
                                            query_limit);
      if (tid < kBlock) {
        const std::int64_t i = q_begin + tid;
        // Copied with the tiles: a plain load here stalled the whole CTA at the next
        // barrier every step (17 % of the backward at N = 1M). Rows past the end get
        // lse = delta = 0 beside zero Q and dO rows: their P is 1, but dO = 0 and dS = 0,
        // so they add nothing, and their dQ is not written.
        const bool valid = i < query_limit;
        copy_async_8(sTerms_stages + stage * kBlock + tid, terms_row + (valid ? i * step : 0), valid);
      }
    };
    const std::int64_t q_first = p.causal ? k_begin : 0;
    // Dilated launches prefetch the tile after the current one through this thread's source
    // pointers, advanced a tile a step: load_queries' 64-bit row products were a tenth of
    // the loop's instructions. next_begin: the first query of the next tile.
    const std::int64_t q_row_stride = step * p.q.seq_stride, do_row_stride = step * p.dout.seq_stride;
    std::int64_t next_begin = q_first + kBlock;
    const Element* q_next = q_base + copy_chunk * 8 + (next_begin + copy_row) * q_row_stride;
    const Element* do_next = do_base + copy_chunk * 8 + (next_begin + copy_row) * do_row_stride;
    const float2* terms_next = terms_row + (next_begin + tid) * step;
    auto load_next_queries = [&](int stage) {
#pragma unroll
      for (int pass = 0; pass < kBlock / kRowsPerPass; ++pass) {
        const int row = copy_row + pass * kRowsPerPass;
        const bool valid = chunk_used && next_begin + row < L;
        const int at = stage * kTile + sw128_offset<kHeadDim>(kBlock, row, copy_chunk);
        copy_async_16(sQ_stages + at, valid ? q_next + pass * kRowsPerPass * q_row_stride : q_base, valid);
        copy_async_16(sdO_stages + at, valid ? do_next + pass * kRowsPerPass * do_row_stride : do_base, valid);
      }
      if (tid < kBlock) {
        const bool valid = next_begin + tid < L;  // rows past the end: as in load_queries
        copy_async_8(sTerms_stages + stage * kBlock + tid, valid ? terms_next : terms_row, valid);
      }
      next_begin += kBlock;
      q_next += kBlock * q_row_stride;
      do_next += kBlock * do_row_stride;
      terms_next += kBlock * step;
    };
    SparseTile current{}, following{};
    bool have_tile = true;
    if constexpr (kSparse) {
      have_tile = walker.next(p, current);
      if (have_tile) load_queries(current.start, current.start + current.count, 0);
    } else {
      current.start = q_first;
      load_queries(q_first, L, 0);
    }
    copy_async_commit();

    float dk[kDTiles * 4], dv[kDTiles * 4];
#pragma unroll
    for (int i = 0; i < kDTiles * 4; ++i) dk[i] = dv[i] = 0.0f;

    int stage = 0;
    for (; kSparse ? have_tile : current.start < L; stage = stage + 1 == kStages ? 0 : stage + 1) {
      const std::int64_t q_begin = current.start;
      const std::int64_t query_limit = kSparse ? current.start + current.count : L;
      const int next_stage = stage + 1 == kStages ? 0 : stage + 1;
      // Two stages: the previous step still read the next stage. Three: it was read two
      // steps ago, and every thread passed the previous step's barrier before dQ since.
      if constexpr (kStages == 2) __syncthreads();
      bool prefetch = false;
      if constexpr (kSparse) {
        prefetch = walker.next(p, following);
        if (prefetch) load_queries(following.start, following.start + following.count, next_stage);
      } else {
        prefetch = q_begin + kBlock < L;
        following.start = q_begin + kBlock;
        if (prefetch) load_next_queries(next_stage);
      }
      if (prefetch) {
        copy_async_commit();
        copy_async_wait<1>();
      } else {
        copy_async_wait<0>();
      }
      fence_proxy_async();
      __syncthreads();
      const float2* sTerms = sTerms_stages + stage * kBlock;

      // S^T = K Q^T and dP^T = V dO^T (this warpgroup's 64 keys x 64 queries each), in
      // two groups: P^T is computed from S^T while the tensor cores still work on dP^T.
      float st[32], dpt[32];
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kHeadDim / 16; ++ks) {
        const int at = (ks / 4) * kBlock * 64 + (ks % 4) * 16;  // column block, then k-step
        const int key_at = (ks / 4) * kKeys * 64 + (ks % 4) * 16;  // past this warpgroup's keys
        wgmma_ss_m64n64k16<Element, 0, 0>(st, descriptor_at(k_rows_desc, key_at * 2),
                                          descriptor_at(q_rows_desc, stage * kStageBytes + at * 2), ks > 0);
      }
      wgmma_commit();
      // A fence per product: ptxas treats the wgmmas after one fence as one stage and waits
      // for all of them before any accumulator of the stage is read.
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kHeadDim / 16; ++ks) {
        const int at = (ks / 4) * kBlock * 64 + (ks % 4) * 16;  // column block, then k-step
        const int key_at = (ks / 4) * kKeys * 64 + (ks % 4) * 16;
        wgmma_ss_m64n64k16<Element, 0, 0>(dpt, descriptor_at(v_rows_desc, key_at * 2),
                                          descriptor_at(do_rows_desc, stage * kStageBytes + at * 2), ks > 0);
      }
      wgmma_commit();
      wgmma_wait<1>();
      wgmma_fence_registers(st);

      // P^T; thread element (n, e) is key row kr, query column qc (key k_group + kr, query
      // q_begin + qc). Dilated: the causal tiles that reach the diagonal (the warpgroup's
      // keys start `shift` = 0 or 64 after the queries) and the sequence's tail; sparse:
      // the band and the key block's tail (kept iff diagonals.low <= kr - qc <=
      // diagonals.high).
      bool diagonal = false, masked = false;
      int shift = 0;
      TileDiagonals diagonals{};
      if constexpr (kSparse) {
        const Band band = tile_band(p, current.partial);
        masked = !band_covers(band, q_begin, q_begin + kBlock - 1, k_begin, k_begin + kBlock - 1);
        diagonals = tile_diagonals(band, q_begin, k_begin, 2 * kBlock);
      } else {
        diagonal = p.causal && q_begin < k_group + kBlock;
        shift = static_cast<int>(k_group - q_begin);
      }
      const bool key_tail = k_group + kBlock > key_limit;
      // Keys of this warpgroup that exist (64 unless key_tail).
      const int keys = key_tail ? static_cast<int>(key_limit - k_group) : kBlock;
      // Interior tiles (most of them) skip the per-element mask tests: the branch is
      // uniform over the CTA. P^T and dS'^T are backward_probabilities and backward_ds
      // written out here: called, they changed the SASS of the block-sparse instantiation
      // (which spills), so it would need measuring again; the dilated ones come out the same.
      auto probabilities = [&]<bool kMasked>() {
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          const float4 pair = backward_terms(sTerms, n, t);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int kr = warp * 16 + g + 8 * (e / 2);
            const int qc = 8 * n + 2 * t + (e & 1);
            float weight = fast_exp2(st[4 * n + e] * p.scale_log2 - ((e & 1) ? pair.z : pair.x));
            if constexpr (!kMasked) {
            } else if constexpr (kSparse) {
              if ((masked && (kr - qc < diagonals.low || kr - qc > diagonals.high)) || kr >= keys) weight = 0.0f;
            } else {
              if ((diagonal && kr + shift > qc) || kr >= keys) weight = 0.0f;
            }
            st[4 * n + e] = weight;
          }
        }
      };
      if (key_tail || (kSparse ? masked : diagonal)) {
        probabilities.template operator()<true>();
      } else {
        probabilities.template operator()<false>();
      }
      // Pinned before the wait: otherwise the compiler may sink P below it.
      wgmma_fence_registers(st);
      wgmma_wait<0>();
      wgmma_fence_registers(dpt);
      // dS'^T = P^T (dP^T - delta / alpha).
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const float4 pair = backward_terms(sTerms, n, t);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          dpt[4 * n + e] = st[4 * n + e] * (dpt[4 * n + e] - ((e & 1) ? pair.w : pair.y));
        }
      }
      // The A fragments of P^T and dS^T, and dS^T to shared memory (this warpgroup's rows of
      // the CTA's keys x queries) for dQ.
      std::uint32_t a_p[4][4], a_ds[4][4];
      pack_backward_fragments<Element>(st, dpt, a_p, a_ds);
      store_ds_tile<Element>(sdS, kKeys, group * kBlock, dpt, warp, g, t);
      // dV += P^T dO, then (once every warpgroup wrote its dS^T) dQ = dS K, then
      // dK += dS^T Q, each its own group: dQ's atomics run while the tensor cores work on dK.
      // B = dO / Q (queries x D, D contiguous: MN-major).
      wgmma_fence();
      wgmma_key_rows_step<Element, kHeadDim>(dv, a_p, do_columns_desc, stage * kStageBytes);
      wgmma_commit();

      // dQ over the CTA's keys, this warpgroup's columns [column0, + kDqColumns): A = dS
      // (queries x keys) read from dS^T (query-contiguous: MN-major), B = K (keys x D, D
      // contiguous: MN-major; a half of a 64-column block starts 64 bytes in). Deterministic
      // launches never come here: the driver sends them to flash_backward.cuh's kernels.
      fence_proxy_async();
      __syncthreads();
      constexpr int kDqTiles = kDqColumns / 8;
      float dq[kDqTiles * 4];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        const std::uint64_t a = descriptor_at(ds_desc, kk * 16 * 64 * 2);
        const std::uint64_t k = descriptor_at(k_columns_desc, kk * 16 * 64 * 2);
        wgmma_dq_step<Element, kDqColumns>(dq, a, k, kk > 0);
      }
      wgmma_commit();

      wgmma_fence();
      wgmma_key_rows_step<Element, kHeadDim>(dk, a_ds, q_columns_desc, stage * kStageBytes);
      wgmma_commit();
      wgmma_wait<1>();  // dV and dQ; dK may still run
      wgmma_fence_registers(dq);
      // One float4 atomic per four columns (half the L2 operations of float2): lanes t and
      // t ^ 1 of a quad swap halves, so the even lane holds columns 8n + 2t .. + 3 of row g
      // and the odd one columns 8n + 2(t - 1) .. + 3 of row g + 8.
      {
        const int r = t & 1;
        const std::int64_t i = q_begin + warp * 16 + g + 8 * r;
        float* acc = static_cast<float*>(p.dq_accumulator) +
                     ((b * p.seq_len + first_row + i * step) * p.heads + h) * p.head_dim;
#pragma unroll
        for (int n = 0; n < kDqTiles; ++n) {
          const float given0 = r ? dq[4 * n + 0] : dq[4 * n + 2];
          const float given1 = r ? dq[4 * n + 1] : dq[4 * n + 3];
          const float taken0 = __shfl_xor_sync(0xffffffffu, given0, 1);
          const float taken1 = __shfl_xor_sync(0xffffffffu, given1, 1);
          const float4 sum = r ? make_float4(taken0, taken1, dq[4 * n + 2], dq[4 * n + 3])
                               : make_float4(dq[4 * n + 0], dq[4 * n + 1], taken0, taken1);
          const int d = column0 + 8 * n + 2 * (t & ~1);
          if (i < query_limit && d < p.head_dim) {
            atomicAdd(reinterpret_cast<float4*>(acc + d),
                      make_float4(ds_scale * sum.x, ds_scale * sum.y, ds_scale * sum.z, ds_scale * sum.w));
          }
        }
      }
      wgmma_wait<0>();
      wgmma_fence_registers(dk);
      wgmma_fence_registers(dv);
      current = following;
      have_tile = prefetch;
    }
    if constexpr (kSparse) copy_async_wait<0>();  // a key block no query lists still copied K, V

      // This head's dK, dV for the rows this CTA owns (zero where no query reached them).
    {
      const std::int64_t j = k_group + warp * 16 + g;
      const std::int64_t rows[2] = {first_row + j * step, first_row + (j + 8) * step};
      const bool valid[2] = {j < key_limit, j + 8 < key_limit};
      finish_key_rows<Element, kHeadDim>(
          p, b, kv_head, rows, valid, kStoreKv, ds_scale, [&](int r, int n, int j2) { return dk[4 * n + 2 * r + j2]; },
          [&](int r, int n, int j2) { return dv[4 * n + 2 * r + j2]; });
    }
  }
#else
  (void)p;
  __trap();  // built without sm_90a: never launched (the host checks the device first)
#endif
}

// Dilated: kv_tiles_per_segment tiles of 64 keys per segment, two per CTA. Sparse: the
// CTAs cover every key block in tiles of 64.
template <class Element, int kHeadDim, bool kSparse>
void launch_flash_backward_sm90(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream) {
  using Tile = Sm90BackwardTile<kHeadDim, kSm90BackwardGroups<kSparse>>;
  auto kernel = flash_backward_sm90_kernel<Element, kHeadDim, kSparse>;
  if constexpr (!kSparse) {
    if (p.store_kv) kernel = flash_backward_sm90_kernel<Element, kHeadDim, false, true>;
  }
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSharedBytes);
  PatternLaunch kv = p;
  std::int64_t ctas = 0;
  if constexpr (kSparse) {
    kv.sparse.tiles_per_block = (p.sparse.block_k + Tile::kBlock - 1) / Tile::kBlock;
    ctas = p.sparse.key_blocks * kv.sparse.tiles_per_block;
  } else {
    kv.tiles_per_segment = (kv_tiles_per_segment * kSparseTileRows + Tile::kKeys - 1) / Tile::kKeys;
    kv.backward_tail_sequences = backward_tail_sequences(kv.tiles_per_segment);
    ctas = p.segments * kv.tiles_per_segment;
  }
  const int grid_kv_heads = kSparse ? p.kv_heads : cover_pattern_kv_heads(kv);
  if (ctas == 0 || grid_kv_heads == 0) return;
  const dim3 grid(static_cast<unsigned>(ctas), static_cast<unsigned>(grid_kv_heads), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tile::kThreads, Tile::kSharedBytes, stream>>>(kv);
}

}  // namespace longnet::kernels::cuda
