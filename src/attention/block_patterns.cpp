// The block-mask generators (see block_patterns.hpp). Each builds per-(head, query block)
// lists of key blocks and hands them to BlockMask::from_lists, which applies the causal
// band of a causal grid (dropping blocks after the diagonal, flagging the diagonal ones).
#include "longnet/attention/block_patterns.hpp"

#include <algorithm>
#include <cmath>

#include "longnet/core/error.hpp"
#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/dilation.hpp"

namespace longnet {
namespace {

using Lists = BlockMask::Lists;

Lists empty_lists(const BlockGrid& grid, std::int64_t heads) {
  return Lists(static_cast<std::size_t>(heads),
               std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(grid.query_blocks())));
}

std::vector<std::int64_t>& list_of(Lists& lists, std::int64_t h, std::int64_t i) {
  return lists[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
}

// Key blocks overlapping positions [first, last] (clipped to the sequence).
void add_key_range(std::vector<std::int64_t>& list, const BlockGrid& grid, std::int64_t first, std::int64_t last) {
  first = std::max<std::int64_t>(first, 0);
  last = std::min(last, grid.seq_len - 1);
  for (std::int64_t j = first / grid.block_k; first <= last && j <= last / grid.block_k; ++j) list.push_back(j);
}

// The key block holding query block i's first position.
std::int64_t diagonal_key_block(const BlockGrid& grid, std::int64_t i) { return grid.query_begin(i) / grid.block_k; }

// The last key block query block i may list: its own last position's under causal.
std::int64_t last_allowed_key_block(const BlockGrid& grid, std::int64_t i) {
  return grid.causal ? (grid.query_end(i) - 1) / grid.block_k : grid.key_blocks() - 1;
}

void require_heads(std::int64_t heads) { require(heads >= 1, "heads = ", heads, ": must be >= 1"); }

void validate_level(const DilatedBlockLevel& level, const std::string& name) {
  require(level.segment_blocks >= 0, name, ".segment_blocks = ", level.segment_blocks,
          ": must be >= 0 (0: one segment covering the sequence)");
  require(level.stride >= 1, name, ".stride = ", level.stride, ": must be >= 1");
  require(level.segment_blocks == 0 || level.stride <= level.segment_blocks, name, ".stride = ", level.stride,
          ": must be <= segment_blocks = ", level.segment_blocks);
}

}  // namespace

BlockMask local_window_blocks(const BlockGrid& grid, std::int64_t window) {
  grid.validate();
  require(window >= 0, "window = ", window, ": must be >= 0 (key blocks on each side)");
  Lists lists = empty_lists(grid, 1);
  for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
    const std::int64_t reach = window > grid.seq_len / grid.block_k + 1 ? grid.seq_len : window * grid.block_k;
    add_key_range(list_of(lists, 0, i), grid, grid.query_begin(i) - reach, grid.query_end(i) - 1 + reach);
  }
  return BlockMask::from_lists(grid, lists);
}

BlockMask sliding_window_blocks(const BlockGrid& grid, std::int64_t before, std::int64_t after) {
  grid.validate();
  require(before >= 0, "before = ", before, ": must be >= 0 (tokens before the query)");
  require(after >= 0, "after = ", after, ": must be >= 0 (tokens after the query)");
  before = std::min(before, grid.seq_len);
  after = std::min(after, grid.seq_len);
  Lists lists = empty_lists(grid, 1);
  for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
    add_key_range(list_of(lists, 0, i), grid, grid.query_begin(i) - before, grid.query_end(i) - 1 + after);
  }
  ElementMask band;
  band.min_distance = -after;
  band.max_distance = before;
  return BlockMask::from_lists(grid, lists, band);
}

BlockMask dilated_blocks(const BlockGrid& grid, DilatedBlockLevel level, std::int64_t heads) {
  grid.validate();
  validate_level(level, "level");
  require_heads(heads);
  const std::int64_t Kb = grid.key_blocks();
  const std::int64_t segment = level.segment_blocks == 0 ? Kb : level.segment_blocks;
  Lists lists = empty_lists(grid, heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    const std::int64_t offset = heads == 1 ? 0 : kernels::longnet_offset(h, heads, level.stride);
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      const std::int64_t first = diagonal_key_block(grid, i) / segment * segment;
      const std::int64_t end = std::min(first + segment, Kb);
      for (std::int64_t j = first + offset; j < end; j += level.stride) list_of(lists, h, i).push_back(j);
    }
  }
  return BlockMask::from_lists(grid, lists);
}

BlockMask global_blocks(const BlockGrid& grid, const std::vector<std::int64_t>& tokens) {
  grid.validate();
  std::vector<bool> global_row(static_cast<std::size_t>(grid.query_blocks()), false);
  std::vector<std::int64_t> columns;
  for (std::size_t n = 0; n < tokens.size(); ++n) {
    require(tokens[n] >= 0, "global_tokens[", n, "] = ", tokens[n], ": must be >= 0");
    if (tokens[n] >= grid.seq_len) continue;  // a shorter sequence simply lacks that token
    global_row[static_cast<std::size_t>(tokens[n] / grid.block_q)] = true;
    columns.push_back(tokens[n] / grid.block_k);
  }
  std::sort(columns.begin(), columns.end());
  columns.erase(std::unique(columns.begin(), columns.end()), columns.end());
  Lists lists = empty_lists(grid, 1);
  for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
    std::vector<std::int64_t>& list = list_of(lists, 0, i);
    if (global_row[static_cast<std::size_t>(i)]) {
      for (std::int64_t j = 0; j < grid.key_blocks(); ++j) list.push_back(j);
    } else {
      list = columns;
    }
  }
  return BlockMask::from_lists(grid, lists);
}

BlockMask random_blocks(const BlockGrid& grid, std::int64_t blocks_per_row, std::uint64_t seed, std::int64_t heads) {
  grid.validate();
  require(blocks_per_row >= 0, "random_blocks = ", blocks_per_row, ": must be >= 0 (key blocks per query block)");
  require_heads(heads);
  Lists lists = empty_lists(grid, heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      // Floyd's sampling of m distinct blocks from the n allowed ones [0, n): exactly m
      // draws, each from its own counter, so the mask depends on (seed, head, block) only.
      const std::int64_t n = last_allowed_key_block(grid, i) + 1;
      const std::int64_t m = std::min(blocks_per_row, n);
      const std::uint64_t key =
          kernels::counter_key(seed, static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(i));
      std::vector<std::int64_t>& chosen = list_of(lists, h, i);
      for (std::int64_t top = n - m; top < n; ++top) {
        const auto pick = static_cast<std::int64_t>(kernels::counter_bits(key, static_cast<std::uint64_t>(top)) %
                                                    static_cast<std::uint64_t>(top + 1));
        const bool taken = std::find(chosen.begin(), chosen.end(), pick) != chosen.end();
        chosen.push_back(taken ? top : pick);
      }
    }
  }
  return BlockMask::from_lists(grid, lists);
}

BlockMask hierarchical_blocks(const BlockGrid& grid, const std::vector<DilatedBlockLevel>& levels, std::int64_t heads) {
  require(!levels.empty(), "hierarchical levels: empty (give at least one (segment_blocks, stride) level)");
  std::vector<BlockMask> masks;
  for (std::size_t l = 0; l < levels.size(); ++l) {
    validate_level(levels[l], str("levels[", l, "]"));
    masks.push_back(dilated_blocks(grid, levels[l], heads));
  }
  return union_of(masks);
}

std::vector<DilatedBlockLevel> hierarchical_preset(std::string_view name) {
  if (name == "longnet") return {{8, 1}, {32, 4}, {128, 16}, {512, 64}};
  if (name == "two_level") return {{16, 1}, {256, 16}};
  if (name == "three_level") return {{8, 1}, {64, 8}, {512, 64}};
  throw Error(str("hierarchical preset '", name, "': must be longnet, two_level or three_level"));
}

std::vector<std::string> hierarchical_preset_names() { return {"longnet", "two_level", "three_level"}; }

std::string_view to_string(BlockPatternKind kind) {
  switch (kind) {
    case BlockPatternKind::local:
      return "local";
    case BlockPatternKind::sliding_window:
      return "sliding_window";
    case BlockPatternKind::dilated:
      return "dilated";
    case BlockPatternKind::global:
      return "global";
    case BlockPatternKind::random:
      return "random";
    case BlockPatternKind::hierarchical:
      return "hierarchical";
  }
  return "?";
}

BlockPatternKind parse_block_pattern_kind(std::string_view text, std::string_view argument) {
  for (const BlockPatternKind kind :
       {BlockPatternKind::local, BlockPatternKind::sliding_window, BlockPatternKind::dilated, BlockPatternKind::global,
        BlockPatternKind::random, BlockPatternKind::hierarchical}) {
    if (text == to_string(kind)) return kind;
  }
  throw Error(str(argument, " = '", text, "': must be local, sliding_window, dilated, global, random or hierarchical"));
}

BlockPattern BlockPattern::local_window(std::int64_t window) {
  BlockPattern p;
  p.kind = BlockPatternKind::local;
  p.window = window;
  return p;
}

BlockPattern BlockPattern::sliding_window(std::int64_t before, std::int64_t after) {
  BlockPattern p;
  p.kind = BlockPatternKind::sliding_window;
  p.before = before;
  p.after = after;
  return p;
}

BlockPattern BlockPattern::dilated(DilatedBlockLevel level, bool per_head) {
  BlockPattern p;
  p.kind = BlockPatternKind::dilated;
  p.level = level;
  p.per_head = per_head;
  return p;
}

BlockPattern BlockPattern::global(std::vector<std::int64_t> tokens) {
  BlockPattern p;
  p.kind = BlockPatternKind::global;
  p.global_tokens = std::move(tokens);
  return p;
}

BlockPattern BlockPattern::random(std::int64_t blocks_per_row, std::uint64_t seed, bool per_head) {
  BlockPattern p;
  p.kind = BlockPatternKind::random;
  p.random_blocks = blocks_per_row;
  p.seed = seed;
  p.per_head = per_head;
  return p;
}

BlockPattern BlockPattern::hierarchical(std::vector<DilatedBlockLevel> levels, bool per_head) {
  BlockPattern p;
  p.kind = BlockPatternKind::hierarchical;
  p.levels = std::move(levels);
  p.per_head = per_head;
  return p;
}

void BlockPattern::validate() const {
  switch (kind) {
    case BlockPatternKind::local:
      require(window >= 0, "window = ", window, ": must be >= 0 (key blocks on each side)");
      return;
    case BlockPatternKind::sliding_window:
      require(before >= 0, "before = ", before, ": must be >= 0 (tokens before the query)");
      require(after >= 0, "after = ", after, ": must be >= 0 (tokens after the query)");
      return;
    case BlockPatternKind::dilated:
      validate_level(level, "level");
      return;
    case BlockPatternKind::global:
      for (std::size_t n = 0; n < global_tokens.size(); ++n) {
        require(global_tokens[n] >= 0, "global_tokens[", n, "] = ", global_tokens[n], ": must be >= 0");
      }
      return;
    case BlockPatternKind::random:
      require(random_blocks >= 0, "random_blocks = ", random_blocks, ": must be >= 0 (key blocks per query block)");
      return;
    case BlockPatternKind::hierarchical:
      require(!levels.empty(), "hierarchical levels: empty (give at least one (segment_blocks, stride) level)");
      for (std::size_t l = 0; l < levels.size(); ++l) validate_level(levels[l], str("levels[", l, "]"));
      return;
  }
}

BlockMask BlockPattern::build(const BlockGrid& grid, std::int64_t heads) const {
  validate();
  require_heads(heads);
  const std::int64_t mask_heads = per_head ? heads : 1;
  switch (kind) {
    case BlockPatternKind::local:
      return local_window_blocks(grid, window);
    case BlockPatternKind::sliding_window:
      return sliding_window_blocks(grid, before, after);
    case BlockPatternKind::dilated:
      return dilated_blocks(grid, level, mask_heads);
    case BlockPatternKind::global:
      return global_blocks(grid, global_tokens);
    case BlockPatternKind::random:
      return longnet::random_blocks(grid, random_blocks, seed, mask_heads);
    case BlockPatternKind::hierarchical:
      return hierarchical_blocks(grid, levels, mask_heads);
  }
  throw Error("BlockPattern: unknown kind");
}

std::string BlockPattern::describe() const {
  const std::string heads = per_head ? ", per head" : "";
  switch (kind) {
    case BlockPatternKind::local:
      return str("local(window=", window, ")");
    case BlockPatternKind::sliding_window:
      return str("sliding_window(before=", before, ", after=", after, ")");
    case BlockPatternKind::dilated:
      return str("dilated(segment_blocks=", level.segment_blocks, ", stride=", level.stride, heads, ")");
    case BlockPatternKind::global: {
      std::string tokens;
      for (std::size_t n = 0; n < global_tokens.size() && n < 8; ++n) tokens += str(n ? "," : "", global_tokens[n]);
      if (global_tokens.size() > 8) tokens += str(",... (", global_tokens.size(), " tokens)");
      return str("global(tokens=", tokens, ")");
    }
    case BlockPatternKind::random:
      return str("random(blocks=", random_blocks, ", seed=", seed, heads, ")");
    case BlockPatternKind::hierarchical: {
      std::string text = "hierarchical(";
      for (std::size_t l = 0; l < levels.size(); ++l) {
        text += str(l ? " " : "", "(", levels[l].segment_blocks, ",", levels[l].stride, ")");
      }
      return text + heads + ")";
    }
  }
  return "?";
}

BlockMask build_block_mask(const BlockGrid& grid, const std::vector<BlockPattern>& patterns, std::int64_t heads) {
  require(!patterns.empty(), "block patterns: empty (give at least one of local, sliding_window, dilated, global, ",
          "random, hierarchical)");
  std::vector<BlockMask> masks;
  for (const BlockPattern& pattern : patterns) masks.push_back(pattern.build(grid, heads));
  return masks.size() == 1 ? masks[0] : union_of(masks);
}

}  // namespace longnet
