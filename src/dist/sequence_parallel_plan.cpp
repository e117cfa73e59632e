// Builds one rank's SequenceParallelPlan (see the header for the rule). Per pattern, the
// segments inside one of the rank's blocks become repeated local tasks (no per-segment
// work, however many segments there are); only segments that cross a block boundary
// (at most two per block and pattern) are enumerated, in ascending order, and produce
// sends, receives and tasks with several key pieces. Every rank enumerates a crossing
// segment's (kv head, offset, block) triples in the same order, which is what makes the
// sender's packing order equal the receiver's unpacking order.
#include "longnet/dist/sequence_parallel_plan.hpp"

#include <algorithm>
#include <set>

namespace longnet {
namespace {

using kernels::ceil_div;
using kernels::KeyPiece;
using kernels::QueryRange;
using kernels::RowRange;
using kernels::RowSource;
using kernels::SequenceTask;
using kernels::VirtualSequence;

// Virtual indices [first, end) of `vs` whose positions lie in `block`.
struct IndexRange {
  std::int64_t first = 0, end = 0;
  bool empty() const { return end <= first; }
  std::int64_t count() const { return end - first; }
};

IndexRange index_range(const VirtualSequence& vs, const SequenceBlock& block) {
  auto first_at_or_after = [&](std::int64_t position) {
    if (position <= vs.first_row) return std::int64_t{0};
    return std::min(vs.length, ceil_div(position - vs.first_row, vs.row_step));
  };
  return {first_at_or_after(block.begin), first_at_or_after(block.end)};
}

std::int64_t local_row(const SequenceBlock& block, std::int64_t position) {
  return block.local_begin + (position - block.begin);
}

class PlanBuilder {
 public:
  PlanBuilder(const SequenceLayout& layout, int rank, SequenceParallelPlan& plan)
      : layout_(layout),
        me_(rank),
        plan_(plan),
        send_runs_(static_cast<std::size_t>(layout.world_size())),
        send_counts_(static_cast<std::size_t>(layout.world_size()), 0),
        receive_counts_(static_cast<std::size_t>(layout.world_size()), 0) {
    for (std::size_t i = 0; i < layout.blocks().size(); ++i) {
      if (layout.blocks()[i].rank == me_) my_blocks_.push_back(i);
    }
  }

  void add_pattern(std::int64_t pattern_index) {
    pattern_index_ = pattern_index;
    pattern_ = plan_.patterns[static_cast<std::size_t>(pattern_index)];
    compute_offsets();
    std::set<std::int64_t> crossing;  // segments that cross a block boundary, ascending
    for (std::size_t b : my_blocks_) {
      const SequenceBlock& block = layout_.blocks()[b];
      const std::int64_t first = block.begin / pattern_.segment_length;
      const std::int64_t last = (block.end - 1) / pattern_.segment_length;
      if (!inside(first, block)) crossing.insert(first);
      if (!inside(last, block)) crossing.insert(last);
      const std::int64_t interior_first = inside(first, block) ? first : first + 1;
      const std::int64_t interior_last = inside(last, block) ? last : last - 1;
      add_interior_segments(block, interior_first, interior_last);
    }
    for (std::int64_t segment : crossing) add_crossing_segment(segment);
  }

  void finish() {
    const auto P = static_cast<std::size_t>(layout_.world_size());
    std::vector<std::int64_t> receive_base(P, 0);
    for (std::size_t peer = 0; peer < P; ++peer) {
      if (send_counts_[peer] > 0) {
        plan_.sends.push_back(
            {static_cast<int>(peer), plan_.send_rows, send_counts_[peer], std::move(send_runs_[peer])});
        plan_.send_rows += send_counts_[peer];
      }
      receive_base[peer] = plan_.receive_rows;
      if (receive_counts_[peer] > 0) {
        plan_.receives.push_back({static_cast<int>(peer), plan_.receive_rows, receive_counts_[peer], {}});
        plan_.receive_rows += receive_counts_[peer];
      }
    }
    for (const auto& [piece, peer] : gathered_pieces_) {
      plan_.pieces[piece].keys.first_row += receive_base[static_cast<std::size_t>(peer)];
    }
    count_pairs();
  }

 private:
  // This rank's blocks with index in [first, last], ascending.
  std::vector<std::size_t> my_blocks_in(std::size_t first, std::size_t last) const {
    std::vector<std::size_t> out;
    for (std::size_t b : my_blocks_) {
      if (b >= first && b <= last) out.push_back(b);
    }
    return out;
  }

  std::int64_t segment_end(std::int64_t segment) const {
    const std::int64_t begin = segment * pattern_.segment_length;
    return begin + std::min(pattern_.segment_length, layout_.seq_len() - begin);
  }
  bool inside(std::int64_t segment, const SequenceBlock& block) const {
    return segment * pattern_.segment_length >= block.begin && segment_end(segment) <= block.end;
  }

  // offsets_[kh]: the distinct offsets the query heads of kv head kh use under the pattern.
  void compute_offsets() {
    const std::int64_t group = plan_.heads / plan_.kv_heads;
    const auto G = static_cast<std::int64_t>(plan_.patterns.size());
    offsets_.assign(static_cast<std::size_t>(plan_.kv_heads), {});
    for (std::int64_t h = 0; h < plan_.heads; ++h) {
      const std::int64_t o =
          kernels::pattern_offset(plan_.mode, pattern_index_, G, pattern_.dilation_rate, h, plan_.heads);
      auto& list = offsets_[static_cast<std::size_t>(h / group)];
      if (o >= 0 && std::find(list.begin(), list.end(), o) == list.end()) list.push_back(o);
    }
    for (auto& list : offsets_) std::sort(list.begin(), list.end());
  }

  // Segments [first, last] lie inside `block`: one repeated local task per (kv head,
  // offset) for the full-length ones and one for a shorter final segment of the sequence.
  void add_interior_segments(const SequenceBlock& block, std::int64_t first, std::int64_t last) {
    if (first > last) return;
    const std::int64_t w = pattern_.segment_length;
    const bool short_last = segment_end(last) - last * w < w;
    if (short_last) {
      add_local_run(block, last, 1);
      --last;
    }
    if (first <= last) add_local_run(block, first, last - first + 1);
  }

  void add_local_run(const SequenceBlock& block, std::int64_t segment, std::int64_t repeats) {
    for (std::int64_t kh = 0; kh < plan_.kv_heads; ++kh) {
      for (std::int64_t o : offsets_[static_cast<std::size_t>(kh)]) {
        const VirtualSequence vs = kernels::virtual_sequence(layout_.seq_len(), pattern_, o, segment);
        if (vs.length == 0) continue;
        const std::int64_t row = local_row(block, vs.first_row);
        const auto range_index = static_cast<std::int64_t>(plan_.ranges.size());
        const auto piece_index = static_cast<std::int64_t>(plan_.pieces.size());
        plan_.pieces.push_back({RowRange{RowSource::local, row, pattern_.dilation_rate, vs.length}, plan_.causal});
        plan_.ranges.push_back({row, vs.length, piece_index, piece_index + 1});
        plan_.tasks.push_back(
            {pattern_index_, o, kh, range_index, range_index + 1, repeats, repeats > 1 ? pattern_.segment_length : 0});
      }
    }
  }

  void add_crossing_segment(std::int64_t segment) {
    const std::size_t first_block = layout_.block_of(segment * pattern_.segment_length);
    const std::size_t last_block = layout_.block_of(segment_end(segment) - 1);
    const auto& blocks = layout_.blocks();
    std::vector<IndexRange> ranges(last_block - first_block + 1);
    const std::vector<std::size_t> mine = my_blocks_in(first_block, last_block);
    for (std::int64_t kh = 0; kh < plan_.kv_heads; ++kh) {
      for (std::int64_t o : offsets_[static_cast<std::size_t>(kh)]) {
        const VirtualSequence vs = kernels::virtual_sequence(layout_.seq_len(), pattern_, o, segment);
        if (vs.length == 0) continue;
        for (std::size_t i = 0; i < ranges.size(); ++i) ranges[i] = index_range(vs, blocks[first_block + i]);
        // Whether queries in block q attend to keys in block k.
        auto attends = [&](std::size_t q, std::size_t k) { return !plan_.causal || k <= q; };

        // Exchange: the key range of each block goes to every other rank with queries that
        // attend to it. Only the owner lists the readers (O(blocks)); a reader checks its own
        // blocks, so a segment over many ranks costs O(blocks) per (kv head, offset).
        std::vector<std::int64_t> received_at(ranges.size(), -1);  // row within the peer's receive run
        for (std::size_t k = 0; k < ranges.size(); ++k) {
          if (ranges[k].empty()) continue;
          const SequenceBlock& key_block = blocks[first_block + k];
          const int owner = key_block.rank;
          if (owner == me_) {
            std::vector<int> readers;
            for (std::size_t q = 0; q < ranges.size(); ++q) {
              const int reader = blocks[first_block + q].rank;
              if (reader != me_ && !ranges[q].empty() && attends(q, k)) readers.push_back(reader);
            }
            std::sort(readers.begin(), readers.end());
            readers.erase(std::unique(readers.begin(), readers.end()), readers.end());
            const KvRowRun run{kh, local_row(key_block, vs.first_row + ranges[k].first * vs.row_step), vs.row_step,
                               ranges[k].count()};
            for (int reader : readers) {
              send_runs_[static_cast<std::size_t>(reader)].push_back(run);
              send_counts_[static_cast<std::size_t>(reader)] += run.count;
            }
            continue;
          }
          bool needed = false;
          for (std::size_t q : mine) {
            needed = needed || (!ranges[q - first_block].empty() && attends(q - first_block, k));
          }
          if (needed) {
            received_at[k] = receive_counts_[static_cast<std::size_t>(owner)];
            receive_counts_[static_cast<std::size_t>(owner)] += ranges[k].count();
          }
        }

        // The task: this rank's query ranges and their key pieces.
        const auto range_begin = static_cast<std::int64_t>(plan_.ranges.size());
        for (std::size_t my_block : mine) {
          const std::size_t q = my_block - first_block;
          const SequenceBlock& query_block = blocks[my_block];
          if (ranges[q].empty()) continue;
          QueryRange range{local_row(query_block, vs.first_row + ranges[q].first * vs.row_step), ranges[q].count(),
                           static_cast<std::int64_t>(plan_.pieces.size()), 0};
          for (std::size_t k = 0; k < ranges.size(); ++k) {
            if (ranges[k].empty() || !attends(q, k)) continue;
            const SequenceBlock& key_block = blocks[first_block + k];
            const bool diagonal = plan_.causal && k == q;
            if (key_block.rank == me_) {
              plan_.pieces.push_back(
                  {RowRange{RowSource::local, local_row(key_block, vs.first_row + ranges[k].first * vs.row_step),
                            vs.row_step, ranges[k].count()},
                   diagonal});
            } else {
              gathered_pieces_.emplace_back(plan_.pieces.size(), key_block.rank);
              plan_.pieces.push_back({RowRange{RowSource::gathered, received_at[k], 1, ranges[k].count()}, false});
            }
          }
          range.piece_end = static_cast<std::int64_t>(plan_.pieces.size());
          plan_.ranges.push_back(range);
        }
        const auto range_end = static_cast<std::int64_t>(plan_.ranges.size());
        if (range_end > range_begin) plan_.tasks.push_back({pattern_index_, o, kh, range_begin, range_end, 1, 0});
      }
    }
  }

  // Attended pairs of one batch element: per task, its heads x repeats x the pairs of
  // each (query range, piece): a diagonal piece of n rows is causal (n(n+1)/2).
  void count_pairs() {
    const std::int64_t group = plan_.heads / plan_.kv_heads;
    const auto G = static_cast<std::int64_t>(plan_.patterns.size());
    for (const SequenceTask& task : plan_.tasks) {
      const std::int64_t rate = plan_.patterns[static_cast<std::size_t>(task.pattern)].dilation_rate;
      std::int64_t heads = 0;
      for (std::int64_t h = task.kv_head * group; h < (task.kv_head + 1) * group; ++h) {
        heads += kernels::pattern_offset(plan_.mode, task.pattern, G, rate, h, plan_.heads) == task.offset;
      }
      std::int64_t pairs = 0;
      for (std::int64_t r = task.range_begin; r < task.range_end; ++r) {
        const QueryRange& range = plan_.ranges[static_cast<std::size_t>(r)];
        for (std::int64_t p = range.piece_begin; p < range.piece_end; ++p) {
          const KeyPiece& piece = plan_.pieces[static_cast<std::size_t>(p)];
          pairs += piece.diagonal ? kernels::sequence_pairs(piece.keys.count, true) : range.count * piece.keys.count;
        }
      }
      plan_.attended_pairs += heads * task.repeats * pairs;
    }
  }

  const SequenceLayout& layout_;
  int me_;
  SequenceParallelPlan& plan_;
  std::vector<std::size_t> my_blocks_;
  std::vector<std::vector<KvRowRun>> send_runs_;
  std::vector<std::int64_t> send_counts_, receive_counts_;
  std::vector<std::pair<std::size_t, int>> gathered_pieces_;  // (piece, owner): rows relative to the owner's run
  std::int64_t pattern_index_ = 0;
  DilationPattern pattern_;
  std::vector<std::vector<std::int64_t>> offsets_;
};

}  // namespace

namespace {

// Per pattern and block of `rank`: the rows from the block's first segment boundary to
// its last one (or to N when the block holds the sequence's end).
std::vector<kernels::EngineSlice> engine_slices(const SequenceLayout& layout, int rank,
                                                const std::vector<DilationPattern>& patterns) {
  std::vector<kernels::EngineSlice> slices;
  const std::int64_t N = layout.seq_len();
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    const std::int64_t w = patterns[i].segment_length;
    for (const SequenceBlock& block : layout.blocks()) {
      if (block.rank != rank) continue;
      const std::int64_t first = block.begin % w == 0 ? block.begin : (block.begin / w + 1) * w;
      const std::int64_t last = block.end >= N ? N : block.end / w * w;
      if (first >= block.end || last <= first) continue;
      slices.push_back({static_cast<std::int64_t>(i), block.local_begin + (first - block.begin), last - first});
    }
  }
  return slices;
}

}  // namespace

SequenceParallelPlan make_sequence_parallel_plan(const SequenceLayout& layout, int rank,
                                                 const DilatedAttentionConfig& config, std::int64_t heads,
                                                 std::int64_t kv_heads) {
  require(rank >= 0 && rank < layout.world_size(), "rank = ", rank, ": must be in [0, ", layout.world_size(), ")");
  require(heads >= 1, "heads = ", heads, ": must be >= 1");
  require(kv_heads >= 1 && heads % kv_heads == 0, "heads = ", heads, " and kv_heads = ", kv_heads,
          ": the number of query heads must be a multiple of the number of key/value heads");
  SequenceParallelPlan plan;
  plan.patterns = config.patterns();  // validates
  if (config.mode == DilatedMode::head_groups) {
    require(heads >= static_cast<std::int64_t>(plan.patterns.size()), "head_groups mode with ", plan.patterns.size(),
            " patterns needs at least ", plan.patterns.size(), " heads, got ", heads);
  }
  plan.rank = rank;
  plan.world_size = layout.world_size();
  plan.seq_len = layout.seq_len();
  plan.local_rows = layout.local_length(rank);
  plan.heads = heads;
  plan.kv_heads = kv_heads;
  plan.mode = config.mode;
  plan.causal = config.causal;

  PlanBuilder builder(layout, rank, plan);
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(plan.patterns.size()); ++i) builder.add_pattern(i);
  builder.finish();
  plan.engine_slices = engine_slices(layout, rank, plan.patterns);
  return plan;
}

}  // namespace longnet
