// Tensor-core forward of dilated attention (FlashAttention-2 style, mma.sync m16n8k16).
// A CTA takes 128 queries of one virtual sequence (warps of kWarpRows = 32 rows for
// head_dim 64, 16 for 128: more rows per warp reuse each K/V fragment for more MMAs),
// streams the sequence's keys and values through shared memory in tiles of 64
// (double-buffered cp.async into swizzled tiles), keeps one tile of scores in registers
// with an online softmax in base 2, and writes the normalised output and the
// log-sum-exp — straight into the output (rows one pattern reaches) or merged by
// log-sum-exp into fp32 accumulators (LongNet mode, one launch per pattern).
//
// Template: Element (__nv_bfloat16 or __half) and kHeadDim (64 or 128: the tile width; a
// smaller runtime head_dim that is a multiple of 8 runs zero-padded). kSparse: a
// block-sparse launch — the CTA owns rows of one query block of the whole sequence and
// its tile loop walks the block's listed key tiles (block_sparse_tiles.cuh); the
// dilated instantiation (kSparse = false) is unchanged.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/block_sparse_tiles.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace longnet::kernels::cuda {

template <int kHeadDim>
struct ForwardTile {
  static constexpr int kWarpRows = kHeadDim <= 64 ? 32 : 16;
  static constexpr int kMTiles = kWarpRows / 16;
  static constexpr int kBlockM = 128;  // queries per CTA
  static constexpr int kWarps = kBlockM / kWarpRows;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBlockN = 64;                                           // keys per pipeline stage
  static constexpr int kChunks = kHeadDim / 8;                                 // 16-byte chunks per row
  static constexpr int kSharedBytes = (kBlockM + 4 * kBlockN) * kHeadDim * 2;  // Q + 2 stages of K, V
};
static_assert(ForwardTile<64>::kBlockN == kSparseTileRows && ForwardTile<128>::kBlockN == kSparseTileRows,
              "the block-sparse walker cuts tiles of the forward's key tile");

// Which pattern, head, segment and query tile CTA `cta` (default blockIdx.x) is (see PatternSlot).
struct ForwardWork {
  int slot;
  int head;
  std::int64_t segment, tile;
};

// The slot (pattern) whose CTAs include `cta`.
__device__ __forceinline__ int forward_slot(const PatternLaunch& p, std::int64_t cta) {
  int slot = 0;
  while (slot + 1 < p.slot_count && cta >= p.slots[slot + 1].cta_begin) ++slot;
  return slot;
}

__device__ __forceinline__ ForwardWork forward_work(const PatternLaunch& p, std::int64_t cta) {
  const int slot = forward_slot(p, cta);
  const PatternSlot& s = p.slots[slot];
  const std::int64_t local = cta - s.cta_begin;
  const std::int64_t per_head = s.segments * s.tiles_per_segment;
  return {slot, s.head_begin + static_cast<int>(local / per_head), (local % per_head) / s.tiles_per_segment,
          local % s.tiles_per_segment};
}
__device__ __forceinline__ ForwardWork forward_work(const PatternLaunch& p) { return forward_work(p, blockIdx.x); }

template <class Element, int kHeadDim, bool kSparse = false>
__global__ void __launch_bounds__(ForwardTile<kHeadDim>::kThreads)
    flash_forward_kernel(const __grid_constant__ PatternLaunch p) {
  using Tile = ForwardTile<kHeadDim>;
  using M = Mma<Element>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kChunks = Tile::kChunks;
  constexpr int kMTiles = Tile::kMTiles, kThreads = Tile::kThreads;
  constexpr int kSteps = kHeadDim / 16;             // k-steps over the head dimension
  constexpr int kRowsPerPass = kThreads / kChunks;  // rows one pass of copies covers
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Element* sQ = reinterpret_cast<Element*>(shared_raw);
  Element* sK = sQ + kBlockM * kHeadDim;  // [2][kBlockN * kHeadDim]
  Element* sV = sK + 2 * kBlockN * kHeadDim;

  // This CTA's query rows q_begin + i < query_limit, tensor row first_row + i * row_step,
  // of head h; the keys of a dilated launch are the L rows of the same virtual sequence.
  int h = 0;
  std::int64_t q_begin = 0, query_limit = 0, first_row = 0, row_step = 1, L = 0;
  SparseKeyTiles walker{};
  if constexpr (kSparse) {
    const std::int64_t per_head = p.sparse.query_blocks * p.sparse.tiles_per_block;
    h = p.head_begin + static_cast<int>(blockIdx.x / per_head);
    const SparseRows rows = sparse_rows(p, blockIdx.x % per_head, p.sparse.block_q, kBlockM);
    q_begin = rows.begin;
    query_limit = rows.end;
    walker = sparse_key_tiles(p, h, rows.block, rows.begin, rows.end - 1);
  } else {
    const ForwardWork work = forward_work(p);
    const PatternSlot& slot = p.slots[work.slot];
    h = work.head;
    q_begin = work.tile * kBlockM;
    const std::int64_t offset =
        pattern_offset(p.mode, slot.pattern_index, p.num_patterns, slot.pattern.dilation_rate, h, p.heads);
    if (offset < 0) return;
    const VirtualSequence vs = virtual_sequence(p.seq_len, slot.pattern, offset, work.segment);
    L = vs.length;
    if (q_begin >= L) return;
    query_limit = L;
    first_row = vs.first_row;
    row_step = vs.row_step;
  }
  const std::int64_t b = blockIdx.y;
  const int kv_head = h / (p.heads / p.kv_heads);

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int group = lane / 4, thread_in_group = lane % 4;
  const int chunks_used = p.head_dim / 8;

  // Each thread copies chunk (tid % kChunks) of rows tid / kChunks + kRowsPerPass * pass.
  const int copy_row = tid / kChunks, copy_chunk = tid % kChunks;
  const bool chunk_used = copy_chunk < chunks_used;
  const std::int64_t q_stride = row_step * p.q.seq_stride;
  const std::int64_t k_stride = row_step * p.k.seq_stride;
  const std::int64_t v_stride = row_step * p.v.seq_stride;
  const Element* q_copy = p.q.row<const Element>(b, first_row, h) + copy_chunk * 8;
  const Element* k_copy = p.k.row<const Element>(b, first_row, kv_head) + copy_chunk * 8;
  const Element* v_copy = p.v.row<const Element>(b, first_row, kv_head) + copy_chunk * 8;

  // Keys [key0, key0 + kBlockN) of which those before `limit` exist.
  auto load_keys = [&](std::int64_t key0, std::int64_t limit, int stage) {
    Element* k_stage = sK + stage * kBlockN * kHeadDim;
    Element* v_stage = sV + stage * kBlockN * kHeadDim;
#pragma unroll
    for (int pass = 0; pass < kBlockN / kRowsPerPass; ++pass) {
      const int row = copy_row + pass * kRowsPerPass;
      const std::int64_t j = key0 + row;
      const bool valid = chunk_used && j < limit;
      const std::int64_t jj = valid ? j : 0;
      copy_async_16(k_stage + swizzled_offset<kHeadDim>(row, copy_chunk), k_copy + jj * k_stride, valid);
      copy_async_16(v_stage + swizzled_offset<kHeadDim>(row, copy_chunk), v_copy + jj * v_stride, valid);
    }
  };
  auto load_kv = [&](std::int64_t tile, int stage) { load_keys(tile * kBlockN, L, stage); };
  auto load_sparse = [&](const SparseTile& t, int stage) { load_keys(t.start, t.start + t.count, stage); };
#pragma unroll
  for (int pass = 0; pass < kBlockM / kRowsPerPass; ++pass) {
    const int row = copy_row + pass * kRowsPerPass;
    const std::int64_t i = q_begin + row;
    const bool valid = chunk_used && i < query_limit;
    copy_async_16(sQ + swizzled_offset<kHeadDim>(row, copy_chunk), q_copy + (valid ? i : 0) * q_stride, valid);
  }
  // Key tiles: 0 .. kv_tiles - 1 of the virtual sequence, or the walker's.
  std::int64_t kv_tiles = 0;
  SparseTile current{}, following{};
  bool have_tile = false;
  if constexpr (kSparse) {
    have_tile = walker.next(p, current);
    if (have_tile) load_sparse(current, 0);
  } else {
    const std::int64_t key_end = p.causal ? min(L, q_begin + kBlockM) : L;
    kv_tiles = (key_end + kBlockN - 1) / kBlockN;
    load_kv(0, 0);
  }
  copy_async_commit();

  // A negative scale is a positive one on -Q: flip the sign bits of the Q fragments.
  const bool negate = p.scale_log2 < 0.0f;
  // A zero scale becomes a tiny positive one, so masked scores (-inf) stay -inf (not NaN).
  const float scale_log2 = fmaxf(fabsf(p.scale_log2), 1e-30f);
  float o[kMTiles][kHeadDim / 8][4];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m)
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.0f;
  float row_max[kMTiles][2], row_sum[kMTiles][2];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }
  const int warp_row = warp * Tile::kWarpRows;

  for (std::int64_t tile = 0; kSparse ? have_tile : tile < kv_tiles; ++tile) {
    const int stage = static_cast<int>(tile & 1);
    bool prefetch = false;
    if constexpr (kSparse) {
      prefetch = walker.next(p, following);
      if (prefetch) load_sparse(following, stage ^ 1);
    } else {
      prefetch = tile + 1 < kv_tiles;
      if (prefetch) load_kv(tile + 1, stage ^ 1);
    }
    if (prefetch) {
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();
    const Element* k_tile = sK + stage * kBlockN * kHeadDim;
    const Element* v_tile = sV + stage * kBlockN * kHeadDim;

    // S = Q K^T for this warp's rows and the tile's 64 keys; each K fragment feeds every
    // m-tile. Q fragments are re-read from shared memory each tile (registers go to S and O).
    float s[kMTiles][kBlockN / 8][4];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m)
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      std::uint32_t q_fragment[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        const int row = warp_row + 16 * m + (lane % 8) + 8 * ((lane / 8) % 2);
        load_matrix_x4(q_fragment[m], sQ + swizzled_offset<kHeadDim>(row, 2 * ks + lane / 16));
        if (negate) {
#pragma unroll
          for (int r = 0; r < 4; ++r) q_fragment[m][r] ^= 0x80008000u;
        }
      }
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        std::uint32_t kf[4];
        const int row = 16 * np + (lane % 8) + 8 * (lane / 16);
        load_matrix_x4(kf, k_tile + swizzled_offset<kHeadDim>(row, 2 * ks + (lane / 8) % 2));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          M::run(s[m][2 * np], q_fragment[m], kf[0], kf[1]);
          M::run(s[m][2 * np + 1], q_fragment[m], kf[2], kf[3]);
        }
      }
    }

    // Mask (only tiles that reach past the keys, the diagonal or the band), then the online
    // softmax: p = 2^(s * scale_log2 - max * scale_log2) as one FFMA and one MUFU.
    // Key column c of row `row` is kept iff c < key_limit and diagonal_low <= c - row <=
    // diagonal_high (dilated: diagonal_low unused, diagonal_high only when causal). Plain
    // ints, not a struct: the dilated instantiation then compiles to the same code as
    // before kSparse existed.
    bool needs_mask;
    int key_limit, diagonal_low = 0, diagonal_high;
    if constexpr (kSparse) {
      const Band band = tile_band(p, current.partial);
      key_limit = current.count;
      needs_mask =
          key_limit < kBlockN || !band_covers(band, q_begin + warp_row, q_begin + warp_row + Tile::kWarpRows - 1,
                                              current.start, current.start + kBlockN - 1);
      const TileDiagonals diagonals = tile_diagonals(band, q_begin, current.start, kBlockM + kBlockN);
      diagonal_low = diagonals.low;
      diagonal_high = diagonals.high;
    } else {
      // In 32-bit tile coordinates: key column c is masked when c >= key_limit, or (causal)
      // when c - row > diagonal_high (key0 + c > q_begin + row).
      const std::int64_t key0 = tile * kBlockN;
      needs_mask = key0 + kBlockN > L || (p.causal && key0 + kBlockN - 1 > q_begin + warp_row);
      key_limit = static_cast<int>(min(L - key0, static_cast<std::int64_t>(kBlockN)));
      diagonal_high = static_cast<int>(
          max(min(q_begin - key0, static_cast<std::int64_t>(kBlockM)), static_cast<std::int64_t>(-kBlockM)));
    }
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (needs_mask) {
            const int c = 8 * n + 2 * thread_in_group + (e & 1);
            const int row = warp_row + 16 * m + group + 8 * (e / 2);
            if constexpr (kSparse) {
              if (c >= key_limit || c - row > diagonal_high || c - row < diagonal_low) s[m][n][e] = -INFINITY;
            } else {
              if (c >= key_limit || (p.causal && c - row > diagonal_high)) s[m][n][e] = -INFINITY;
            }
          }
          tile_max[e / 2] = fmaxf(tile_max[e / 2], s[m][n][e]);
        }
      }
      float reference[2], correction[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float new_max = fmaxf(row_max[m][r], warp_group_max(tile_max[r]));
        reference[r] = new_max == -INFINITY ? 0.0f : new_max * scale_log2;
        correction[r] = row_max[m][r] == -INFINITY ? 0.0f : fast_exp2(row_max[m][r] * scale_log2 - reference[r]);
        row_max[m][r] = new_max;
        row_sum[m][r] *= correction[r];
      }
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[m][n][e] = fast_exp2(fmaf(s[m][n][e], scale_log2, -reference[e / 2]));
          row_sum[m][e / 2] += s[m][n][e];
        }
      }
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[m][n][0] *= correction[0];
        o[m][n][1] *= correction[0];
        o[m][n][2] *= correction[1];
        o[m][n][3] *= correction[1];
      }
    }

    // O += P V: P straight from the score registers as A fragments; each V fragment feeds every m-tile.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      std::uint32_t a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        a[m][0] = M::pack(s[m][2 * kk][0], s[m][2 * kk][1]);
        a[m][1] = M::pack(s[m][2 * kk][2], s[m][2 * kk][3]);
        a[m][2] = M::pack(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
        a[m][3] = M::pack(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kHeadDim / 16; ++dp) {
        std::uint32_t vf[4];
        const int row = 16 * kk + (lane % 8) + 8 * ((lane / 8) % 2);
        load_matrix_x4_transposed(vf, v_tile + swizzled_offset<kHeadDim>(row, 2 * dp + lane / 16));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          M::run(o[m][2 * dp], a[m], vf[0], vf[1]);
          M::run(o[m][2 * dp + 1], a[m], vf[2], vf[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite the stage just read
    if constexpr (kSparse) {
      current = following;
      have_tile = prefetch;
    }
  }
  if constexpr (kSparse) copy_async_wait<0>();  // a query block without keys still copied Q

    // Epilogue: normalise, then write or merge (rows without keys: 0 and -inf).
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    const std::int64_t i = q_begin + warp_row + 16 * m + group;
    const std::int64_t rows[2] = {first_row + i * row_step, first_row + (i + 8) * row_step};
    const bool valid[2] = {i < query_limit, i + 8 < query_limit};
    const float max_log2[2] = {row_max[m][0] * scale_log2, row_max[m][1] * scale_log2};
    finish_query_rows<Element, kHeadDim>(p, b, h, rows, valid, row_sum[m], max_log2,
                                         [&](int r, int n, int j) { return o[m][n][2 * r + j]; });
  }
}

template <class Element, int kHeadDim, bool kSparse>
void launch_flash_forward(const PatternLaunch& p, cudaStream_t stream) {
  using Tile = ForwardTile<kHeadDim>;
  const dim3 grid(static_cast<unsigned>(p.total_ctas), static_cast<unsigned>(p.batch));
  auto kernel = flash_forward_kernel<Element, kHeadDim, kSparse>;
  if (Tile::kSharedBytes > 48 * 1024) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSharedBytes);
  }
  kernel<<<grid, Tile::kThreads, Tile::kSharedBytes, stream>>>(p);
}

}  // namespace longnet::kernels::cuda
