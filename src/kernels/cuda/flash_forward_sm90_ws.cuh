// Hopper (sm_90a) forward of dilated attention with warp specialisation (FlashAttention-3's
// structure), for dilated launches. A persistent CTA walks work items (64 * kConsumers query
// rows of one virtual sequence, batch element and head; the same items, in the same order,
// as the one-warpgroup kernel's CTAs) with
//   - a producer warpgroup (few registers) that copies Q and the key tiles of K and V of
//     each item into rings of shared stages with cp.async, reading the dilated rows in
//     place (row j of a virtual sequence is tensor row first_row + j * row_step; rows past
//     its end are zero-filled), and signals each stage on an mbarrier when its copies land;
//   - kConsumers warpgroups of 64 query rows each (most registers) that run the pipelined
//     loop of flash_forward_sm90.cuh: tile t + 1's score product and tile t's PV product
//     issued together, tile t + 1's softmax while the PV product runs. The consumers take
//     turns at the tensor cores (named barriers), so one's softmax overlaps another's
//     products, and they release a stage once their products that read it are done.
// After an item, the consumers also write the zeros of the output rows of its head that no
// pattern reaches (zero_unreached).
// While the consumers finish an item (last PV product, epilogue), the producer already
// copies the next item's Q and first key tiles.
//
// Shared tiles: the 128-byte-swizzle layout of flash_forward_sm90.cuh (sw128_offset); Q and
// K are K-major operands of S = Q K^T, V the MN-major B operand of O += P V, P in registers.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/flash_epilogue.cuh"
#include "kernels/cuda/flash_forward.cuh"
#include "kernels/cuda/flash_forward_sm90.cuh"
#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace longnet::kernels::cuda {

template <int kHeadDim, int kConsumers>
struct Sm90WarpSpecializedForwardTile {
  static_assert(kConsumers == 2 || kConsumers == 3, "two or three consumer warpgroups");
  static constexpr int kThreads = 128 * (kConsumers + 1);  // warpgroup 0 is the producer
  static constexpr int kBlockM = 64 * kConsumers;           // query rows of an item
  static constexpr int kBlockN = 128;                       // keys per stage
  static constexpr int kStages = kHeadDim <= 64 ? 3 : 2;
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kStageBytes = kBlockN * kHeadDim * 2;  // one of K or V
  // Registers per thread after reallocation. The warpgroups trade registers within what
  // the CTA got at launch (65536 / kThreads per thread, rounded down to a multiple of 8):
  // asking for more makes the consumers' setmaxnreg.inc wait forever.
  static constexpr int kProducerRegisters = kConsumers == 3 ? 32 : 40;
  static constexpr int kConsumerRegisters = kConsumers == 3 ? 160 : 232;
  static_assert(kProducerRegisters + kConsumers * kConsumerRegisters <= 65536 / kThreads / 8 * 8 * (kConsumers + 1),
                "register reallocation exceeds the CTA's registers");
  // mbarriers: Q full and empty, full and empty per stage of K and of V, full and empty
  // per slot of the ring of work items.
  static constexpr int kItemSlots = 2;
  static constexpr int kBarriers = 2 + 4 * kStages + 2 * kItemSlots;
  // + the items (ForwardItem) + the producer's next item (two, alternating)
  static constexpr int kHeaderBytes = kBarriers * 8 + kItemSlots * 64 + 2 * sizeof(std::int64_t);
  static constexpr int kSharedBytes = kHeaderBytes + 1024 + kQBytes + 2 * kStages * kStageBytes;
};

// One work item: query rows [q_begin, q_begin + kBlockM) of the virtual sequence of length
// `length` (tensor rows first_row + j * row_step) of head `head` in batch element `batch`;
// the sequence is the rows of in-segment index offset mod row_step of a segment of
// segment_rows rows.
struct ForwardItem {
  bool active = false;
  int head = 0;
  std::int64_t batch = 0, q_begin = 0, length = 0, first_row = 0, row_step = 1, offset = 0, segment_rows = 0;
};

// Causal launches: items of a pattern ordered by cost, heaviest first, in groups of
// PatternSlot::cost_group sequences (cost_ordered_item, dilation.hpp). Otherwise the tiles
// of one virtual sequence are consecutive (they share K and V in L2).
__device__ __forceinline__ ForwardWork forward_work_by_cost(const PatternLaunch& p, std::int64_t cta) {
  const int slot = forward_slot(p, cta);
  const PatternSlot& s = p.slots[slot];
  const std::int64_t local = cta - s.cta_begin;
  const CostOrderedItem item = cost_ordered_item(local, s.head_count * s.segments, s.tiles_per_segment, s.cost_group);
  return {slot, s.head_begin + static_cast<int>(item.sequence / s.segments), item.sequence % s.segments, item.tile};
}

__device__ __forceinline__ ForwardItem forward_item(const PatternLaunch& p, std::int64_t item, int block_m) {
  ForwardItem w;
  w.batch = item / p.total_ctas;
  const std::int64_t cta = item - w.batch * p.total_ctas;
  const ForwardWork work = p.causal ? forward_work_by_cost(p, cta) : forward_work(p, cta);
  const PatternSlot& slot = p.slots[work.slot];
  w.head = work.head;
  w.q_begin = work.tile * block_m;
  w.offset = pattern_offset(p.mode, slot.pattern_index, p.num_patterns, slot.pattern.dilation_rate, w.head, p.heads);
  if (w.offset < 0) return w;
  const VirtualSequence vs = virtual_sequence(p.seq_len, slot.pattern, w.offset, work.segment);
  w.length = vs.length;
  w.first_row = vs.first_row;
  w.row_step = vs.row_step;
  w.segment_rows = min(slot.pattern.segment_length, p.seq_len - (vs.first_row - w.offset));
  w.active = w.q_begin < w.length;
  return w;
}

// Writes zeros to the output rows of an item's head that its pattern does not reach, and
// -inf to their lse, for the rows that belong to the item (unreached_rows_of_item, dilation.hpp; the host checks that the
// items cover every such row). `thread` of `threads` (a multiple of the chunks per row).
template <class Element, int kHeadDim>
__device__ __forceinline__ void zero_unreached_rows(const PatternLaunch& p, const ForwardItem& w, int block_m,
                                                    int thread, int threads) {
  constexpr int kChunks = kHeadDim / 8;
  if (static_cast<std::uint32_t>(w.row_step) == 1) return;
  const UnreachedRowsOfItem rows =
      unreached_rows_of_item(w.q_begin, min(w.length, w.q_begin + block_m), w.row_step, w.offset);
  const std::int64_t segment_start = w.first_row - w.offset;
  const int chunk = thread % kChunks;
  if (chunk >= p.head_dim / 8) return;
  for (std::uint32_t index = thread / kChunks; index < rows.count; index += threads / kChunks) {
    const std::int64_t t = rows.row(index);
    if (index >= rows.head_rows && t >= w.segment_rows) continue;  // past the segment's end
    Element* row = p.out.row<Element>(w.batch, segment_start + t, w.head);
    *reinterpret_cast<uint4*>(row + chunk * 8) = make_uint4(0, 0, 0, 0);
    if (chunk == 0) {  // and its lse (no fill of lse before the launch)
      static_cast<float*>(p.lse)[(w.batch * p.heads + w.head) * p.seq_len + segment_start + t] = -INFINITY;
    }
  }
}

// Key tiles an item's rows attend to (at least one for an active item).
__device__ __forceinline__ std::int64_t forward_key_tiles(const PatternLaunch& p, const ForwardItem& w, int block_m,
                                                          int block_n) {
  const std::int64_t key_end = p.causal ? min(w.length, w.q_begin + block_m) : w.length;
  return (key_end + block_n - 1) / block_n;
}

// The shared memory of one CTA: barriers, the ring of work items the producer hands the
// consumers, then the 1024-byte aligned tiles.
template <class Element, int kHeadDim, int kConsumers>
struct WarpSpecializedForwardShared {
  using Tile = Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>;
  static constexpr int kStages = Tile::kStages;
  std::uint64_t* q_full;
  std::uint64_t* q_empty;
  std::uint64_t* k_full;  // [kStages]
  std::uint64_t* k_empty;
  std::uint64_t* v_full;
  std::uint64_t* v_empty;
  std::uint64_t* item_full;  // [kItemSlots]
  std::uint64_t* item_empty;
  ForwardItem* items;  // [kItemSlots]; inactive: no more items
  std::int64_t* next_item;  // [2]: thread 0 of the producer tells the others (item_counter)
  Element* q;          // kBlockM x kHeadDim
  Element* k;          // [kStages][kBlockN x kHeadDim]
  Element* v;

  __device__ __forceinline__ explicit WarpSpecializedForwardShared(unsigned char* raw) {
    static_assert(sizeof(ForwardItem) <= 64, "a work item fits its slot");
    auto* barriers = reinterpret_cast<std::uint64_t*>(raw);
    q_full = barriers;
    q_empty = barriers + 1;
    k_full = barriers + 2;
    k_empty = k_full + kStages;
    v_full = k_empty + kStages;
    v_empty = v_full + kStages;
    item_full = v_empty + kStages;
    item_empty = item_full + Tile::kItemSlots;
    items = reinterpret_cast<ForwardItem*>(raw + Tile::kBarriers * 8);
    next_item = reinterpret_cast<std::int64_t*>(raw + Tile::kBarriers * 8 + Tile::kItemSlots * 64);
    unsigned char* tiles = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<std::uintptr_t>(raw + Tile::kHeaderBytes) + 1023) & ~std::uintptr_t{1023});
    q = reinterpret_cast<Element*>(tiles);
    k = reinterpret_cast<Element*>(tiles + Tile::kQBytes);
    v = k + kStages * Tile::kBlockN * kHeadDim;
  }
};

// Named barrier of the producer warpgroup alone (the consumers' turns take 1..kConsumers).
constexpr int kForwardProducerBarrier = 8;

// The producer warpgroup (threads 0..127) schedules: it walks this CTA's items (from the
// launch's item counter, or one of every gridDim.x: below), hands each active one to the
// consumers through the ring of items (thread 0), then copies its Q and its key tiles in
// the order the consumers read them (K0, then K t with V t - 1, then the last V). An
// inactive item in the ring ends the consumers' loop.
template <class Element, int kHeadDim, int kConsumers>
__device__ __forceinline__ void forward_producer(const PatternLaunch& p,
                                                 const WarpSpecializedForwardShared<Element, kHeadDim, kConsumers>& sm) {
  using Tile = Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kChunks = Tile::kChunks;
  constexpr int kRowsPerPass = 128 / kChunks;
  const int tid = threadIdx.x;
  const int copy_row = tid / kChunks, copy_chunk = tid % kChunks;
  const bool chunk_used = copy_chunk < p.head_dim / 8;
  const int stage_offset = sw128_offset<kHeadDim>(kBlockN, copy_row, copy_chunk);  // copy_rows_stepped
  RingPosition<Tile::kStages> k_position, v_position;
  RingPosition<Tile::kItemSlots> item_position;
  unsigned q_phase = 0;
  // Thread 0 puts an item in the ring once the consumers are done with the slot's last one.
  auto hand_over = [&](const ForwardItem& w) {
    if (tid == 0) {
      mbarrier_wait(sm.item_empty + item_position.stage, item_position.phase ^ 1);
      sm.items[item_position.stage] = w;
      mbarrier_arrive(sm.item_full + item_position.stage);
    }
    item_position.advance();
  };
  // The first item is blockIdx.x. Then, with p.item_counter, the next one the counter gives
  // (after this item's copies are queued, so the atomic's round trip overlaps the
  // consumers' work); otherwise items in rounds of gridDim.x, taken in alternating
  // directions: causal items come heaviest first, so the CTA that got one of a round's
  // heaviest gets one of the next round's lightest (in one direction CTA 0 got the heaviest
  // of every round: on the training configuration's causal patterns a model of the rounds
  // gives 350 instead of 384 key tiles for the longest CTAs; benchmarks.md, 2026-12-04
  // fourth session).
  const std::int64_t items = p.total_ctas * p.batch;
  std::int64_t round = 0;
  bool reversed = false;
  int parity = 0;
  auto next_item = [&]() -> std::int64_t {
    if (p.item_counter == nullptr) {
      round += gridDim.x;
      reversed = !reversed;
      return round + (reversed ? gridDim.x - 1 - blockIdx.x : blockIdx.x);
    }
    if (tid == 0) sm.next_item[parity] = gridDim.x + static_cast<std::int64_t>(atomicAdd(p.item_counter, 1ull));
    named_barrier_sync(kForwardProducerBarrier, 128);
    const std::int64_t next = sm.next_item[parity];
    parity ^= 1;  // a thread is at most one barrier behind thread 0's next write
    return next;
  };
  for (std::int64_t item = blockIdx.x; item < items; item = next_item()) {
    const ForwardItem w = forward_item(p, item, kBlockM);
    if (!w.active) continue;
    hand_over(w);
    const int kv_head = w.head / (p.heads / p.kv_heads);
    const int L = static_cast<int>(w.length), q_begin = static_cast<int>(w.q_begin);
    const std::int64_t q_stride = w.row_step * p.q.seq_stride;
    const std::int64_t k_stride = w.row_step * p.k.seq_stride;
    const std::int64_t v_stride = w.row_step * p.v.seq_stride;
    const Element* q_copy = p.q.row<const Element>(w.batch, w.first_row, w.head) + copy_chunk * 8;
    const Element* k_copy = p.k.row<const Element>(w.batch, w.first_row, kv_head) + copy_chunk * 8;
    const Element* v_copy = p.v.row<const Element>(w.batch, w.first_row, kv_head) + copy_chunk * 8;

    mbarrier_wait(sm.q_empty, q_phase ^ 1);  // the consumers' last score product of the previous item is done
    copy_rows_stepped<kBlockM, kRowsPerPass>(sm.q + sw128_offset<kHeadDim>(kBlockM, copy_row, copy_chunk),
                                             q_copy + static_cast<std::int64_t>(q_begin + copy_row) * q_stride,
                                             q_stride, chunk_used ? L - q_begin - copy_row : 0);
    mbarrier_arrive_on_copies(sm.q_full);
    q_phase ^= 1;

    // Key tile `tile` of K or V into the ring's next stage, once the consumers freed it:
    // this thread's rows copy_row + i * kRowsPerPass (copy_rows_stepped), rows_left of them
    // in the sequence from its first row of tile 0 (0 for chunks past the head dim).
    const int rows_left = chunk_used ? L - copy_row : 0;
    auto load = [&](Element* ring, std::uint64_t* full, std::uint64_t* empty, RingPosition<Tile::kStages>& position,
                    const Element* sequence, std::int64_t stride, int tile) {
      mbarrier_wait(empty + position.stage, position.phase ^ 1);
      copy_rows_stepped<kBlockN, kRowsPerPass>(
          ring + position.stage * kBlockN * kHeadDim + stage_offset,
          sequence + (static_cast<std::int64_t>(tile) * kBlockN + copy_row) * stride, stride, rows_left - tile * kBlockN);
      mbarrier_arrive_on_copies(full + position.stage);
      position.advance();
    };
    const int kv_tiles = static_cast<int>(forward_key_tiles(p, w, kBlockM, kBlockN));
    load(sm.k, sm.k_full, sm.k_empty, k_position, k_copy, k_stride, 0);
    for (int t = 1; t < kv_tiles; ++t) {
      load(sm.k, sm.k_full, sm.k_empty, k_position, k_copy, k_stride, t);
      load(sm.v, sm.v_full, sm.v_empty, v_position, v_copy, v_stride, t - 1);
    }
    load(sm.v, sm.v_full, sm.v_empty, v_position, v_copy, v_stride, kv_tiles - 1);
  }
  hand_over(ForwardItem{});  // no more items
  copy_async_wait_all();
}

// A consumer warpgroup (threads 128 (1 + consumer) ..): 64 query rows of every item the
// producer hands over. The item's fields are read from shared memory where they are used
// rather than kept in registers through the loop.
template <class Element, int kHeadDim, int kConsumers>
__device__ __forceinline__ void forward_consumer(const PatternLaunch& p,
                                                 const WarpSpecializedForwardShared<Element, kHeadDim, kConsumers>& sm) {
  using Tile = Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN;
  constexpr int kSTiles = kBlockN / 8;   // score n-tiles per thread
  constexpr int kOTiles = kHeadDim / 8;  // output n-tiles per thread
  const int consumer = static_cast<int>(threadIdx.x / 128) - 1;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int group = lane / 4, thread_in_group = lane % 4;
  const int warp_row = consumer * 64 + warp * 16;  // this warp's first row in the item
  // Consumer i issues its products after consumer i - 1 (named barrier 1 + i: 128 threads
  // arriving, 128 waiting); the last one hands consumer 0 the first turn.
  const int my_turn = 1 + consumer, next_turn = 1 + (consumer + 1) % kConsumers;
  if (consumer == kConsumers - 1) named_barrier_arrive(1, 256);
  // A negative scale is a positive one with the scores negated (folded into the softmax).
  const float sign = p.scale_log2 < 0.0f ? -1.0f : 1.0f;
  const float scale_log2 = fmaxf(fabsf(p.scale_log2), 1e-30f);

  // The tiles' matrix descriptors, made once: a product's descriptor is one of these plus
  // a byte offset (descriptor_at), where rebuilding each from its pointer took ~10
  // instructions a wgmma in the loop (~120 of an iteration's ~540).
  // The consumer index through a shuffle from lane 0: ptxas then knows it is uniform and
  // keeps Q's descriptor in uniform registers (from threadIdx it rebuilt it every iteration).
  const int uniform_consumer = __shfl_sync(0xffffffffu, consumer, 0);
  const std::uint64_t q_desc = matrix_descriptor(sm.q + uniform_consumer * 64 * 64, 16, 1024);
  const std::uint64_t k_desc = matrix_descriptor(sm.k, 16, 1024);
  const std::uint64_t v_desc = matrix_descriptor(sm.v, kBlockN * 128, 1024);
  // S = Q K^T for this warpgroup's 64 rows and the K tile in `stage`; issued, not waited for.
  auto issue_scores = [&](float(&s)[kSTiles * 4], int stage) {
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks) {
      const std::uint64_t a = descriptor_at(q_desc, ((ks / 4) * kBlockM * 64 + (ks % 4) * 16) * 2);
      const std::uint64_t b =
          descriptor_at(k_desc, stage * Tile::kStageBytes + ((ks / 4) * kBlockN * 64 + (ks % 4) * 16) * 2);
      wgmma_ss_m64n128k16<Element, 0, 0>(s, a, b, ks > 0);
    }
    wgmma_commit();
  };
  auto issue_pv = [&](float(&o)[kOTiles * 4], const std::uint32_t(&a)[kBlockN / 16][4], int stage) {
    issue_pv_product_at<Element, kHeadDim, kBlockN>(o, a, descriptor_at(v_desc, stage * Tile::kStageBytes));
  };
  float o[kOTiles * 4];
  // Waits for a stage's copies; they were written through the generic proxy and are read
  // next by the tensor cores (async proxy).
  auto wait_full = [](std::uint64_t* full, unsigned phase) {
    mbarrier_wait(full, phase);
    fence_proxy_async();
  };

  RingPosition<Tile::kStages> k_position, v_position;
  RingPosition<Tile::kItemSlots> item_position;
  unsigned q_phase = 0;
  bool waited_for_previous = false;
  for (;;) {
    mbarrier_wait(sm.item_full + item_position.stage, item_position.phase);
    const ForwardItem& w = sm.items[item_position.stage];
    if (!w.active) break;
    // Positions inside one virtual sequence in 32 bits (the host keeps seq_len < 2^31):
    // fewer registers in the loop.
    const int L = static_cast<int>(w.length), q_begin = static_cast<int>(w.q_begin);
    const int kv_tiles = static_cast<int>(forward_key_tiles(p, w, kBlockM, kBlockN));
    // The key tiles this warpgroup multiplies: a causal item's tiles end at its last row,
    // this warpgroup's at its own (the tiles after are masked for all of its rows), and a
    // warpgroup whose rows all lie past the sequence needs one. It only waits for and
    // releases the rest (drain, below): ~10 % fewer products and exponentials in the
    // causal training launches (192-row items of 2048- and 2731-row sequences).
    const int own_tiles = consumer_key_tiles(p.causal, L, q_begin + 64 * uniform_consumer, 64, kv_tiles, kBlockN);
    // This thread's two output rows; a merge at the item's end reads them (prefetched now).
    const std::int64_t rows[2] = {w.first_row + (q_begin + warp_row + group) * w.row_step,
                                  w.first_row + (q_begin + warp_row + group + 8) * w.row_step};
    const bool valid[2] = {q_begin + warp_row + group < L, q_begin + warp_row + group + 8 < L};
    prefetch_query_rows<kHeadDim>(p, w.batch, w.head, rows, valid);
    // Key column c of row `row` of tile t is kept iff c < key_limit and (when causal)
    // c - row <= diagonal_high: iff c < the row's limit, min(key_limit, row +
    // diagonal_high + 1). With c = 8 n + (e & 1) + 2 thread_in_group, an element's test is
    // one compare of a compile-time value against its row's limit - 2 thread_in_group
    // (the two conditions per element took ~8 instructions and spilled).
    auto softmax = [&](float(&s)[kSTiles * 4], int t, float(&row_max)[2], float(&row_sum)[2],
                       float(&correction)[2]) -> bool {
      const int key0 = t * kBlockN;
      const bool needs_mask = key0 + kBlockN > L || (p.causal && key0 + kBlockN - 1 > q_begin + warp_row);
      const int key_limit = min(L - key0, kBlockN);
      const int diagonal_high = max(min(q_begin - key0, kBlockM + kBlockN), -kBlockM - kBlockN);
      // (The bound is computed in the test, which only the masked branch runs: computed
      // before it, it cost every tile ~14 instructions and non-causal launches 3 %.)
      auto dropped = [&](int n, int e) {
        const int row = warp_row + group + 8 * (e / 2);
        const int limit = p.causal ? min(key_limit, row + diagonal_high + 1) : key_limit;
        return 8 * n + (e & 1) >= limit - 2 * thread_in_group;
      };
      return online_softmax_tile<kSTiles>(s, row_max, row_sum, correction, sign, scale_log2, needs_mask, dropped);
    };
#pragma unroll
    for (int i = 0; i < kOTiles * 4; ++i) o[i] = 0.0f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
    float s[kSTiles * 4], correction[2];
    std::uint32_t a[kBlockN / 16][4];

    wait_full(sm.q_full, q_phase);
    q_phase ^= 1;
    wait_full(sm.k_full + k_position.stage, k_position.phase);
    wgmma_fence();
    issue_scores(s, k_position.stage);
    wgmma_wait<0>();
    wgmma_fence_registers(s);
    k_position.release(sm.k_empty);
    softmax(s, 0, row_max, row_sum, correction);  // the output is still zero: no rescaling
    pack_probabilities<Element, kSTiles>(s, a);
    // Straight-line iterations (ptxas serializes wgmmas whose groups it cannot track
    // through branches): each issues tile t + 1's scores and tile t's PV product.
    for (int t = 0; t + 1 < own_tiles; ++t) {
      mbarrier_wait(sm.k_full + k_position.stage, k_position.phase);
      mbarrier_wait(sm.v_full + v_position.stage, v_position.phase);
      fence_proxy_async();  // one fence for both stages (wait_full)
      named_barrier_sync(my_turn, 256);
      wgmma_fence();
      issue_scores(s, k_position.stage);
      // A fence per product: ptxas treats the wgmmas after one fence as one stage and
      // waits for all of them before any accumulator of the stage is read.
      wgmma_fence();
      issue_pv(o, a, v_position.stage);
      named_barrier_arrive(next_turn, 256);
      wgmma_wait<1>();  // the scores; the PV product may still run
      wgmma_fence_registers(s);
      k_position.release(sm.k_empty);
      const bool rescale = softmax(s, t + 1, row_max, row_sum, correction);
      // Pinned before the wait in the PTX. (In SASS ptxas still waits for the PV product
      // before the softmax; forcing the overlap measured slower with three consumers
      // taking turns: cuda-kernels.md, the Hopper forward.)
      wgmma_fence_registers(s);
      wgmma_wait<0>();
      wgmma_fence_registers(o);
      wgmma_fence_operands(a);  // the PV product read `a` until the wait
      v_position.release(sm.v_empty);
      if (rescale) rescale_output_rows<kOTiles>(o, correction);  // uniform per warp
      pack_probabilities<Element, kSTiles>(s, a);
    }
    mbarrier_arrive(sm.q_empty);  // every score product of this item is done
    wait_full(sm.v_full + v_position.stage, v_position.phase);
    wgmma_fence();
    issue_pv(o, a, v_position.stage);
    wgmma_wait<0>();
    wgmma_fence_registers(o);
    v_position.release(sm.v_empty);
    // The tiles past this warpgroup's own, which the others multiply: their stages are
    // released once they landed (an arrival before would count for the stage's previous
    // use), and the turn at the tensor cores passed on, so the others' turns keep their
    // order. Before the epilogue: the others would wait at their turns for it.
    for (int t = own_tiles; t < kv_tiles; ++t) {
      mbarrier_wait(sm.k_full + k_position.stage, k_position.phase);
      named_barrier_sync(my_turn, 256);
      named_barrier_arrive(next_turn, 256);
      k_position.release(sm.k_empty);
      mbarrier_wait(sm.v_full + v_position.stage, v_position.phase);
      v_position.release(sm.v_empty);
    }

    // Merging into the accumulators the previous pattern's launch wrote: once it completed
    // (overlap_previous; only before the first item's epilogue).
    if (p.overlap_previous && !waited_for_previous) {
      wait_for_previous_launch();
      waited_for_previous = true;
    }
    {
      const float max_log2[2] = {row_max[0] * scale_log2, row_max[1] * scale_log2};
      finish_query_rows<Element, kHeadDim>(p, w.batch, w.head, rows, valid, row_sum, max_log2,
                                           [&](int r, int n, int j) { return o[4 * n + 2 * r + j]; });
    }
    if (p.zero_unreached) {
      zero_unreached_rows<Element, kHeadDim>(p, w, kBlockM, static_cast<int>(threadIdx.x) - 128, 128 * kConsumers);
    }
    mbarrier_arrive(sm.item_empty + item_position.stage);
    item_position.advance();
  }
  // Every CTA: this launch completes after the previous one (what the conversion after
  // the last pattern relies on).
  if (p.overlap_previous && !waited_for_previous) wait_for_previous_launch();
}

template <class Element, int kHeadDim, int kConsumers>
__global__ void __launch_bounds__(Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>::kThreads, 1)
    flash_forward_sm90_ws_kernel(const __grid_constant__ PatternLaunch p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tile = Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>;
  extern __shared__ __align__(16) unsigned char ws_shared[];  // aligned to 1024 by WarpSpecializedForwardShared
  const WarpSpecializedForwardShared<Element, kHeadDim, kConsumers> sm(ws_shared);
  if (threadIdx.x == 0) {
    // Full barriers: one arrival per producer thread when its copies land. Empty ones: one
    // per consumer thread when its products that read the stage are done.
    mbarrier_init(sm.q_full, 128);
    mbarrier_init(sm.q_empty, 128 * kConsumers);
    for (int s = 0; s < Tile::kStages; ++s) {
      mbarrier_init(sm.k_full + s, 128);
      mbarrier_init(sm.k_empty + s, 128 * kConsumers);
      mbarrier_init(sm.v_full + s, 128);
      mbarrier_init(sm.v_empty + s, 128 * kConsumers);
    }
    for (int s = 0; s < Tile::kItemSlots; ++s) {
      mbarrier_init(sm.item_full + s, 1);
      mbarrier_init(sm.item_empty + s, 128 * kConsumers);
    }
  }
  __syncthreads();
  allow_dependent_launch();  // the next pattern's launch may start once every CTA has started
  if (threadIdx.x < 128) {
    release_registers<Tile::kProducerRegisters>();
    forward_producer<Element, kHeadDim, kConsumers>(p, sm);
  } else {
    claim_registers<Tile::kConsumerRegisters>();
    forward_consumer<Element, kHeadDim, kConsumers>(p, sm);
  }
#else
  (void)p;
  __trap();  // built without sm_90a: never launched (the host checks the device first)
#endif
}

// One CTA per SM (persistent), never more than there are items.
template <class Element, int kHeadDim, int kConsumers>
void launch_flash_forward_sm90_ws(const PatternLaunch& p, cudaStream_t stream) {
  using Tile = Sm90WarpSpecializedForwardTile<kHeadDim, kConsumers>;
  const int sms = device_multiprocessors();
  const std::int64_t items = p.total_ctas * p.batch;
  if (items <= 0) return;
  const auto grid = static_cast<unsigned>(items < sms ? items : sms);
  auto kernel = flash_forward_sm90_ws_kernel<Element, kHeadDim, kConsumers>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSharedBytes);
  launch_after_previous(kernel, dim3(grid), dim3(Tile::kThreads), Tile::kSharedBytes, stream, p.overlap_previous, p);
}

}  // namespace longnet::kernels::cuda
