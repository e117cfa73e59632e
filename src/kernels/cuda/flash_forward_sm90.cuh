// Hopper (sm_90a) forward of block-sparse attention, and the pieces every Hopper forward
// shares (the online softmax of a score tile, the packing of probabilities into wgmma A
// fragments, the swizzled tile layout). The matrix products run on warpgroup MMAs (wgmma)
// that read Q, K and V straight from shared memory through matrix descriptors. One
// warpgroup (64 query rows of one query block) per CTA, two CTAs per SM; its key tiles come
// from a schedule of the block's listed key blocks (block_sparse_tiles.cuh), two stages,
// each tile's products in sequence. Dilated launches run the warp-specialised kernel of
// flash_forward_sm90_ws.cuh, which pipelines the same steps.
//
// Shared tiles use Hopper's canonical 128-byte-swizzle layout: a tile of `rows` rows is
// stored as kHeadDim / 64 column blocks of rows x 128 bytes, 16-byte chunk c of row r at
// chunk c ^ (r mod 8). Q and K are K-major operands (S = Q K^T); V is the MN-major B
// operand of O += P V, with P in registers.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/block_sparse_tiles.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_forward.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace longnet::kernels::cuda {

template <int kHeadDim>
struct Sm90ForwardTile {
  // One warpgroup per CTA: the two CTAs of an SM drift out of phase, so one's softmax
  // (special-function unit) overlaps the other's MMAs.
  static constexpr int kWarpGroups = 1;
  // Two CTAs per SM: measured faster than three (which spills) for head_dim 64.
  static constexpr int kMinBlocksPerSm = 2;
  static constexpr int kThreads = kWarpGroups * 128;
  static constexpr int kBlockM = 64 * kWarpGroups;           // queries per CTA
  static constexpr int kBlockN = kHeadDim <= 64 ? 128 : 64;  // keys per stage
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kStageBytes = kBlockN * kHeadDim * 2;  // one of K or V
  static constexpr int kStages = 2;
  static constexpr int kSharedBytes = kQBytes + 2 * kStages * kStageBytes + 1024;  // + alignment slack
};

// The online softmax keeps a row's reference maximum until a tile raises it by more than
// this (base 2: the probabilities of the tiles in between stay below 2^8, exact in
// float and far inside bf16's and fp16's range), so most tiles rescale nothing.
inline constexpr float kRescaleThresholdLog2 = 8.0f;

// Online softmax of one score tile of a warpgroup (64 rows x kSTiles * 8 keys, this
// thread's fragments `s`), scores in base 2 after scale_log2: `dropped(n, e)` says which
// elements the mask removes. `row_max` is each row's reference maximum: the exponentials
// are taken against it and it rises only when a tile's maximum exceeds it by more than
// kRescaleThresholdLog2 in some row of the warp (FlashAttention-4's conditional
// rescaling; the result is the same function, as the output and the row sum share the
// reference). Leaves the probabilities in `s` and, when the reference rose (the return
// value, uniform per warp), the factor by which the output accumulated so far must be
// scaled in `correction` (otherwise 1).
template <int kSTiles, class Dropped>
__device__ __forceinline__ bool online_softmax_tile(float (&s)[kSTiles * 4], float (&row_max)[2], float (&row_sum)[2],
                                                    float (&correction)[2], float sign, float scale_log2,
                                                    bool needs_mask, Dropped dropped) {
  if (sign < 0.0f) {  // uniform: a negative scale (rare) folded into the scores
#pragma unroll
    for (int i = 0; i < kSTiles * 4; ++i) s[i] = -s[i];
  }
  if (needs_mask) {  // uniform per warp: only the tiles on a boundary pay for the mask
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (dropped(n, e)) s[4 * n + e] = -INFINITY;
      }
    }
  }
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[4 * n + e]);
  }
  bool rises = false;  // a row's maximum exceeds its reference by more than the threshold
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = warp_group_max(tile_max[r]);
    rises = rises || (tile_max[r] - row_max[r]) * scale_log2 > kRescaleThresholdLog2;  // -inf reference: +inf
  }
  const bool rescale = __any_sync(0xffffffffu, rises);
  float reference[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    correction[r] = 1.0f;
    if (rescale) {
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      correction[r] = row_max[r] == -INFINITY ? 0.0f : fast_exp2((row_max[r] - new_max) * scale_log2);
      row_max[r] = new_max;
      row_sum[r] *= correction[r];
    }
    reference[r] = row_max[r] == -INFINITY ? 0.0f : row_max[r] * scale_log2;
  }
#pragma unroll
  for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[4 * n + e] = fast_exp2(fmaf(s[4 * n + e], scale_log2, -reference[e / 2]));
      row_sum[e / 2] += s[4 * n + e];
    }
  }
  return rescale;
}

// The probabilities of a score tile as the register A fragments of O += P V: the score
// fragments of two adjacent n-tiles form one k-step's fragment.
template <class Element, int kSTiles>
__device__ __forceinline__ void pack_probabilities(const float (&s)[kSTiles * 4], std::uint32_t (&a)[kSTiles / 2][4]) {
#pragma unroll
  for (int kk = 0; kk < kSTiles / 2; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) a[kk][r] = Mma<Element>::pack(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }
}

// O += P V for the V tile of kKeys keys whose descriptor is `v_tile_desc` (keys x
// kHeadDim, D contiguous: the MN-major B operand, matrix_descriptor(v_tile, kKeys * 128,
// 1024)), P in registers (`a`, from pack_probabilities); issued and committed, not waited
// for.
template <class Element, int kHeadDim, int kKeys>
__device__ __forceinline__ void issue_pv_product_at(float (&o)[kHeadDim / 2], const std::uint32_t (&a)[kKeys / 16][4],
                                                    std::uint64_t v_tile_desc) {
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    const std::uint64_t b = descriptor_at(v_tile_desc, kk * 16 * 64 * 2);
    if constexpr (kHeadDim == 64) {
      wgmma_rs_m64n64k16<Element, 1>(o, a[kk], b, 1);
    } else {
      wgmma_rs_m64n128k16<Element, 1>(o, a[kk], b, 1);
    }
  }
  wgmma_commit();
}

// The same from the V tile's address.
template <class Element, int kHeadDim, int kKeys>
__device__ __forceinline__ void issue_pv_product(float (&o)[kHeadDim / 2], const std::uint32_t (&a)[kKeys / 16][4],
                                                 const Element* v_tile) {
  issue_pv_product_at<Element, kHeadDim, kKeys>(o, a, matrix_descriptor(v_tile, kKeys * 128, 1024));
}

// Scales this thread's output fragments (rows group and group + 8 of its warp) by the
// online softmax's corrections.
template <int kOTiles>
__device__ __forceinline__ void rescale_output_rows(float (&o)[kOTiles * 4], const float (&correction)[2]) {
#pragma unroll
  for (int n = 0; n < kOTiles; ++n) {
    o[4 * n + 0] *= correction[0];
    o[4 * n + 1] *= correction[0];
    o[4 * n + 2] *= correction[1];
    o[4 * n + 3] *= correction[1];
  }
}

// Keeps the compiler from reusing the registers of a wgmma's A operand before the wait
// that ends the asynchronous read.
template <int kRows>
__device__ __forceinline__ void wgmma_fence_operands(std::uint32_t (&a)[kRows][4]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+r"(a[i][r])::"memory");
  }
}

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of `rows` rows.
template <int kHeadDim>
__device__ __forceinline__ int sw128_offset(int rows, int row, int chunk) {
  return (chunk >> 3) * rows * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// This thread's 16-byte chunk of rows r + i * kRowsPerPass (i < kRows / kRowsPerPass) of a
// tile, into a swizzled stage by cp.async: `stage` at row r's chunk (sw128_offset), so the
// other rows are whole swizzle periods further (kRowsPerPass is a multiple of its 8 rows);
// `source` at row r, stepped by `row_stride` elements a row; row r + i * kRowsPerPass is
// copied while i * kRowsPerPass < rows_left, else zero-filled (nothing read). Working out
// each row's address and bound from its index cost ~16 instructions a copy, at D = 64 a
// fifth of the SM's issue slots next to the consumers'.
template <int kRows, int kRowsPerPass, class Element>
__device__ __forceinline__ void copy_rows_stepped(Element* stage, const Element* source, std::int64_t row_stride,
                                                  int rows_left) {
  static_assert(kRowsPerPass % 8 == 0, "a pass of rows spans whole swizzle periods");
#pragma unroll
  for (int pass = 0; pass < kRows / kRowsPerPass; ++pass) {
    copy_async_16(stage + pass * kRowsPerPass * 64, source, pass * kRowsPerPass < rows_left);
    source += kRowsPerPass * row_stride;
  }
}

template <class Element, int kHeadDim>
__global__ void __launch_bounds__(Sm90ForwardTile<kHeadDim>::kThreads, Sm90ForwardTile<kHeadDim>::kMinBlocksPerSm)
    flash_block_sparse_forward_sm90_kernel(const __grid_constant__ PatternLaunch p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tile = Sm90ForwardTile<kHeadDim>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kChunks = Tile::kChunks;
  constexpr int kThreads = Tile::kThreads;
  constexpr int kRowsPerPass = kThreads / kChunks;
  constexpr int kSTiles = kBlockN / 8;   // score n-tiles per thread
  constexpr int kOTiles = kHeadDim / 8;  // output n-tiles per thread
  // A stage holds kHalves tiles of the schedule (64 keys each, from any listed blocks), so
  // the 128-key stages of head_dim 64 are full even with isolated 64-blocks.
  constexpr int kSparseTile = kSparseTileRows, kHalves = kBlockN / kSparseTile;
  extern __shared__ unsigned char shared_raw[];
  // Swizzled tiles must start at 1024-byte boundaries. The schedule's ring comes first
  // (addressed from shared_raw, so the compiler knows it for shared memory).
  using Schedule = SparseKeySchedule<kThreads>;
  constexpr int kScheduleBytes = Schedule::kSharedBytes;
  unsigned char* shared_base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(shared_raw + kScheduleBytes) + 1023) & ~std::uintptr_t{1023});
  Element* sQ = reinterpret_cast<Element*>(shared_base);
  constexpr int kStages = Tile::kStages;
  Element* sK = reinterpret_cast<Element*>(shared_base + Tile::kQBytes);  // [kStages][kBlockN x D]
  Element* sV = sK + kStages * kBlockN * kHeadDim;                        // [kStages][kBlockN x D]

  // This CTA's query rows q_begin + i < query_limit of head h (rows of the whole sequence).
  const std::int64_t per_head = p.sparse.query_blocks * p.sparse.tiles_per_block;
  const int h = p.head_begin + static_cast<int>(blockIdx.x / per_head);
  const SparseRows rows = sparse_rows(p, blockIdx.x % per_head, p.sparse.block_q, kBlockM);
  const std::int64_t q_begin = rows.begin, query_limit = rows.end;
  Schedule schedule =
      sparse_key_schedule<kThreads>(p, h, rows.block, rows.begin, rows.end - 1, kBlockM + kBlockN, shared_raw);

  const std::int64_t b = blockIdx.y;
  const int kv_head = h / (p.heads / p.kv_heads);

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int warp_group = warp / 4;
  const int group = lane / 4, thread_in_group = lane % 4;
  const int chunks_used = p.head_dim / 8;
  const int copy_row = tid / kChunks, copy_chunk = tid % kChunks;
  const bool chunk_used = copy_chunk < chunks_used;
  const std::int64_t q_stride = p.q.seq_stride, k_stride = p.k.seq_stride, v_stride = p.v.seq_stride;
  const Element* q_copy = p.q.row<const Element>(b, 0, h) + copy_chunk * 8;
  const Element* k_copy = p.k.row<const Element>(b, 0, kv_head) + copy_chunk * 8;
  const Element* v_copy = p.v.row<const Element>(b, 0, kv_head) + copy_chunk * 8;

  // Row r of a block-sparse stage is row r % 64 of tile t[r / 64]: this thread's rows of
  // a tile are copy_row + 16 i, one 64-bit product per tile for their addresses.
  auto load_sparse = [&](const ScheduledKeyTile(&t)[kHalves], int stage) {
    Element* k_stage = sK + stage * kBlockN * kHeadDim;
    Element* v_stage = sV + stage * kBlockN * kHeadDim;
    const Element* k_part[kHalves];
    const Element* v_part[kHalves];
#pragma unroll
    for (int half = 0; half < kHalves; ++half) {
      k_part[half] = k_copy + (t[half].start + copy_row) * k_stride;
      v_part[half] = v_copy + (t[half].start + copy_row) * v_stride;
    }
#pragma unroll
    for (int pass = 0; pass < kBlockN / kRowsPerPass; ++pass) {
      const int row = copy_row + pass * kRowsPerPass;
      // copy_row < kRowsPerPass, which divides 64: the part is a compile-time index.
      constexpr int kPassesPerPart = kSparseTile / kRowsPerPass;
      const int half = pass / kPassesPerPart, step = (pass % kPassesPerPart) * kRowsPerPass;
      const bool valid = chunk_used && copy_row + step < t[half].count;
      copy_async_16(k_stage + sw128_offset<kHeadDim>(kBlockN, row, copy_chunk),
                    valid ? k_part[half] + step * k_stride : k_copy, valid);
      copy_async_16(v_stage + sw128_offset<kHeadDim>(kBlockN, row, copy_chunk),
                    valid ? v_part[half] + step * v_stride : v_copy, valid);
    }
  };
  // The schedule's next kHalves tiles (count 0 past the end); whether there is one.
  auto next_tiles = [&](ScheduledKeyTile(&t)[kHalves]) {
    schedule.refill(p, kHalves);
#pragma unroll
    for (int half = 0; half < kHalves; ++half) schedule.pop(t[half]);
    return t[0].count > 0;
  };
#pragma unroll
  for (int pass = 0; pass < kBlockM / kRowsPerPass; ++pass) {
    const int row = copy_row + pass * kRowsPerPass;
    const std::int64_t i = q_begin + row;
    const bool valid = chunk_used && i < query_limit;
    copy_async_16(sQ + sw128_offset<kHeadDim>(kBlockM, row, copy_chunk), q_copy + (valid ? i : 0) * q_stride, valid);
  }
  // A negative scale is a positive one with negated MMA inputs: wgmma negates A for us
  // only from shared memory, so fold the sign into the scores instead.
  const float sign = p.scale_log2 < 0.0f ? -1.0f : 1.0f;
  const float scale_log2 = fmaxf(fabsf(p.scale_log2), 1e-30f);
  float o[kOTiles * 4];
#pragma unroll
  for (int i = 0; i < kOTiles * 4; ++i) o[i] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int warp_row = warp_group * 64 + (warp % 4) * 16;  // this warp's first row in the CTA tile

  // S = Q K^T for the key tile in `stage` (64 rows of this warpgroup x kBlockN keys),
  // issued and committed, not waited for.
  auto issue_scores = [&](float(&s)[kSTiles * 4], int stage) {
    const Element* k_tile = sK + stage * kBlockN * kHeadDim;
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks) {
      const std::uint64_t a =
          matrix_descriptor(sQ + (ks / 4) * kBlockM * 64 + warp_group * 64 * 64 + (ks % 4) * 16, 16, 1024);
      const std::uint64_t bdesc = matrix_descriptor(k_tile + (ks / 4) * kBlockN * 64 + (ks % 4) * 16, 16, 1024);
      if constexpr (kBlockN == 128) {
        wgmma_ss_m64n128k16<Element, 0, 0>(s, a, bdesc, ks > 0);
      } else {
        wgmma_ss_m64n64k16<Element, 0, 0>(s, a, bdesc, ks > 0);
      }
    }
    wgmma_commit();
  };

  // Key tiles from the schedule, double-buffered, each tile's products in sequence.
  ScheduledKeyTile current[kHalves] = {}, following[kHalves] = {};
  bool have_tile = next_tiles(current);
  if (have_tile) load_sparse(current, 0);
  copy_async_commit();
  for (int stage = 0; have_tile; stage ^= 1) {
    const bool prefetch = next_tiles(following);
    if (prefetch) {
      load_sparse(following, stage ^ 1);
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    fence_proxy_async();  // the copies above are read next by the tensor cores
    __syncthreads();
    float s[kSTiles * 4];
    wgmma_fence();
    issue_scores(s, stage);
    wgmma_wait<0>();
    wgmma_fence_registers(s);
    // Per 64-key part of the stage (column c is column c % 64 of part c / 64): kept iff
    // c % 64 < part_limit and part_low <= c % 64 - row <= part_high.
    int part_limit[kHalves], part_low[kHalves], part_high[kHalves];
    bool needs_mask = false;
#pragma unroll
    for (int half = 0; half < kHalves; ++half) {
      part_limit[half] = current[half].count;
      part_low[half] = current[half].low;
      part_high[half] = current[half].high;
      // The band covers this warp's 16 rows x the 64 keys iff low <= 0 - (warp_row + 15)
      // and 63 - warp_row <= high (the clamp to +-(kBlockM + kBlockN) keeps both exact).
      needs_mask = needs_mask || part_limit[half] < kSparseTile || part_low[half] > -(warp_row + 15) ||
                   part_high[half] < kSparseTile - 1 - warp_row;
    }
    float correction[2];
    online_softmax_tile<kSTiles>(s, row_max, row_sum, correction, sign, scale_log2, needs_mask, [&](int n, int e) {
      const int c = 8 * n + 2 * thread_in_group + (e & 1);
      const int row = warp_row + group + 8 * (e / 2);
      const int half = n / (kSparseTile / 8), cc = c % kSparseTile;  // c / 64, at compile time
      return cc >= part_limit[half] || cc - row > part_high[half] || cc - row < part_low[half];
    });
    rescale_output_rows<kOTiles>(o, correction);
    std::uint32_t a[kBlockN / 16][4];
    pack_probabilities<Element, kSTiles>(s, a);
    wgmma_fence();
    issue_pv_product<Element, kHeadDim, kBlockN>(o, a, sV + stage * kBlockN * kHeadDim);
    wgmma_wait<0>();
    wgmma_fence_registers(o);
    __syncthreads();  // the next iteration's copies overwrite the stage just read
#pragma unroll
    for (int half = 0; half < kHalves; ++half) current[half] = following[half];
    have_tile = prefetch;
  }
  copy_async_wait<0>();  // a query block without keys still copied Q

  {
    const std::int64_t i = q_begin + warp_row + group;
    const std::int64_t rows[2] = {i, i + 8};
    const bool valid[2] = {i < query_limit, i + 8 < query_limit};
    const float max_log2[2] = {row_max[0] * scale_log2, row_max[1] * scale_log2};
    finish_query_rows<Element, kHeadDim>(p, b, h, rows, valid, row_sum, max_log2,
                                         [&](int r, int n, int j) { return o[4 * n + 2 * r + j]; });
  }
#else
  (void)p;
  __trap();  // built without sm_90a: never launched (the host checks the device first)
#endif
}

template <class Element, int kHeadDim>
void launch_flash_block_sparse_forward_sm90(const PatternLaunch& p, cudaStream_t stream) {
  using Tile = Sm90ForwardTile<kHeadDim>;
  const dim3 grid(static_cast<unsigned>(p.total_ctas), static_cast<unsigned>(p.batch));
  auto kernel = flash_block_sparse_forward_sm90_kernel<Element, kHeadDim>;
  // Plus the schedule's ring (before the tiles).
  const int shared_bytes = Tile::kSharedBytes + SparseKeySchedule<Tile::kThreads>::kSharedBytes;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes);
  kernel<<<grid, Tile::kThreads, shared_bytes, stream>>>(p);
}

}  // namespace longnet::kernels::cuda
