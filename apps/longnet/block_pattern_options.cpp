// Block-mask flags shared by the commands (see block_pattern_options.hpp).
#include "block_pattern_options.hpp"

#include <algorithm>

#include "longnet/core/error.hpp"
#include "parse_values.hpp"

namespace longnet::cli {
namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> items;
  std::string::size_type begin = 0;
  for (;;) {
    const auto end = text.find(separator, begin);
    items.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return items;
    begin = end + 1;
  }
}

}  // namespace

std::vector<DilatedBlockLevel> parse_block_levels(const std::string& text, const std::string& flag) {
  const std::vector<std::string> presets = hierarchical_preset_names();
  if (std::find(presets.begin(), presets.end(), text) != presets.end()) return hierarchical_preset(text);
  std::vector<DilatedBlockLevel> levels;
  for (const std::string& item : split(text, ',')) {
    const auto colon = item.find(':');
    require(!item.empty() && colon != std::string::npos, flag, " = '", text, "': '", item,
            "' is not SEGMENT_BLOCKS:STRIDE (give levels like 8:1,32:4 or a preset: longnet, two_level, three_level)");
    levels.push_back({parse_integer(item.substr(0, colon), flag), parse_integer(item.substr(colon + 1), flag)});
  }
  return levels;
}

void BlockPatternOptions::add_to(CLI::App& command, bool with_mask_file) {
  command
      .add_option("--pattern", patterns,
                  "Block-sparse attention: block patterns whose union is the mask, repeated or comma-separated: "
                  "local, sliding_window, dilated, global, random, hierarchical")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);  // repeats add up (a union)
  if (with_mask_file) {
    command.add_option("--mask", mask_file,
                       "Block-sparse attention with the block mask of this safetensors file (u8 'layout' (heads, "
                       "query_blocks, key_blocks): 0 none, 1 full, 2 partial; metadata seq_len, block_q, block_k)");
  }
  command.add_option("--block-size", block_size, "Block size of queries and keys (sets --block-q and --block-k)");
  command.add_option("--block-q", block_q, "Query block size")->capture_default_str();
  command.add_option("--block-k", block_k, "Key block size")->capture_default_str();
  command.add_option("--window", window, "local: key blocks on each side of the diagonal")->capture_default_str();
  command.add_option("--before", before, "sliding_window: tokens before the query")->capture_default_str();
  command.add_option("--after", after, "sliding_window: tokens after the query")->capture_default_str();
  command.add_option("--segment-blocks", segment_blocks, "dilated: key blocks per segment (0: the whole sequence)")
      ->capture_default_str();
  command.add_option("--stride", stride, "dilated: every stride-th key block of the segment")->capture_default_str();
  command.add_option("--global-tokens", global_tokens, "global: token positions, comma-separated")
      ->capture_default_str();
  command.add_option("--random-blocks", random_blocks, "random: key blocks per query block")->capture_default_str();
  command.add_option("--seed", seed, "random: seed (the same seed gives the same mask)")->capture_default_str();
  command
      .add_option("--levels", levels,
                  "hierarchical: SEGMENT_BLOCKS:STRIDE levels, comma-separated, or a preset: longnet, two_level, "
                  "three_level")
      ->capture_default_str();
  command.add_flag("--per-head", per_head,
                   "dilated, hierarchical: LongNet's offsets per head; random: a draw per head");
}

std::vector<BlockPattern> BlockPatternOptions::parsed_patterns() const {
  std::vector<BlockPattern> result;
  std::vector<BlockPatternKind> seen;
  for (const std::string& value : patterns) {
    for (const std::string& name : split(value, ',')) {
      require(!name.empty(), "--pattern = '", value, "': empty item in the list");
      const BlockPatternKind kind = parse_block_pattern_kind(name, "--pattern");
      require(std::find(seen.begin(), seen.end(), kind) == seen.end(), "--pattern: ", name,
              " is given twice: each kind appears once (its flags set its parameters; hierarchical unites several ",
              "dilated levels)");
      seen.push_back(kind);
      BlockPattern pattern;
      switch (kind) {
        case BlockPatternKind::local:
          require(window >= 0, "--window = ", window, ": must be >= 0 (key blocks on each side)");
          pattern = BlockPattern::local_window(window);
          break;
        case BlockPatternKind::sliding_window:
          require(before >= 0, "--before = ", before, ": must be >= 0 (tokens before the query)");
          require(after >= 0, "--after = ", after, ": must be >= 0 (tokens after the query)");
          pattern = BlockPattern::sliding_window(before, after);
          break;
        case BlockPatternKind::dilated:
          require(segment_blocks >= 0, "--segment-blocks = ", segment_blocks,
                  ": must be >= 0 (0: one segment covering the sequence)");
          require(stride >= 1, "--stride = ", stride, ": must be >= 1");
          require(segment_blocks == 0 || stride <= segment_blocks, "--stride = ", stride,
                  ": must be <= --segment-blocks = ", segment_blocks);
          pattern = BlockPattern::dilated({segment_blocks, stride}, per_head);
          break;
        case BlockPatternKind::global: {
          std::vector<std::int64_t> tokens = parse_integer_list(global_tokens, "--global-tokens");
          for (const std::int64_t token : tokens) {
            require(token >= 0, "--global-tokens contains ", token, ": positions must be >= 0");
          }
          pattern = BlockPattern::global(std::move(tokens));
          break;
        }
        case BlockPatternKind::random:
          require(random_blocks >= 0, "--random-blocks = ", random_blocks,
                  ": must be >= 0 (key blocks per query block)");
          pattern = BlockPattern::random(random_blocks, seed, per_head);
          break;
        case BlockPatternKind::hierarchical: {
          const std::vector<DilatedBlockLevel> parsed = parse_block_levels(levels, "--levels");
          for (std::size_t l = 0; l < parsed.size(); ++l) {
            require(parsed[l].segment_blocks >= 0, "--levels = '", levels, "': level ", l, " has segment_blocks ",
                    parsed[l].segment_blocks, ": must be >= 0");
            require(parsed[l].stride >= 1, "--levels = '", levels, "': level ", l, " has stride ", parsed[l].stride,
                    ": must be >= 1");
            require(parsed[l].segment_blocks == 0 || parsed[l].stride <= parsed[l].segment_blocks, "--levels = '",
                    levels, "': level ", l, " has stride ", parsed[l].stride, ": must be <= its segment_blocks ",
                    parsed[l].segment_blocks);
          }
          pattern = BlockPattern::hierarchical(parsed, per_head);
          break;
        }
      }
      pattern.validate();
      result.push_back(std::move(pattern));
    }
  }
  return result;
}

BlockGrid BlockPatternOptions::grid(std::int64_t seq_len, bool causal) const {
  if (block_size) require(*block_size >= 1, "--block-size = ", *block_size, ": must be >= 1");
  const std::int64_t q = block_size.value_or(block_q), k = block_size.value_or(block_k);
  require(q >= 1, "--block-q = ", q, ": must be >= 1");
  require(k >= 1, "--block-k = ", k, ": must be >= 1");
  return {seq_len, q, k, causal};
}

BlockMask BlockPatternOptions::mask(std::int64_t seq_len, std::int64_t heads, bool causal) const {
  require(patterns.empty() || mask_file.empty(), "--pattern and --mask: give one of them (a mask file holds its ",
          "blocks already)");
  require(given(), "no block mask: give --pattern or --mask");
  if (!mask_file.empty()) {
    BlockMask mask = load_block_mask(mask_file);
    require(mask.seq_len() == seq_len, "--mask ", mask_file, " is for seq_len ", mask.seq_len(),
            " but the inputs have seq_len ", seq_len, ": a mask file is for one N");
    require(mask.heads() == 1 || mask.heads() == heads, "--mask ", mask_file, " has ", mask.heads(),
            " heads but the inputs have ", heads, ": a mask is shared (1 head) or has one per query head");
    require(mask.grid().causal == causal, "--mask ", mask_file, " is ", mask.grid().causal ? "causal" : "non-causal",
            " but --causal is ", causal ? "given" : "not given", ": they must agree");
    return mask;
  }
  return build_block_mask(grid(seq_len, causal), parsed_patterns(), heads);
}

std::string BlockPatternOptions::describe() const {
  if (!mask_file.empty()) return "mask file " + mask_file;
  std::string text;
  for (const BlockPattern& pattern : parsed_patterns()) text += (text.empty() ? "" : " + ") + pattern.describe();
  return text;
}

}  // namespace longnet::cli
