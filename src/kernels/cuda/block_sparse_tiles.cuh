// How the attention kernels' kSparse instantiations walk a block mask (DESIGN 2.5, 3.1):
// instead of the contiguous keys of a virtual sequence, a CTA's tile loop visits the
// listed blocks — each cut into tiles of at most 64 positions from its start — and skips
// tiles in which the mask allows no pair with the CTA's own rows. The forward and dQ
// kernels own query rows and walk key tiles (the row lists); the dK/dV kernels own key
// rows and walk query tiles (the transposed lists). The Hopper forward takes the same
// tiles from a schedule its CTA decodes together into shared memory (SparseKeySchedule);
// with head_dim 64, whose pipeline stage holds 128 keys, it fills a stage with two tiles.
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

// Positions per tile of the walkers: every kernel's key tile (or query tile) is 64 wide,
// or (the Hopper forward of head_dim 64) holds two such tiles.
inline constexpr int kSparseTileRows = 64;

// The tiles of list entries [entry, end) of one (mask head, block): each listed block cut
// into tiles of at most 64 positions from its start (blocks of 64 or 128 cut exactly),
// skipping tiles without an allowed pair with the CTA's own positions [own_first,
// own_last]. kOwnQueries: the CTA owns queries and walks the key blocks of a query block
// (the row lists); else it owns keys and walks the query blocks listing a key block (the
// transposed lists). The next entry's index and flag are loaded one tile ahead, so the
// list's global-memory latency hides behind the current tile's work instead of stalling
// the prefetch of the next tile; everything else comes from the launch parameters, which
// keeps the walker to a few registers.
template <bool kOwnQueries>
struct SparseTileWalker {
  std::int64_t entry = 0, end = 0;
  std::int64_t own_first = 0, own_last = 0;
  std::int64_t position = 0, block_end = 0;
  std::int32_t ahead_index = 0;  // entry's values (when entry < end)
  std::uint8_t ahead_flag = 0;
  bool block_partial = false;

  __device__ __forceinline__ void load_ahead(const PatternLaunch& p) {
    if (entry < end) {
      ahead_index = kOwnQueries ? p.sparse.column_indices[entry] : p.sparse.row_indices[entry];
      ahead_flag = kOwnQueries ? p.sparse.row_partial[entry] : p.sparse.column_partial[entry];
    }
  }

  __device__ __forceinline__ bool next(const PatternLaunch& p, SparseTile& out) {
    const std::int64_t block = kOwnQueries ? p.sparse.block_k : p.sparse.block_q;
    for (;;) {
      if (position >= block_end) {
        if (entry >= end) return false;
        position = static_cast<std::int64_t>(ahead_index) * block;
        block_end = position + block < p.seq_len ? position + block : p.seq_len;
        block_partial = ahead_flag != 0;
        ++entry;
        load_ahead(p);
      }
      out.start = position;
      out.count = static_cast<int>(block_end - position < kSparseTileRows ? block_end - position : kSparseTileRows);
      out.partial = block_partial;
      position += out.count;
      const Band band = tile_band(p, out.partial);
      const std::int64_t first = out.start, last = out.start + out.count - 1;
      if (kOwnQueries ? band_meets(band, own_first, own_last, first, last)
                      : band_meets(band, first, last, own_first, own_last)) {
        return true;
      }
    }
  }
};
using SparseKeyTiles = SparseTileWalker<true>;
using SparseQueryTiles = SparseTileWalker<false>;

__device__ __forceinline__ int sparse_mask_head(const PatternLaunch& p, int head) {
  return p.sparse.mask_heads == 1 ? 0 : head;
}

// A key tile of SparseKeySchedule: its first key, its keys (1 to 64) and the band's
// diagonals (TileDiagonals) relative to the CTA's first query. In shared memory it is one
// int4 {start (low, high word), count, low | high << 16} (diagonals fit 16 bits, clamped).
struct ScheduledKeyTile {
  std::int64_t start;
  int count, low, high;
};

__device__ __forceinline__ int4 pack_key_tile(const ScheduledKeyTile& t) {
  return {static_cast<int>(static_cast<std::uint32_t>(t.start)), static_cast<int>(t.start >> 32), t.count,
          static_cast<int>((static_cast<std::uint32_t>(t.low) & 0xffffu) | (static_cast<std::uint32_t>(t.high) << 16))};
}

__device__ __forceinline__ ScheduledKeyTile unpack_key_tile(int4 w) {
  return {static_cast<std::int64_t>(static_cast<std::uint32_t>(w.x)) | (static_cast<std::int64_t>(w.y) << 32), w.z,
          static_cast<int>(static_cast<std::int16_t>(w.w & 0xffff)), w.w >> 16};
}

// The key tiles of a Hopper forward CTA's query rows: the same tiles, in the same order,
// as SparseKeyTiles, but decoded by the whole CTA together into a ring in shared memory,
// kThreads candidate (entry, tile of its block) pairs per pass, one per thread, compacted
// by ballot, with their band diagonals precomputed. The tile loop then pops a tile with
// one shared-memory read. (With SparseKeyTiles every thread repeated the search, the
// 64-bit arithmetic and a global load whose latency the second tile of a head_dim-64
// stage waited for: the forward ran at 1.22x dense time x density even at density 0.5,
// against 1.09x with the schedule, H100, docs/benchmarks.md.) Every member function is
// called by all threads of the CTA (refill synchronizes them); the state is the same in
// every thread.
template <int kThreads>
struct SparseKeySchedule {
  static constexpr int kWarps = kThreads / 32;
  // A pass writes at most kThreads tiles after the at most kThreads - 1 not yet popped.
  static constexpr int kSlots = 2 * kThreads;
  static constexpr int kSharedBytes = kSlots * static_cast<int>(sizeof(int4)) + kWarps * 4;

  int4* ring = nullptr;  // kSlots packed tiles (pack_key_tile), then kWarps counts
  int* warp_counts = nullptr;
  std::int64_t first_entry = 0;  // the list's first entry
  std::int64_t q_begin = 0, own_last = 0;
  int tiles_per_entry = 1;                 // ceil(block_k / 64)
  int candidates = 0, next_candidate = 0;  // (entry, tile of the block) pairs, in list order
  int diagonal_limit = 0;
  unsigned decoded = 0, popped = 0;

  // One pass: candidates [next_candidate, next_candidate + kThreads), one per thread.
  __device__ __forceinline__ void decode(const PatternLaunch& p) {
    const int candidate = next_candidate + static_cast<int>(threadIdx.x);
    bool keep = false;
    ScheduledKeyTile tile{};
    if (candidate < candidates) {
      const int offset = tiles_per_entry == 1 ? 0 : candidate % tiles_per_entry;
      const std::int64_t entry = first_entry + (tiles_per_entry == 1 ? candidate : candidate / tiles_per_entry);
      const std::int64_t block_start = static_cast<std::int64_t>(p.sparse.column_indices[entry]) * p.sparse.block_k;
      const bool partial = p.sparse.row_partial[entry] != 0;
      std::int64_t block_end = block_start + p.sparse.block_k;
      block_end = block_end < p.seq_len ? block_end : p.seq_len;
      tile.start = block_start + std::int64_t{kSparseTileRows} * offset;
      const std::int64_t count = block_end - tile.start;
      tile.count = static_cast<std::int32_t>(count < kSparseTileRows ? count : kSparseTileRows);
      const Band band = tile_band(p, partial);
      keep = count > 0 && band_meets(band, q_begin, own_last, tile.start, tile.start + tile.count - 1);
      const TileDiagonals diagonals = tile_diagonals(band, q_begin, tile.start, diagonal_limit);
      tile.low = diagonals.low;
      tile.high = diagonals.high;
    }
    const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
    const unsigned kept = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) warp_counts[warp] = __popc(kept);
    __syncthreads();
    unsigned before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const unsigned n = static_cast<unsigned>(warp_counts[w]);
      before += w < warp ? n : 0u;
      total += n;
    }
    if (keep) ring[(decoded + before + __popc(kept & ((1u << lane) - 1u))) % kSlots] = pack_key_tile(tile);
    decoded += total;
    next_candidate += kThreads;
    __syncthreads();  // the ring is read next; warp_counts are rewritten by the next pass
  }

  // At least `wanted` (<= kThreads) tiles decoded and not popped, or the list's end.
  __device__ __forceinline__ void refill(const PatternLaunch& p, int wanted) {
    while (decoded - popped < static_cast<unsigned>(wanted) && next_candidate < candidates) decode(p);
  }

  // The next tile into `tile` (count 0 past the end).
  __device__ __forceinline__ void pop(ScheduledKeyTile& tile) {
    if (popped < decoded) {
      tile = unpack_key_tile(ring[popped % kSlots]);
      ++popped;
    } else {
      tile.count = 0;
    }
  }
};

// The schedule of query block `query_block` for query head `head`, seen from the CTA's
// queries [q_begin, own_last]; `shared` (a __shared__ array, 16-byte aligned) holds
// SparseKeySchedule::kSharedBytes; diagonals are clamped to +-diagonal_limit (< 2^15).
// Nothing is decoded yet (refill).
template <int kThreads>
__device__ __forceinline__ SparseKeySchedule<kThreads> sparse_key_schedule(const PatternLaunch& p, int head,
                                                                           std::int64_t query_block,
                                                                           std::int64_t q_begin, std::int64_t own_last,
                                                                           int diagonal_limit, void* shared) {
  const std::int64_t list = sparse_mask_head(p, head) * p.sparse.query_blocks + query_block;
  SparseKeySchedule<kThreads> schedule;
  schedule.ring = static_cast<int4*>(shared);
  schedule.warp_counts = reinterpret_cast<int*>(schedule.ring + SparseKeySchedule<kThreads>::kSlots);
  schedule.first_entry = p.sparse.row_offsets[list];
  schedule.tiles_per_entry = static_cast<int>((p.sparse.block_k + kSparseTileRows - 1) / kSparseTileRows);
  schedule.candidates =
      static_cast<int>((p.sparse.row_offsets[list + 1] - schedule.first_entry) * schedule.tiles_per_entry);
  schedule.q_begin = q_begin;
  schedule.own_last = own_last;
  schedule.diagonal_limit = diagonal_limit;
  return schedule;
}

// The key tiles of query block `query_block` for query head `head`, seen from the CTA's
// queries [own_first, own_last].
__device__ __forceinline__ SparseKeyTiles sparse_key_tiles(const PatternLaunch& p, int head, std::int64_t query_block,
                                                           std::int64_t own_first, std::int64_t own_last) {
  const std::int64_t list = sparse_mask_head(p, head) * p.sparse.query_blocks + query_block;
  SparseKeyTiles walker;
  walker.entry = p.sparse.row_offsets[list];
  walker.end = p.sparse.row_offsets[list + 1];
  walker.own_first = own_first;
  walker.own_last = own_last;
  walker.load_ahead(p);
  return walker;
}

// The query tiles of the query blocks that list key block `key_block` for query head
// `head`, seen from the CTA's keys [own_first, own_last].
__device__ __forceinline__ SparseQueryTiles sparse_query_tiles(const PatternLaunch& p, int head, std::int64_t key_block,
                                                               std::int64_t own_first, std::int64_t own_last) {
  const std::int64_t list = sparse_mask_head(p, head) * p.sparse.key_blocks + key_block;
  SparseQueryTiles walker;
  walker.entry = p.sparse.column_offsets[list];
  walker.end = p.sparse.column_offsets[list + 1];
  walker.own_first = own_first;
  walker.own_last = own_last;
  walker.load_ahead(p);
  return walker;
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
