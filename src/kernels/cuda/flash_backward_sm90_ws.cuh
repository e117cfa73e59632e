// Hopper (sm_90a) backward of dilated attention with warp specialisation, for dilated
// launches. The products are those of flash_backward_sm90.cuh (transposed form: a CTA owns
// 128 keys of one virtual sequence for one kv head and walks the 64-query tiles of every
// query head of its group), but the SIMT work that is not attention arithmetic leaves the
// warpgroups that run the products:
//   - a producer warpgroup (few registers) copies K and V of each head and, into a ring of
//     kStages stages, the Q, dO and row-term tiles of each query step (cp.async reading the
//     dilated rows in place, signalled on mbarriers), and adds each step's dQ tile, which
//     the consumers leave in shared memory, to the fp32 dQ accumulator (float4 atomics,
//     kDqBuffers buffers); in deterministic launches the key tiles of a sequence add to
//     each query tile in key-tile order (PatternLaunch::dq_order), so the sums repeat bit
//     for bit;
//   - two consumer warpgroups of 64 keys each (most registers) compute S^T, dP^T, P^T,
//     dS^T, dV, dK (registers) and dQ over their own 64 keys; the producer adds the two
//     partial dQ tiles, so there is still one atomic per dQ element per 128 keys.
// In the one-role kernel the copies' address arithmetic and dQ's shuffles and atomics were
// a quarter of the issued instructions of warps that were bound by issuing (two warps per
// scheduler). The consumers never wait for each other (each reads only its own dS^T), so
// one's exponentials overlap the other's products.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/backward_order.cuh"
#include "kernels/cuda/flash_backward_sm90.cuh"
#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_forward_sm90.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/mma_sm80.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace longnet::kernels::cuda {

// Head dim 64 only: at 128 the consumers need more registers (dK, dV and the two score
// tiles) than the 168-register launch allows them beside a producer, so D = 128 launches
// keep the one-role kernel.
template <int kHeadDim>
struct Sm90WarpSpecializedBackwardTile {
  static_assert(kHeadDim == 64, "the warp-specialised backward is built for head dim 64");
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (kConsumers + 1);  // warpgroup 0 is the producer
  static constexpr int kBlock = 64;                        // keys per consumer, queries per step
  static constexpr int kKeys = kBlock * kConsumers;        // keys per CTA
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kTile = kBlock * kHeadDim;  // elements of one 64-row tile
  static constexpr int kStages = 3;
  static constexpr int kDqBuffers = 2;
  // fp32 row pitch of a dQ tile: 8 floats of padding put the rows of a half-warp's
  // fragment stores in different banks. A dQ buffer holds one tile per consumer.
  static constexpr int kDqPitch = kHeadDim + 8;
  // Registers per thread after reallocation, within the 168 the CTA gets at launch. The
  // producer's unrolled copies and adds keep their addresses in ~100 registers (fewer
  // spill); the consumers need 200 (the one-role kernel: 232, with the copies).
  static constexpr int kProducerRegisters = 104;
  static constexpr int kConsumerRegisters = 200;
  static_assert(kProducerRegisters + kConsumers * kConsumerRegisters <= 65536 / kThreads / 8 * 8 * (kConsumers + 1),
                "register reallocation exceeds the CTA's registers");
  // mbarriers: K/V full and empty, full and empty per query stage and per dQ buffer.
  static constexpr int kBarriers = 2 + 2 * kStages + 2 * kDqBuffers;
  static constexpr int kHeaderBytes = kBarriers * 8;
  static constexpr int kSharedBytes = kHeaderBytes + 1024 +                              // barriers, alignment slack
                                      2 * kKeys * kHeadDim * 2 +                         // K, V
                                      2 * kStages * kTile * 2 +                          // Q, dO stages
                                      kKeys * kBlock * 2 +                               // dS^T
                                      kDqBuffers * kConsumers * kBlock * kDqPitch * 4 +  // dQ
                                      kStages * kBlock * 8;                              // row terms stages
};

template <class Element, int kHeadDim>
struct WarpSpecializedBackwardShared {
  using Tile = Sm90WarpSpecializedBackwardTile<kHeadDim>;
  std::uint64_t* kv_full;
  std::uint64_t* kv_empty;
  std::uint64_t* q_full;  // [kStages]: Q, dO and row terms of a query step
  std::uint64_t* q_empty;
  std::uint64_t* dq_full;  // [kDqBuffers]
  std::uint64_t* dq_empty;
  Element* k;     // kKeys rows
  Element* v;     // kKeys rows
  Element* q;     // [kStages][kTile]
  Element* dout;  // [kStages][kTile]
  Element* ds;    // [kConsumers][kBlock keys x kBlock queries]
  float* dq;      // [kDqBuffers][kConsumers][kBlock][kDqPitch]
  float* terms;   // [kStages][2][kBlock]: lse · log2 e, then delta / alpha, of a step's rows

  __device__ __forceinline__ explicit WarpSpecializedBackwardShared(unsigned char* raw) {
    auto* barriers = reinterpret_cast<std::uint64_t*>(raw);
    kv_full = barriers;
    kv_empty = barriers + 1;
    q_full = barriers + 2;
    q_empty = q_full + Tile::kStages;
    dq_full = q_empty + Tile::kStages;
    dq_empty = dq_full + Tile::kDqBuffers;
    // Aligned to 1024 bytes (the 128-byte swizzle's period) by an offset from `raw`, so
    // that the pointers stay shared-window pointers.
    unsigned char* tiles = raw + Tile::kHeaderBytes;
    tiles += (1024 - (shared_address(tiles) & 1023)) & 1023;
    k = reinterpret_cast<Element*>(tiles);
    v = k + Tile::kKeys * kHeadDim;
    q = v + Tile::kKeys * kHeadDim;
    dout = q + Tile::kStages * Tile::kTile;
    ds = dout + Tile::kStages * Tile::kTile;
    dq = reinterpret_cast<float*>(ds + Tile::kKeys * Tile::kBlock);
    terms = dq + Tile::kDqBuffers * Tile::kConsumers * Tile::kBlock * Tile::kDqPitch;
  }
};

// The rows of one head a CTA works on: its keys k_begin .. k_begin + 127 and the queries
// q_first .. L - 1 of the virtual sequence (tensor rows first_row + i * step).
struct BackwardHeadRows {
  bool active = false;
  std::int64_t first_row = 0, step = 1, length = 0;
};

// (32-bit arithmetic where the sequence allows: it runs at the start of every CTA in both
// roles, and the 64-bit divisions were subroutine calls.)
__device__ __forceinline__ BackwardHeadRows backward_head_rows(const PatternLaunch& p, int h, std::int64_t segment,
                                                               std::int64_t k_begin) {
  BackwardHeadRows rows;
  if (p.seq_len < 0x7fffffff) {
    const std::uint32_t rate = rate_32(p.pattern.dilation_rate);
    const std::int32_t offset = pattern_offset_32(p.mode, p.pattern_index, p.num_patterns, rate, h, p.heads);
    if (offset < 0) return rows;
    const std::int64_t start = segment * p.pattern.segment_length;
    const auto left = static_cast<std::uint32_t>(p.seq_len - start);
    const std::uint32_t segment_rows =
        p.pattern.segment_length < left ? static_cast<std::uint32_t>(p.pattern.segment_length) : left;
    rows.length = virtual_length_32(segment_rows, static_cast<std::uint32_t>(offset), rate);
    rows.first_row = start + offset;
    rows.step = p.pattern.dilation_rate;
    rows.active = k_begin < rows.length;
    return rows;
  }
  const std::int64_t offset =
      pattern_offset(p.mode, p.pattern_index, p.num_patterns, p.pattern.dilation_rate, h, p.heads);
  if (offset < 0) return rows;
  const VirtualSequence vs = virtual_sequence(p.seq_len, p.pattern, offset, segment);
  rows.length = vs.length;
  rows.first_row = vs.first_row;
  rows.step = vs.row_step;
  rows.active = k_begin < vs.length;
  return rows;
}

// How a backward launch adds dQ: atomically (the sums' order varies run to run), or in a
// fixed order through PatternLaunch::dq_order's turn counters (deterministic launches):
// key-tile order or rotated (non-causal; QueryWalk) or from the diagonal down (causal).
enum class DqOrder { kAtomic, kKeyTiles, kDiagonalDown, kRotated };

// Where a CTA's walk over a head's query tiles starts, and how it advances. Causal: from the
// CTA's first key (the diagonal) to the end. kRotated (deterministic non-causal launches
// whose sequences fit on the GPU at once): from the CTA's own diagonal to the end, then
// from 0 up to it, so that at every query tile the CTAs of a sequence arrive one after the
// other in a fixed cyclic order (the one the adds take) and none waits at the start; in
// key-tile order the CTA of tile t first waited for the t CTAs before it to add to tile 0.
template <DqOrder kOrder>
struct QueryWalk {
  std::int64_t first, steps, length;
  __device__ __forceinline__ QueryWalk(const PatternLaunch& p, std::int64_t k_begin, std::int64_t L, int block)
      : first(p.causal || kOrder == DqOrder::kRotated ? k_begin : 0), length(L) {
    steps = ((kOrder == DqOrder::kRotated ? L : L - first) + block - 1) / block;
  }
  __device__ __forceinline__ std::int64_t next(std::int64_t q, int block) const {
    q += block;
    if constexpr (kOrder == DqOrder::kRotated) {
      if (q >= length) q = 0;
    }
    return q;
  }
};

// The producer warpgroup (threads 0..127): per head, K and V, then for each query step its
// tiles into the ring, and the dQ tile of the step kStages - 1 before into the accumulator
// (so that two steps' copies are in flight while the consumers work); a head's remaining
// dQ tiles are added before the next head's K and V are copied.
// kOrder (deterministic launches): the fixed order dQ is added in (PatternLaunch::dq_order).
template <class Element, int kHeadDim, bool kDq, DqOrder kOrder>
__device__ __forceinline__ void backward_producer(const PatternLaunch& p,
                                                  const WarpSpecializedBackwardShared<Element, kHeadDim>& sm) {
  using Tile = Sm90WarpSpecializedBackwardTile<kHeadDim>;
  constexpr int kBlock = Tile::kBlock, kKeys = Tile::kKeys, kChunks = Tile::kChunks;
  // Each role works out its CTA's keys after its register reallocation: values computed
  // before it live across setmaxnreg in local memory (32 bytes of stack, reloaded).
  const BackwardCta cta = dilated_backward_cta<kOrder == DqOrder::kDiagonalDown>(p, kKeys);
  const std::int64_t segment = cta.segment, k_begin = cta.k_begin;
  constexpr int kRowsPerPass = 128 / kChunks;
  constexpr int kLag = Tile::kStages - 1;  // steps between a tile's copy and its dQ
  constexpr int kVectorsPerRow = kHeadDim / 4;
  constexpr int kDqRowsPerPass = 128 / kVectorsPerRow;
  const int tid = threadIdx.x;
  const int copy_row = tid / kChunks, copy_chunk = tid % kChunks;
  const bool chunk_used = copy_chunk < p.head_dim / 8;
  const int stage_offset = sw128_offset<kHeadDim>(kBlock, copy_row, copy_chunk);  // copy_rows_stepped
  const int dq_row = tid / kVectorsPerRow, dq_column = (tid % kVectorsPerRow) * 4;
  const bool dq_column_used = dq_column < p.head_dim;
  const float ds_scale = p.scale * p.output_scale;
  const int kv_head = cta.kv_head;
  const std::int64_t b = cta.batch;
  const int group_size = p.heads / p.kv_heads;
  // Deterministic launches: this CTA's place in every query tile's order of additions.
  // Non-causal: key-tile order (the CTA of key tile t adds t-th); the CTAs of a sequence's
  // key tiles have consecutive blockIdx.x, so a CTA waits only for CTAs started before it
  // (blocks are dispatched in index order). Causal: from the diagonal down, so that the CTA
  // whose walk starts at a query tile adds to it first: the query tile of rows r.. takes
  // key tiles floor(r / 128), ..., 0 in that order, and the tiles are dispatched in
  // descending order (backward_order.cuh). (In key-tile order the CTA of tile t, starting
  // at query tile 2t, waited for tile 0's CTA to walk there: causal 1M 27.9 -> 37.6 ms.)
  // Rotated (non-causal, QueryWalk): the diagonal-down order, continued cyclically.
  [[maybe_unused]] const int my_turn = static_cast<int>(k_begin / kKeys);
  constexpr bool kOrdered = kOrder != DqOrder::kAtomic;

  RingPosition<Tile::kStages> q_position;
  RingPosition<Tile::kDqBuffers> dq_position;
  unsigned kv_phase = 0;
  for (int h = kv_head * group_size; h < (kv_head + 1) * group_size; ++h) {
    const BackwardHeadRows rows = backward_head_rows(p, h, segment, k_begin);
    if (!rows.active) continue;
    const std::int64_t L = rows.length, step = rows.step;

    // K and V, once the consumers finished the previous head.
    mbarrier_wait(sm.kv_empty, kv_phase ^ 1);
    {
      const Element* k_copy = p.k.row<const Element>(b, rows.first_row, kv_head) + copy_chunk * 8;
      const Element* v_copy = p.v.row<const Element>(b, rows.first_row, kv_head) + copy_chunk * 8;
      const std::int64_t k_stride = step * p.k.seq_stride, v_stride = step * p.v.seq_stride;
      const int at = sw128_offset<kHeadDim>(kKeys, copy_row, copy_chunk);
      const int keys_left = chunk_used ? static_cast<int>(L - k_begin) - copy_row : 0;
      copy_rows_stepped<kKeys, kRowsPerPass>(sm.k + at, k_copy + (k_begin + copy_row) * k_stride, k_stride, keys_left);
      copy_rows_stepped<kKeys, kRowsPerPass>(sm.v + at, v_copy + (k_begin + copy_row) * v_stride, v_stride, keys_left);
    }
    mbarrier_arrive_on_copies(sm.kv_full);
    kv_phase ^= 1;

    const Element* q_base = p.q.row<const Element>(b, rows.first_row, h);
    const Element* do_base = p.dout.row<const Element>(b, rows.first_row, h);
    const float2* terms_row = static_cast<const float2*>(p.row_terms) + (b * p.heads + h) * p.seq_len + rows.first_row;
    const QueryWalk<kOrder> walk(p, k_begin, L, kBlock);
    const std::int64_t q_first = walk.first;
    [[maybe_unused]] const int key_tiles = static_cast<int>((L + kKeys - 1) / kKeys);  // CTAs of this head
    const std::int64_t q_row_stride = step * p.q.seq_stride, do_row_stride = step * p.dout.seq_stride;
    // This thread's copy sources for the next tile, advanced a tile a step.
    std::int64_t next_begin = q_first;
    const Element* q_next = q_base + copy_chunk * 8 + (q_first + copy_row) * q_row_stride;
    const Element* do_next = do_base + copy_chunk * 8 + (q_first + copy_row) * do_row_stride;
    const float2* terms_next = terms_row + (q_first + tid) * step;
    // A step's rows of this thread (copy_rows_stepped), bounds in 32 bits (the host keeps
    // seq_len < 2^31).
    auto load_next_queries = [&]() {
      mbarrier_wait(sm.q_empty + q_position.stage, q_position.phase ^ 1);
      const int stage = q_position.stage;
      const int rows_left = static_cast<int>(L - next_begin);
      const int left = chunk_used ? rows_left - copy_row : 0;
      copy_rows_stepped<kBlock, kRowsPerPass>(sm.q + stage * Tile::kTile + stage_offset, q_next, q_row_stride, left);
      copy_rows_stepped<kBlock, kRowsPerPass>(sm.dout + stage * Tile::kTile + stage_offset, do_next, do_row_stride,
                                              left);
      if (tid < kBlock) {
        // Rows past the end get lse = delta = 0 beside zero Q and dO rows: their P is 1,
        // but dO = 0 and dS = 0, so they add nothing, and their dQ is not added.
        float* terms_stage = sm.terms + stage * 2 * kBlock;
        copy_async_4(terms_stage + tid, &terms_next->x, tid < rows_left);
        copy_async_4(terms_stage + kBlock + tid, &terms_next->y, tid < rows_left);
      }
      mbarrier_arrive_on_copies(sm.q_full + stage);
      q_position.advance();
      next_begin += kBlock;
      q_next += kBlock * q_row_stride;
      do_next += kBlock * do_row_stride;
      terms_next += kBlock * step;
      if constexpr (kOrder == DqOrder::kRotated) {
        if (next_begin >= L) {  // wrap to the first query tile
          next_begin = 0;
          q_next = q_base + copy_chunk * 8 + copy_row * q_row_stride;
          do_next = do_base + copy_chunk * 8 + copy_row * do_row_stride;
          terms_next = terms_row + tid * step;
        }
      }
    };

    // dQ of the tile starting at query q_begin: the sum of the consumers' fp32 tiles,
    // scaled, added.
    float* dq_head = static_cast<float*>(p.dq_accumulator) +
                     ((b * p.seq_len + rows.first_row) * p.heads + h) * p.head_dim + dq_column;
    const std::int64_t dq_row_stride = step * p.heads * p.head_dim;
    const std::int64_t dq_pass_step = kDqRowsPerPass * dq_row_stride;
    std::int64_t reduce_begin = q_first;
    auto add_dq = [&]() {
      mbarrier_wait(sm.dq_full + dq_position.stage, dq_position.phase);
      [[maybe_unused]] int* const turn =
          kOrdered ? p.dq_order + (b * p.heads + h) * p.seq_len + rows.first_row + reduce_begin * step : nullptr;
      // kRotated: the CTA of key tile reduce_begin / 128 adds first, then the tiles below
      // it, wrapping around past tile 0 to the last (key_tiles of this head).
      [[maybe_unused]] int place = my_turn;
      if constexpr (kOrder == DqOrder::kDiagonalDown) place = static_cast<int>(reduce_begin / kKeys) - my_turn;
      if constexpr (kOrder == DqOrder::kRotated) {
        place = static_cast<int>(reduce_begin / kKeys) - my_turn;
        if (place < 0) place += key_tiles;
      }
      if constexpr (kOrdered) {
        if (tid == 0) wait_for_turn(turn, place);
        named_barrier_sync(3, 128);
      }
      constexpr int kPartial = kBlock * Tile::kDqPitch;  // one consumer's tile
      const float* buffer =
          sm.dq + dq_position.stage * Tile::kConsumers * kPartial + dq_row * Tile::kDqPitch + dq_column;
      // Rows dq_row + pass * kDqRowsPerPass: one pointer stepped a pass at a time, valid
      // while below the rows left (32 bits).
      float* target = dq_head + (reduce_begin + dq_row) * dq_row_stride;
      const int left = dq_column_used ? static_cast<int>(L - reduce_begin) - dq_row : 0;
#pragma unroll
      for (int pass = 0; pass < kBlock / kDqRowsPerPass; ++pass) {
        const float4 first = *reinterpret_cast<const float4*>(buffer + pass * kDqRowsPerPass * Tile::kDqPitch);
        const float4 second =
            *reinterpret_cast<const float4*>(buffer + kPartial + pass * kDqRowsPerPass * Tile::kDqPitch);
        const float4 value = make_float4(ds_scale * (first.x + second.x), ds_scale * (first.y + second.y),
                                         ds_scale * (first.z + second.z), ds_scale * (first.w + second.w));
        if (pass * kDqRowsPerPass < left) atomicAdd(reinterpret_cast<float4*>(target), value);
        target += dq_pass_step;
      }
      if constexpr (kOrdered) {
        // No __threadfence by every thread: the barrier orders the warpgroup's adds before
        // thread 0's st.release.gpu, whose release is cumulative over them (PTX memory
        // model), so the next CTA's ld.acquire sees them.
        named_barrier_sync(3, 128);
        if (tid == 0) pass_turn(turn, place + 1);
      }
      mbarrier_arrive(sm.dq_empty + dq_position.stage);
      dq_position.advance();
      reduce_begin = walk.next(reduce_begin, kBlock);
    };

    // (The walks that do not wrap keep their loops on the query index: counted loops cost
    // the hot instantiation 8 more bytes of stack.)
    constexpr bool kRotated = kOrder == DqOrder::kRotated;
    int copied = 0;
    for (; kRotated ? copied < walk.steps : next_begin < L; ++copied) {
      load_next_queries();
      if (kDq && copied >= kLag) add_dq();
    }
    if constexpr (kDq && kRotated) {
      for (int added = copied > kLag ? copied - kLag : 0; added < walk.steps; ++added) add_dq();
    } else if constexpr (kDq) {
      for (; reduce_begin < L;) add_dq();
    }
  }
  copy_async_wait_all();
}

// A consumer warpgroup (threads 128 (1 + consumer) ..): keys k_begin + 64 consumer .. + 63.
template <class Element, int kHeadDim, bool kStoreKv, bool kDq, DqOrder kOrder>
__device__ __forceinline__ void backward_consumer(const PatternLaunch& p,
                                                  const WarpSpecializedBackwardShared<Element, kHeadDim>& sm) {
  using Tile = Sm90WarpSpecializedBackwardTile<kHeadDim>;
  constexpr int kBlock = Tile::kBlock, kKeys = Tile::kKeys;
  const BackwardCta cta = dilated_backward_cta<kOrder == DqOrder::kDiagonalDown>(p, kKeys);  // (after setmaxnreg, as the producer)
  const std::int64_t segment = cta.segment, k_begin = cta.k_begin;
  constexpr int kDTiles = kHeadDim / 8;
  constexpr int kStageBytes = Tile::kTile * 2;
  const int kv_head = cta.kv_head;
  const std::int64_t b = cta.batch;
  const int group_size = p.heads / p.kv_heads;
  // Read through a shuffle so that the compiler knows it warp-uniform and keeps the
  // descriptors built from it in uniform registers.
  const int consumer = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128) - 1, 0);
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int g = lane / 4, t = lane % 4;
  const std::int64_t k_group = k_begin + consumer * kBlock;  // this warpgroup's first key
  const float ds_scale = p.scale * p.output_scale;
  const std::uint64_t q_rows_desc = matrix_descriptor(sm.q, 16, 1024);
  const std::uint64_t do_rows_desc = matrix_descriptor(sm.dout, 16, 1024);
  const std::uint64_t q_columns_desc = matrix_descriptor(sm.q, kBlock * 128, 1024);
  const std::uint64_t do_columns_desc = matrix_descriptor(sm.dout, kBlock * 128, 1024);
  Element* const ds_tile = sm.ds + consumer * kBlock * kBlock;  // this warpgroup's dS^T
  const std::uint64_t ds_desc = matrix_descriptor(ds_tile, kBlock * 128, 1024);
  // The shared addresses this lane gives stmatrix for dS^T: row j = lane % 8 of matrix
  // i = lane / 8 of a_ds[m], i.e. key row 16 warp + 8 (i % 2) + j at query chunk
  // 2 m + i / 2 of the swizzled tile (chunk c of row r at c ^ (r % 8)).
  std::uint32_t ds_rows[4];
  {
    const int lane_in_warp = static_cast<int>(threadIdx.x % 32);
    const int i = lane_in_warp / 8, j = lane_in_warp % 8;
    const int key_row = (static_cast<int>(threadIdx.x / 32) % 4) * 16 + 8 * (i % 2) + j;
#pragma unroll
    for (int m = 0; m < 4; ++m) {
      ds_rows[m] = shared_address(ds_tile + sw128_offset<64>(kBlock, key_row, 2 * m + i / 2));
    }
  }
  const std::uint64_t k_columns_desc = matrix_descriptor(sm.k + consumer * kBlock * 64, kKeys * 128, 1024);

  RingPosition<Tile::kStages> q_position;
  RingPosition<Tile::kDqBuffers> dq_position;
  // This warpgroup's part of a step's dQ tile (value(n, r, j): element j of row half r of
  // fragment n) into the next dQ buffer once the producer emptied it, then signalled.
  auto hand_over_dq = [&](auto value) {
    mbarrier_wait(sm.dq_empty + dq_position.stage, dq_position.phase ^ 1);
    float* buffer = sm.dq + (dq_position.stage * Tile::kConsumers + consumer) * kBlock * Tile::kDqPitch;
#pragma unroll
    for (int n = 0; n < kDTiles; ++n) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp * 16 + g + 8 * r;
        *reinterpret_cast<float2*>(buffer + row * Tile::kDqPitch + 8 * n + 2 * t) =
            make_float2(value(n, r, 0), value(n, r, 1));
      }
    }
    dq_position.release(sm.dq_full);
  };
  unsigned kv_phase = 0;
  for (int h = kv_head * group_size; h < (kv_head + 1) * group_size; ++h) {
    const BackwardHeadRows rows = backward_head_rows(p, h, segment, k_begin);
    if (!rows.active) continue;
    const std::int64_t L = rows.length;
    // This thread's two key rows; the adds at the head's end read them (prefetched now).
    const std::int64_t key_row = k_group + warp * 16 + g;
    const std::int64_t key_rows[2] = {rows.first_row + key_row * rows.step, rows.first_row + (key_row + 8) * rows.step};
    const bool key_valid[2] = {key_row < L, key_row + 8 < L};
    prefetch_key_rows<kHeadDim>(p, kStoreKv, b, kv_head, key_rows, key_valid);
    mbarrier_wait(sm.kv_full, kv_phase);
    fence_proxy_async();
    kv_phase ^= 1;
    // This warpgroup's K and V rows as the A operands of S^T and dP^T, in registers for the
    // whole head: read from shared memory once instead of at every step (the products'
    // shared-memory reads bound the loop). Lanes 0-15 address rows 0-15 of the warp's 16
    // at chunk 2 ks, lanes 16-31 the same rows at chunk 2 ks + 1 (the fragment order of
    // m16n8k16's A). Fragments held across a loop of register-A wgmmas are fragile: with
    // them held across the kDq = false instantiation's loop, ptxas (CUDA 13.0) put P^T into
    // K's registers inside the loop although the PTX keeps them live (wrong dK, dV on the
    // GPU), so that instantiation reads them at every step. The kDq = true instantiation's
    // SASS keeps them (scripts/gpu/check_wgmma_fragments.py), and the CUDA tests catch a
    // regression.
    std::uint32_t a_k[kHeadDim / 16][4], a_v[kHeadDim / 16][4];
    auto load_kv_fragments = [&]() {
      const int row = consumer * kBlock + warp * 16 + lane % 16;
#pragma unroll
      for (int ks = 0; ks < kHeadDim / 16; ++ks) {
        const int at = sw128_offset<kHeadDim>(kKeys, row, 2 * ks + lane / 16);
        load_matrix_x4(a_k[ks], sm.k + at);
        load_matrix_x4(a_v[ks], sm.v + at);
      }
    };
    if constexpr (kDq) load_kv_fragments();

    float dk[kDTiles * 4], dv[kDTiles * 4];
#pragma unroll
    for (int i = 0; i < kDTiles * 4; ++i) dk[i] = dv[i] = 0.0f;

    const QueryWalk<kOrder> walk(p, k_begin, L, kBlock);
    const bool key_tail = k_group + kBlock > L;
    // Keys of this warpgroup that exist (64 unless key_tail).
    const int keys = key_tail ? static_cast<int>(L - k_group) : kBlock;
    std::int64_t q_begin = walk.first;
    for (std::int64_t walked = 0; kOrder == DqOrder::kRotated ? walked < walk.steps : q_begin < L;
         ++walked, q_begin = walk.next(q_begin, kBlock)) {
      const int stage = q_position.stage;
      mbarrier_wait(sm.q_full + stage, q_position.phase);
      // No query of the step attends a key of this warpgroup (causal: the second
      // warpgroup's keys start after the diagonal step's last query; or its keys all lie
      // past the sequence): P, dS and so its dV, dK and dQ parts are zero, so it only
      // hands the producer a zero dQ part and releases the stage (about 3 % of the causal
      // training launches' warpgroup steps).
      if ((p.causal && q_begin + kBlock <= k_group) || keys <= 0) {
        if constexpr (kDq) hand_over_dq([](int, int, int) { return 0.0f; });
        q_position.release(sm.q_empty);
        continue;
      }
      fence_proxy_async();  // copied through the generic proxy, read by the tensor cores
      if constexpr (!kDq) load_kv_fragments();
      const float* sLse = sm.terms + stage * 2 * kBlock;
      const float* sDelta = sLse + kBlock;

      // S^T = K Q^T and dP^T = V dO^T (this warpgroup's 64 keys x 64 queries each), in
      // two groups: P^T is computed from S^T while the tensor cores still work on dP^T.
      // acc (64 keys x 64 queries) = rows (A, registers) x the stage's tile at `tile`^T.
      auto scores_step = [&](float(&acc)[32], const std::uint32_t(&rows)[kHeadDim / 16][4], std::uint64_t tile) {
#pragma unroll
        for (int ks = 0; ks < kHeadDim / 16; ++ks) {
          const int at = (ks / 4) * kBlock * 64 + (ks % 4) * 16;  // column block, then k-step
          wgmma_rs_m64n64k16<Element, 0>(acc, rows[ks], descriptor_at(tile, stage * kStageBytes + at * 2), ks > 0);
        }
      };
      float st[32], dpt[32];
      wgmma_fence();
      scores_step(st, a_k, q_rows_desc);
      wgmma_commit();
      // A fence per product: ptxas treats the wgmmas after one fence as one stage and waits
      // for all of them before any accumulator of the stage is read.
      wgmma_fence();
      scores_step(dpt, a_v, do_rows_desc);
      wgmma_commit();
      wgmma_wait<1>();
      wgmma_fence_registers(st);

      // P^T; thread element (n, e) is key row kr, query column qc (key k_group + kr, query
      // q_begin + qc). Masked: the causal tiles that reach the diagonal (the warpgroup's
      // keys start `shift` = 0 or 64 after the queries) and the sequence's tail.
      // Element (key row kr, query column qc) is masked iff kr >= keys or (diagonal and
      // kr + shift > qc): with qc = c + 2 t, iff c < below[r] (all of a row past the keys,
      // the columns before its diagonal otherwise), one compare an element.
      const bool diagonal = p.causal && q_begin < k_group + kBlock;
      const int shift = static_cast<int>(k_group - q_begin);
      int below[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int kr = warp * 16 + g + 8 * r;
        below[r] = kr >= keys ? kBlock : diagonal ? kr + shift - 2 * t : 0;
      }
      auto masked_out = [&](int r, int c) { return c < below[r]; };
      if (key_tail || diagonal) {
        backward_probabilities<true>(st, sLse, p.scale_log2, t, masked_out);
      } else {
        backward_probabilities<false>(st, sLse, p.scale_log2, t, masked_out);
      }
      wgmma_fence_registers(st);  // pinned before the wait
      wgmma_wait<0>();
      wgmma_fence_registers(dpt);
      backward_ds(st, dpt, sDelta, t);
      std::uint32_t a_p[4][4], a_ds[4][4];
      pack_backward_fragments<Element>(st, dpt, a_p, a_ds);
      if constexpr (kDq) {
        // dS^T to this warpgroup's tile: a_ds[m] holds the four 8 x 8 matrices (query
        // columns 16 m.. and 16 m + 8.., each of key rows +0 and +8 of the warp's 16),
        // stmatrix's order, so four stmatrix instead of 16 four-byte stores.
#pragma unroll
        for (int m = 0; m < 4; ++m) store_matrix_x4(ds_rows[m], a_ds[m]);
      }
      // dV += P^T dO.
      wgmma_fence();
      wgmma_key_rows_step<Element, kHeadDim>(dv, a_p, do_columns_desc, stage * kStageBytes);
      wgmma_commit();

      // dQ over this warpgroup's keys once all its warps wrote dS^T (a named barrier of
      // its 128 threads): A = dS (queries x keys) read from dS^T (query-contiguous:
      // MN-major), B = K (keys x D, D contiguous: MN-major).
      [[maybe_unused]] float dq[kDTiles * 4];
      if constexpr (kDq) {
        fence_proxy_async();
        named_barrier_sync(1 + consumer, 128);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlock / 16; ++kk) {
          const std::uint64_t a = descriptor_at(ds_desc, kk * 16 * 64 * 2);
          const std::uint64_t k = descriptor_at(k_columns_desc, kk * 16 * 64 * 2);
          wgmma_dq_step<Element, kHeadDim>(dq, a, k, kk > 0);
        }
        wgmma_commit();
      }
      // dK += dS^T Q.
      wgmma_fence();
      wgmma_key_rows_step<Element, kHeadDim>(dk, a_ds, q_columns_desc, stage * kStageBytes);
      wgmma_commit();
      if constexpr (kDq) {
        wgmma_wait<1>();  // dV and dQ; dK may still run
        wgmma_fence_registers(dq);
        // The dQ tile to the producer (unscaled; it applies ds_scale when it adds).
        hand_over_dq([&](int n, int r, int j) { return dq[4 * n + 2 * r + j]; });
      }
      wgmma_wait<0>();
      wgmma_fence_registers(dk);
      wgmma_fence_registers(dv);
      q_position.release(sm.q_empty);  // every product that read Q and dO of the stage is done
    }
    mbarrier_arrive(sm.kv_empty);  // no product reads K or V any more

    // This head's dK, dV for the rows this warpgroup owns (zero where no query reached them),
    // once the previous pattern's launch has added its own (overlap_previous).
    if (p.overlap_previous) wait_for_previous_launch();
    finish_key_rows<Element, kHeadDim>(
        p, b, kv_head, key_rows, key_valid, kStoreKv, ds_scale,
        [&](int r, int n, int j2) { return dk[4 * n + 2 * r + j2]; },
        [&](int r, int n, int j2) { return dv[4 * n + 2 * r + j2]; });
  }
  // Every CTA: this launch completes after the previous one (what the conversion after
  // the last pattern relies on).
  if (p.overlap_previous) wait_for_previous_launch();
}

// kDq: whether the kernel computes dQ (false: dK and dV only, for a caller that runs the
// query-tile dQ pass, launch_flash_backward_dq); kOrder: dQ added atomically or in a fixed
// order (deterministic launches: DqOrder). Each order is its own instantiation, so that the
// others' code stays as measured (a runtime-selected causal order once made the non-causal
// launches 8 % slower: head-groups 1M --deterministic 39.7 -> 42.8 ms, 2026-12-04).
template <class Element, int kHeadDim, bool kStoreKv, bool kDq, DqOrder kOrder = DqOrder::kAtomic>
__global__ void __launch_bounds__(Sm90WarpSpecializedBackwardTile<kHeadDim>::kThreads, 1)
    flash_backward_sm90_ws_kernel(const __grid_constant__ PatternLaunch p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tile = Sm90WarpSpecializedBackwardTile<kHeadDim>;
  extern __shared__ __align__(16) unsigned char ws_backward_shared[];
  const WarpSpecializedBackwardShared<Element, kHeadDim> sm(ws_backward_shared);
  if (threadIdx.x == 0) {
    // Full barriers: one arrival per producer thread when its copies land (dQ: per consumer
    // thread when its part of the tile is stored). Empty ones: per consumer thread when its
    // products that read the stage are done (dQ: per producer thread when it added).
    mbarrier_init(sm.kv_full, 128);
    mbarrier_init(sm.kv_empty, 256);
    for (int s = 0; s < Tile::kStages; ++s) {
      mbarrier_init(sm.q_full + s, 128);
      mbarrier_init(sm.q_empty + s, 256);
    }
    for (int s = 0; s < Tile::kDqBuffers; ++s) {
      mbarrier_init(sm.dq_full + s, 256);
      mbarrier_init(sm.dq_empty + s, 128);
    }
  }
  __syncthreads();
  allow_dependent_launch();  // the next pattern's launch may start once every CTA has started
  if (threadIdx.x < 128) {
    release_registers<Tile::kProducerRegisters>();
    backward_producer<Element, kHeadDim, kDq, kOrder>(p, sm);
  } else {
    claim_registers<Tile::kConsumerRegisters>();
    backward_consumer<Element, kHeadDim, kStoreKv, kDq, kOrder>(p, sm);
  }
#else
  (void)p;
  __trap();  // built without sm_90a: never launched (the host checks the device first)
#endif
}

// kv_tiles_per_segment tiles of 64 keys per segment, two per CTA. Deterministic launches
// add dQ in a fixed order when launch_backward gives turn counters (p.dq_order), else get
// dK and dV only (its caller then runs the query-tile dQ pass).
template <class Element, int kHeadDim>
void launch_flash_backward_sm90_ws(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream) {
  using Tile = Sm90WarpSpecializedBackwardTile<kHeadDim>;
  PatternLaunch kv = p;
  kv.tiles_per_segment = (kv_tiles_per_segment * kSparseTileRows + Tile::kKeys - 1) / Tile::kKeys;
  kv.backward_tail_sequences = backward_tail_sequences(kv.tiles_per_segment);
  auto kernel = p.store_kv ? flash_backward_sm90_ws_kernel<Element, kHeadDim, true, true>
                           : flash_backward_sm90_ws_kernel<Element, kHeadDim, false, true>;
  if (p.deterministic && p.dq_order != nullptr && p.causal) {
    kernel = p.store_kv ? flash_backward_sm90_ws_kernel<Element, kHeadDim, true, true, DqOrder::kDiagonalDown>
                        : flash_backward_sm90_ws_kernel<Element, kHeadDim, false, true, DqOrder::kDiagonalDown>;
  } else if (p.deterministic && p.dq_order != nullptr && rotated_walk_fits(kv.tiles_per_segment)) {
    kernel = p.store_kv ? flash_backward_sm90_ws_kernel<Element, kHeadDim, true, true, DqOrder::kRotated>
                        : flash_backward_sm90_ws_kernel<Element, kHeadDim, false, true, DqOrder::kRotated>;
  } else if (p.deterministic && p.dq_order != nullptr) {
    kernel = p.store_kv ? flash_backward_sm90_ws_kernel<Element, kHeadDim, true, true, DqOrder::kKeyTiles>
                        : flash_backward_sm90_ws_kernel<Element, kHeadDim, false, true, DqOrder::kKeyTiles>;
  } else if (p.deterministic) {
    kernel = p.store_kv ? flash_backward_sm90_ws_kernel<Element, kHeadDim, true, false>
                        : flash_backward_sm90_ws_kernel<Element, kHeadDim, false, false>;
  }
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSharedBytes);
  const std::int64_t ctas = p.segments * kv.tiles_per_segment;
  if (ctas == 0) return;
  const int grid_kv_heads = cover_pattern_kv_heads(kv);
  if (grid_kv_heads == 0) return;
  const dim3 grid(static_cast<unsigned>(ctas), static_cast<unsigned>(grid_kv_heads), static_cast<unsigned>(p.batch));
  launch_after_previous(kernel, grid, dim3(Tile::kThreads), Tile::kSharedBytes, stream, p.overlap_previous, kv);
}

}  // namespace longnet::kernels::cuda
