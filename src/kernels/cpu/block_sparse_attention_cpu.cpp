// Block-sparse attention on the CPU (DESIGN 2.5, 3.1): the dilated engine's tile
// primitives driven by the block mask's lists. Runs of adjacent listed blocks with the
// same partial flag become one key range read in place.
//
// forward:  items (b, h, query tile of a query block) write disjoint rows: one online
//           softmax over every key range of the block (sequence_forward_blocks), so keys
//           of different blocks are never merged as separate softmaxes.
// backward: delta = rowsum(dO * O), then two passes with nothing accumulated by two
//           threads: items (b, kv head, key block) own their dK, dV rows and walk the
//           transposed lists of every query head of the group; items (b, h, query block)
//           own their dQ rows and walk the block's key ranges. (The second pass recomputes
//           P: the price of determinism without per-thread dQ copies.)
// bf16/f16 inputs are widened to fp32 first; f32 and f64 are read and written in place.
#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_operands.hpp"
#include "longnet/kernels/block_sparse_attention.hpp"

namespace longnet::kernels {
namespace {

using cpu::KeyBlock;
using cpu::MutableRows;
using cpu::Rows;

cpu::OperandShape shape_of(const BlockSparseAttentionParams& p) { return {p.batch, p.seq_len, p.head_dim, p.dtype}; }

// The pair masks of head h's blocks: full ones (causal or nothing) and partial ones (the
// element mask, and causal).
struct HeadMasks {
  cpu::PairMask full, partial;
  bool full_masked = false;

  HeadMasks(const BlockSparseLayout& l, std::int64_t head) {
    full.min_distance = 0;
    full_masked = l.causal;
    partial.min_distance = l.causal && l.min_distance < 0 ? 0 : l.min_distance;
    partial.max_distance = l.max_distance;
    partial.predicate = l.predicate;
    partial.context = l.predicate_context;
    partial.head = head;
  }
  const cpu::PairMask* of(bool is_partial) const {
    if (is_partial) return &partial;
    return full_masked ? &full : nullptr;
  }
};

// A run [begin, end) of a CSR list: entries whose blocks are adjacent and share a flag.
struct BlockRun {
  std::int64_t first_block, blocks;
  bool partial;
};

// The runs of list entries [begin, end) (indices and flags as stored in the layout).
void block_runs(const std::int32_t* indices, const std::uint8_t* flags, std::int64_t begin, std::int64_t end,
                std::vector<BlockRun>& runs) {
  runs.clear();
  for (std::int64_t n = begin; n < end; ++n) {
    const bool partial = flags[n] != 0;
    if (!runs.empty() && runs.back().partial == partial && runs.back().first_block + runs.back().blocks == indices[n]) {
      ++runs.back().blocks;
    } else {
      runs.push_back({indices[n], 1, partial});
    }
  }
}

template <class T>
void forward(const BlockSparseAttentionParams& p) {
  const BlockSparseLayout& l = p.layout;
  const cpu::OperandShape s = shape_of(p);
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, D = p.head_dim;
  const std::int64_t group = H / p.kv_heads;
  const auto q = cpu::make_operand<T>(p.q, s, H), k = cpu::make_operand<T>(p.k, s, p.kv_heads),
             v = cpu::make_operand<T>(p.v, s, p.kv_heads);
  const cpu::Accumulator<T> out = cpu::make_accumulator<T>(p.out, s, H);
  T* lse = static_cast<T*>(p.lse);                                           // lse_dtype(dtype) is T for every dtype
  const std::int64_t tiles = (l.block_q + cpu::kBlockQ - 1) / cpu::kBlockQ;  // query tiles per block

  parallel_for(B * H * l.query_blocks * tiles, 1, [&](std::int64_t begin, std::int64_t end) {
    cpu::Scratch<T> scratch(D);
    std::vector<T> out_tile(static_cast<std::size_t>(cpu::kBlockQ * D));
    std::vector<T> lse_tile(static_cast<std::size_t>(cpu::kBlockQ));
    std::vector<BlockRun> runs;
    std::vector<KeyBlock<T>> keys;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t tile = item % tiles, i = (item / tiles) % l.query_blocks;
      const std::int64_t h = (item / (tiles * l.query_blocks)) % H, b = item / (tiles * l.query_blocks * H);
      const std::int64_t query0 = i * l.block_q + tile * cpu::kBlockQ;
      const std::int64_t rows = std::min({cpu::kBlockQ, (i + 1) * l.block_q - query0, N - query0});
      if (rows <= 0) continue;
      const std::int64_t kv_head = h / group;
      const std::int64_t list = (l.mask_heads == 1 ? 0 : h) * l.query_blocks + i;
      block_runs(l.column_indices, l.row_partial, l.row_offsets[list], l.row_offsets[list + 1], runs);
      const HeadMasks masks(l, h);
      keys.clear();
      for (const BlockRun& run : runs) {
        const std::int64_t key0 = run.first_block * l.block_k;
        const std::int64_t count = std::min((run.first_block + run.blocks) * l.block_k, N) - key0;
        keys.push_back({k.rows(b, key0, kv_head), v.rows(b, key0, kv_head), count, key0, masks.of(run.partial)});
      }
      cpu::forward_blocks<T>(q.rows(b, query0, h), rows, query0, keys.data(), static_cast<std::int64_t>(keys.size()), D,
                             static_cast<T>(p.scale), out_tile.data(), lse_tile.data(), scratch.workspace);
      for (std::int64_t r = 0; r < rows; ++r) {
        std::copy(out_tile.begin() + r * D, out_tile.begin() + (r + 1) * D, out.row(b, query0 + r, h));
        lse[(b * H + h) * N + query0 + r] = lse_tile[static_cast<std::size_t>(r)];
      }
    }
  });
  cpu::finish_accumulator(out, p.out, s, H);
}

template <class T>
void backward(const BlockSparseAttentionParams& p) {
  const BlockSparseLayout& l = p.layout;
  const cpu::OperandShape s = shape_of(p);
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const std::int64_t group = H / Hk;
  const auto q = cpu::make_operand<T>(p.q, s, H), k = cpu::make_operand<T>(p.k, s, Hk),
             v = cpu::make_operand<T>(p.v, s, Hk);
  const auto out = cpu::make_operand<T>(p.out, s, H), dout = cpu::make_operand<T>(p.dout, s, H);
  const Tensor delta_t = cpu::output_deltas(out, dout, s, H);
  const T* delta = delta_t.data<T>();
  const T* lse = static_cast<const T*>(p.lse);
  const cpu::Accumulator<T> dq = cpu::make_accumulator<T>(p.dq, s, H), dk = cpu::make_accumulator<T>(p.dk, s, Hk),
                            dv = cpu::make_accumulator<T>(p.dv, s, Hk);
  const T scale = static_cast<T>(p.scale);
  auto query_end = [&](std::int64_t block) { return std::min((block + 1) * l.block_q, N); };
  auto key_end = [&](std::int64_t block) { return std::min((block + 1) * l.block_k, N); };

  // dK, dV: (b, kv head, key block) against the query blocks that list it.
  parallel_for(B * Hk * l.key_blocks, 1, [&](std::int64_t begin, std::int64_t end) {
    cpu::Scratch<T> scratch(D);
    std::vector<BlockRun> runs;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t j = item % l.key_blocks, kv_head = (item / l.key_blocks) % Hk, b = item / (l.key_blocks * Hk);
      const std::int64_t key0 = j * l.block_k;
      for (std::int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
        const HeadMasks masks(l, h);
        const std::int64_t list = (l.mask_heads == 1 ? 0 : h) * l.key_blocks + j;
        block_runs(l.row_indices, l.column_partial, l.column_offsets[list], l.column_offsets[list + 1], runs);
        for (const BlockRun& run : runs) {
          const KeyBlock<T> keys{k.rows(b, key0, kv_head), v.rows(b, key0, kv_head), key_end(j) - key0, key0,
                                 masks.of(run.partial)};
          const std::int64_t query0 = run.first_block * l.block_q;
          const T* lse_rows = lse + (b * H + h) * N + query0;
          const T* delta_rows = delta + (b * H + h) * N + query0;
          cpu::backward_block<T>(q.rows(b, query0, h), dout.rows(b, query0, h), Rows<T>{lse_rows, 1},
                                 Rows<T>{delta_rows, 1}, query_end(run.first_block + run.blocks - 1) - query0, query0,
                                 keys, D, scale, T(1), MutableRows<T>{nullptr, 0}, dk.rows(b, key0, kv_head),
                                 dv.rows(b, key0, kv_head), scratch.workspace);
        }
      }
    }
  });

  // dQ: (b, h, query block) against its key ranges.
  parallel_for(B * H * l.query_blocks, 1, [&](std::int64_t begin, std::int64_t end) {
    cpu::Scratch<T> scratch(D);
    std::vector<BlockRun> runs;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t i = item % l.query_blocks, h = (item / l.query_blocks) % H, b = item / (l.query_blocks * H);
      const std::int64_t query0 = i * l.block_q, kv_head = h / group;
      const HeadMasks masks(l, h);
      const std::int64_t list = (l.mask_heads == 1 ? 0 : h) * l.query_blocks + i;
      block_runs(l.column_indices, l.row_partial, l.row_offsets[list], l.row_offsets[list + 1], runs);
      for (const BlockRun& run : runs) {
        const std::int64_t key0 = run.first_block * l.block_k;
        const KeyBlock<T> keys{k.rows(b, key0, kv_head), v.rows(b, key0, kv_head),
                               key_end(run.first_block + run.blocks - 1) - key0, key0, masks.of(run.partial)};
        cpu::backward_block<T>(q.rows(b, query0, h), dout.rows(b, query0, h),
                               Rows<T>{lse + (b * H + h) * N + query0, 1}, Rows<T>{delta + (b * H + h) * N + query0, 1},
                               query_end(i) - query0, query0, keys, D, scale, T(1), dq.rows(b, query0, h),
                               MutableRows<T>{nullptr, 0}, MutableRows<T>{nullptr, 0}, scratch.workspace);
      }
    }
  });
  cpu::finish_accumulator(dq, p.dq, s, H);
  cpu::finish_accumulator(dk, p.dk, s, Hk);
  cpu::finish_accumulator(dv, p.dv, s, Hk);
}

}  // namespace

void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params) {
  if (params.dtype == DType::f64) {
    forward<double>(params);
  } else {
    forward<float>(params);
  }
}

void block_sparse_attention_backward_cpu(const BlockSparseAttentionParams& params) {
  if (params.dtype == DType::f64) {
    backward<double>(params);
  } else {
    backward<float>(params);
  }
}

}  // namespace longnet::kernels
