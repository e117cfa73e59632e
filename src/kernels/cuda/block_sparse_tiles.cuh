// How the attention kernels' kSparse instantiations walk a block mask (DESIGN 2.5, 3.1):
// instead of the contiguous keys of a virtual sequence, a CTA's tile loop visits the
// listed blocks — runs of adjacent blocks with the same partial flag, each cut into tiles
// of at most the kernel's tile size from the run's start — and skips tiles in which the
// mask allows no pair with the CTA's own rows. The forward and dQ kernels own query rows
// and walk key tiles (the row lists); the dK/dV kernels own key rows and walk query tiles
// (the transposed lists).
//
// Masks are bands on distance = query - key: causal is lo = 0 for every block; a
// partial block also has the element band [min_distance, max_distance].
#pragma once

#include <cstdint>

#include "kernels/cuda/flash_params.cuh"

namespace longnet::kernels::cuda {

inline constexpr std::int64_t kUnboundedDistance = INT64_MAX;

// lo <= query - key <= hi (+-kUnboundedDistance: no bound).
struct Band {
  std::int64_t lo, hi;
};

__device__ __forceinline__ Band tile_band(const PatternLaunch& p, bool partial) {
  std::int64_t lo = p.causal ? 0 : -kUnboundedDistance, hi = kUnboundedDistance;
  if (partial) {
    lo = lo > p.sparse.min_distance ? lo : p.sparse.min_distance;
    hi = p.sparse.max_distance;
  }
  return {lo, hi};
}

// Whether the band allows some pair of queries [q0, q1] x keys [k0, k1] (inclusive).
__device__ __forceinline__ bool band_meets(Band band, std::int64_t q0, std::int64_t q1, std::int64_t k0,
                                           std::int64_t k1) {
  return q1 - k0 >= band.lo && q0 - k1 <= band.hi;
}

// Whether the band allows every pair of queries [q0, q1] x keys [k0, k1].
__device__ __forceinline__ bool band_covers(Band band, std::int64_t q0, std::int64_t q1, std::int64_t k0,
                                            std::int64_t k1) {
  return q0 - k1 >= band.lo && q1 - k0 <= band.hi;
}

// In a tile whose query index 0 is at position q0 and key index 0 at k0, the band allows
// (query i, key j) iff low <= j - i <= high (clamped to +-limit, beyond any tile).
struct TileDiagonals {
  int low, high;
};

__device__ __forceinline__ TileDiagonals tile_diagonals(Band band, std::int64_t q0, std::int64_t k0, int limit) {
  const std::int64_t base = q0 - k0;
  auto clamp = [limit](std::int64_t x) { return static_cast<int>(x < -limit ? -limit : (x > limit ? limit : x)); };
  return {band.hi == kUnboundedDistance ? -limit : clamp(base - band.hi),
          band.lo == -kUnboundedDistance ? limit : clamp(base - band.lo)};
}

// Whether score (query row qi, key column kj) of a tile whose first key is key0 is
// dropped. Dilated: `masked` is the causal diagonal tile (keys after their query), plus
// keys past key_limit. Sparse: `masked` is a tile the band cuts (kept iff diagonal_low <=
// kj - qi <= diagonal_high), plus keys past key_limit. (A function rather than an
// `if constexpr` inside the kernels' unrolled loops: there the branch alone changed the
// dilated instantiation's machine code.)
template <bool kSparse>
__device__ __forceinline__ bool tile_pair_dropped(bool masked, int diagonal_low, int diagonal_high, bool tail,
                                                  std::int64_t key0, std::int64_t key_limit, int qi, int kj) {
  if constexpr (kSparse) {
    return (masked && (kj - qi < diagonal_low || kj - qi > diagonal_high)) || (tail && key0 + kj >= key_limit);
  } else {
    return (masked && kj > qi) || (tail && key0 + kj >= key_limit);
  }
}

struct SparseTile {
  std::int64_t start;  // first position
  int count;           // positions (at most the kernel's tile)
  bool partial;
};

// The tiles of list entries [entry, end) of one (mask head, block), skipping those without
// an allowed pair with the CTA's own positions [own_first, own_last].
struct SparseTileWalker {
  const std::int32_t* indices;
  const std::uint8_t* flags;
  std::int64_t entry, end;
  std::int64_t block, limit;  // block size on the walked side; the sequence length
  int tile;
  std::int64_t own_first, own_last;
  bool own_queries;  // the CTA owns queries (walks keys) or keys (walks queries)
  std::int64_t position = 0, run_end = 0;
  bool run_partial = false;

  __device__ __forceinline__ bool next(const PatternLaunch& p, SparseTile& out) {
    for (;;) {
      if (position >= run_end) {
        if (entry >= end) return false;
        const std::int64_t first = indices[entry];
        const std::uint8_t flag = flags[entry];
        std::int64_t last = first;
        for (++entry; entry < end && indices[entry] == last + 1 && flags[entry] == flag; ++entry) ++last;
        position = first * block;
        run_end = (last + 1) * block < limit ? (last + 1) * block : limit;
        run_partial = flag != 0;
      }
      out.start = position;
      out.count = static_cast<int>(run_end - position < tile ? run_end - position : tile);
      out.partial = run_partial;
      position += out.count;
      const Band band = tile_band(p, out.partial);
      const std::int64_t first = out.start, last = out.start + out.count - 1;
      if (own_queries ? band_meets(band, own_first, own_last, first, last)
                      : band_meets(band, first, last, own_first, own_last)) {
        return true;
      }
    }
  }
};

__device__ __forceinline__ int sparse_mask_head(const PatternLaunch& p, int head) {
  return p.sparse.mask_heads == 1 ? 0 : head;
}

// The key tiles of query block `query_block` for query head `head`, seen from the CTA's
// queries [own_first, own_last].
__device__ __forceinline__ SparseTileWalker sparse_key_tiles(const PatternLaunch& p, int head, std::int64_t query_block,
                                                             int tile, std::int64_t own_first, std::int64_t own_last) {
  const std::int64_t list = sparse_mask_head(p, head) * p.sparse.query_blocks + query_block;
  return {p.sparse.column_indices,
          p.sparse.row_partial,
          p.sparse.row_offsets[list],
          p.sparse.row_offsets[list + 1],
          p.sparse.block_k,
          p.seq_len,
          tile,
          own_first,
          own_last,
          true};
}

// The query tiles of the query blocks that list key block `key_block` for query head
// `head`, seen from the CTA's keys [own_first, own_last].
__device__ __forceinline__ SparseTileWalker sparse_query_tiles(const PatternLaunch& p, int head, std::int64_t key_block,
                                                               int tile, std::int64_t own_first,
                                                               std::int64_t own_last) {
  const std::int64_t list = sparse_mask_head(p, head) * p.sparse.key_blocks + key_block;
  return {p.sparse.row_indices,
          p.sparse.column_partial,
          p.sparse.column_offsets[list],
          p.sparse.column_offsets[list + 1],
          p.sparse.block_q,
          p.seq_len,
          tile,
          own_first,
          own_last,
          false};
}

// The rows a CTA owns: tile `cta % tiles_per_block` of block `cta / tiles_per_block` (of
// `block` positions; tiles of `rows`), cut at the block's end and at N.
struct SparseRows {
  std::int64_t block, begin, end;
};

__device__ __forceinline__ SparseRows sparse_rows(const PatternLaunch& p, std::int64_t cta, std::int64_t block,
                                                  int rows) {
  const std::int64_t b = cta / p.sparse.tiles_per_block;
  const std::int64_t begin = b * block + (cta % p.sparse.tiles_per_block) * rows;
  std::int64_t end = begin + rows;
  end = end < (b + 1) * block ? end : (b + 1) * block;
  end = end < p.seq_len ? end : p.seq_len;
  return {b, begin, end};
}

}  // namespace longnet::kernels::cuda
