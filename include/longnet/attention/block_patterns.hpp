// Generators of block masks (DESIGN 2.5) and their unions. Every generator takes the grid
// (N, block sizes, causal) and returns a BlockMask; with grid.causal no key block after a
// query block is listed and the diagonal blocks are partial with the causal band. Query
// block i covers positions [i Bq, (i+1) Bq) and key block j [j Bk, (j+1) Bk) (cut at N),
// so the generators are defined on positions and hold for Bq != Bk. "The diagonal key
// block" of query block i is the one holding its first position.
//
//   local_window     key blocks overlapping [first - w Bk, last + w Bk]: w blocks on each
//                    side (|i - j| <= w when Bq = Bk).
//   sliding_window   token-exact: key k with q - before <= k <= q + after (the band is the
//                    element mask of the cut blocks, so it runs on the GPU too).
//   dilated          LongNet at block granularity: key blocks in segments of S blocks; a
//                    query block attends to the key blocks j of its segment with
//                    (j mod S) mod r == offset. Shared: offset 0. Per head: LongNet's
//                    offsets o(h) = floor(h / ceil(H / r)) (kernels/dilation.hpp).
//   global           global tokens: the query blocks holding one attend to every key
//                    block (rows), and every query block attends to the key blocks
//                    holding one (columns).
//   random           r distinct key blocks per query block, drawn from a counter-based
//                    generator (the same seed gives the same mask everywhere); shared or a
//                    draw per head.
//   hierarchical     the union of dilated levels (S_l, r_l), e.g. the preset "longnet":
//                    (8, 1), (32, 4), (128, 16), (512, 64) — dense nearby, sparser far away.
//   a user list      BlockMask::from_lists or a mask file (block_mask.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/attention/block_mask.hpp"

namespace longnet {

// One level of dilated blocks: segments of `segment_blocks` key blocks (0: one segment
// covering the sequence), every `stride`-th block of a segment.
struct DilatedBlockLevel {
  std::int64_t segment_blocks = 0;
  std::int64_t stride = 1;
  friend bool operator==(const DilatedBlockLevel&, const DilatedBlockLevel&) = default;
};

// Each throws Error naming the parameter and the rule on bad values.
BlockMask local_window_blocks(const BlockGrid& grid, std::int64_t window);
BlockMask sliding_window_blocks(const BlockGrid& grid, std::int64_t before, std::int64_t after);
// heads > 1: one mask per head with LongNet's offsets; heads = 1: offset 0, shared.
BlockMask dilated_blocks(const BlockGrid& grid, DilatedBlockLevel level, std::int64_t heads = 1);
BlockMask global_blocks(const BlockGrid& grid, const std::vector<std::int64_t>& tokens);
// heads > 1: an independent draw per head.
BlockMask random_blocks(const BlockGrid& grid, std::int64_t blocks_per_row, std::uint64_t seed, std::int64_t heads = 1);
BlockMask hierarchical_blocks(const BlockGrid& grid, const std::vector<DilatedBlockLevel>& levels,
                              std::int64_t heads = 1);

// Named level sets of hierarchical_blocks: "longnet" (8,1) (32,4) (128,16) (512,64);
// "two_level" (16,1) (256,16); "three_level" (8,1) (64,8) (512,64).
std::vector<DilatedBlockLevel> hierarchical_preset(std::string_view name);
std::vector<std::string> hierarchical_preset_names();

// A generator with its parameters: what configurations and the command line hold. Only
// the fields of `kind` are read.
enum class BlockPatternKind { local, sliding_window, dilated, global, random, hierarchical };
std::string_view to_string(BlockPatternKind kind);
// "local", "sliding_window", "dilated", "global", "random", "hierarchical".
BlockPatternKind parse_block_pattern_kind(std::string_view text, std::string_view argument = "pattern");

struct BlockPattern {
  BlockPatternKind kind = BlockPatternKind::local;
  std::int64_t window = 1;                     // local: key blocks on each side
  std::int64_t before = 256, after = 0;        // sliding_window: tokens
  DilatedBlockLevel level{0, 2};               // dilated
  bool per_head = false;                       // dilated, hierarchical: offsets per head; random: draws
  std::vector<std::int64_t> global_tokens{0};  // global: token positions (those >= N are ignored)
  std::int64_t random_blocks = 1;              // random: key blocks per query block
  std::uint64_t seed = 0;                      // random
  std::vector<DilatedBlockLevel> levels{{8, 1}, {32, 4}, {128, 16}, {512, 64}};  // hierarchical

  static BlockPattern local_window(std::int64_t window);
  static BlockPattern sliding_window(std::int64_t before, std::int64_t after);
  static BlockPattern dilated(DilatedBlockLevel level, bool per_head = false);
  static BlockPattern global(std::vector<std::int64_t> tokens);
  static BlockPattern random(std::int64_t blocks_per_row, std::uint64_t seed, bool per_head = false);
  static BlockPattern hierarchical(std::vector<DilatedBlockLevel> levels, bool per_head = false);

  // Throws Error naming the field and the rule (independent of N).
  void validate() const;
  // The mask for `grid` and `heads` query heads (used by per-head patterns).
  BlockMask build(const BlockGrid& grid, std::int64_t heads) const;
  std::string describe() const;  // "local(window=2)"
};

// The union of the patterns' masks; throws Error when `patterns` is empty.
BlockMask build_block_mask(const BlockGrid& grid, const std::vector<BlockPattern>& patterns, std::int64_t heads);

}  // namespace longnet
