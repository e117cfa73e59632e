// The flags that describe a block mask of block-sparse attention (DESIGN 2.5), shared by
// `longnet attn`, `longnet bench attention --impl block_sparse` and `longnet mask`:
//   --pattern KIND[,KIND...]  generators whose union is the mask (repeat the flag or give a
//                             comma list): local, sliding_window, dilated, global, random,
//                             hierarchical; each kind at most once
//   --mask FILE               a mask file instead (safetensors, save_block_mask's format)
//   --block-size B | --block-q, --block-k   block sizes (default 64 x 64)
// and the generators' parameters, each read by its kind only: --window (local),
// --before/--after (sliding_window), --segment-blocks/--stride (dilated), --global-tokens
// (global), --random-blocks/--seed (random), --levels (hierarchical: a preset name or
// "S:R,S:R,..."), --per-head (dilated, hierarchical, random). Turning them into a
// validated BlockMask is the library's job; this file maps flag names onto it so that
// error messages name the flags the user typed.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "longnet/attention/block_mask.hpp"
#include "longnet/attention/block_patterns.hpp"

namespace longnet::cli {

struct BlockPatternOptions {
  std::vector<std::string> patterns;  // as typed: each may be a comma list
  std::string mask_file;
  std::optional<std::int64_t> block_size;  // else --block-q and --block-k
  std::int64_t block_q = 64, block_k = 64;
  std::int64_t window = 1;
  std::int64_t before = 256, after = 0;
  std::int64_t segment_blocks = 0, stride = 2;
  std::string global_tokens = "0";
  std::int64_t random_blocks = 1;
  std::uint64_t seed = 0;
  std::string levels = "longnet";
  bool per_head = false;

  // Registers the flags on `command`. With `with_mask_file`, also --mask.
  void add_to(CLI::App& command, bool with_mask_file);
  // Whether the user gave --pattern or --mask (then the command runs block-sparse attention).
  bool given() const { return !patterns.empty() || !mask_file.empty(); }
  // The generators of --pattern with their parameters; throws Error naming the flag.
  std::vector<BlockPattern> parsed_patterns() const;
  // The grid of the generated mask: N, the block sizes, causal.
  BlockGrid grid(std::int64_t seq_len, bool causal) const;
  // The mask for sequence length N and H query heads: the union of --pattern's
  // generators, or --mask's file, which must be for N and H (1 or H mask heads) and
  // agree with `causal`. Throws Error naming the flag, the value and the rule.
  BlockMask mask(std::int64_t seq_len, std::int64_t heads, bool causal) const;
  // "local(window=1) + random(blocks=2, seed=0)" or "mask file F".
  std::string describe() const;
};

// "8:1,32:4" or a preset name of hierarchical_preset into levels; throws Error naming `flag`.
std::vector<DilatedBlockLevel> parse_block_levels(const std::string& text, const std::string& flag);

}  // namespace longnet::cli
