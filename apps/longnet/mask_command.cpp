// `longnet mask`: builds a block mask of block-sparse attention (DESIGN 2.5) from the
// generator flags of block_pattern_options.hpp (or reads a mask file), prints what it is
// (blocks, density, attended pairs), and optionally saves it as a mask file (--save, the
// format `longnet attn --mask` and PyTorch read) and draws it as a PNG (--png): the
// N x N matrix of (query, key) pairs of one head, queries downwards and keys rightwards,
// each pixel a square of positions. Colours: attended pairs of full blocks dark blue,
// attended pairs of partial blocks light blue, pairs of partial blocks that the element
// mask (band, causal) drops pale grey, unlisted pairs white; thin lines mark the blocks
// when they are at least 4 pixels apart.
#include <algorithm>
#include <iostream>
#include <memory>

#include "block_pattern_options.hpp"
#include "commands.hpp"
#include "longnet/attention/block_mask.hpp"
#include "longnet/core/error.hpp"
#include "plot/plot.hpp"

namespace longnet::cli {
namespace {

struct MaskOptions {
  BlockPatternOptions blocks;
  std::int64_t seq_len = 0, heads = 1, head = 0;
  bool causal = false;
  std::string png, save, title;
  int size = 512;
};

constexpr plot::Color kFull{31, 78, 160};
constexpr plot::Color kPartial{122, 168, 230};
constexpr plot::Color kDropped{228, 228, 228};
constexpr plot::Color kGrid{200, 200, 200};

// Whether (head h's) key block j is listed for query block i, and whether it is partial.
struct BlockCell {
  bool listed = false, partial = false;
};

BlockCell cell(const BlockMask& mask, std::int64_t h, std::int64_t i, std::int64_t j) {
  const auto keys = mask.key_blocks_of(mask.mask_head(h), i);
  const auto found = std::lower_bound(keys.begin(), keys.end(), static_cast<std::int32_t>(j));
  if (found == keys.end() || *found != j) return {};
  return {true, mask.key_partial_of(mask.mask_head(h), i)[static_cast<std::size_t>(found - keys.begin())] != 0};
}

plot::Image render_mask(const BlockMask& mask, std::int64_t head, int size, const std::string& title) {
  const std::int64_t N = mask.seq_len();
  const int side = static_cast<int>(std::min<std::int64_t>(size, N * std::max<std::int64_t>(1, size / N)));
  constexpr int kMargin = 12, kTextScale = 2;
  const int title_height = title.empty() ? 0 : plot::text_height(kTextScale) + kMargin;
  plot::Image image(std::max(side, title.empty() ? 0 : plot::text_width(title, kTextScale)) + 2 * kMargin,
                    side + 2 * kMargin + title_height);
  if (!title.empty()) plot::draw_text(image, kMargin, kMargin, title, plot::kBlack, kTextScale);
  const int top = kMargin + title_height, left = kMargin;
  // Pixel (x, y) shows the pair (query at the middle of row y's positions, key likewise).
  auto position = [&](int pixel) {
    return std::min(N - 1, (2 * static_cast<std::int64_t>(pixel) + 1) * N / (2 * static_cast<std::int64_t>(side)));
  };
  for (int y = 0; y < side; ++y) {
    const std::int64_t q = position(y);
    for (int x = 0; x < side; ++x) {
      const std::int64_t k = position(x);
      const BlockCell c = cell(mask, head, q / mask.block_q(), k / mask.block_k());
      if (!c.listed) continue;
      const bool attended = mask.allows(head, q, k);
      image.set_pixel(left + x, top + y, attended ? (c.partial ? kPartial : kFull) : kDropped);
    }
  }
  // Block boundaries, when they are far enough apart to read.
  const double per_q = static_cast<double>(side) * static_cast<double>(mask.block_q()) / static_cast<double>(N);
  const double per_k = static_cast<double>(side) * static_cast<double>(mask.block_k()) / static_cast<double>(N);
  if (per_q >= 4 && per_k >= 4) {
    for (std::int64_t i = 0; i <= mask.query_blocks(); ++i) {
      const double y = top + std::min(static_cast<double>(side), static_cast<double>(i) * per_q);
      image.draw_line(left, y, left + side, y, kGrid);
    }
    for (std::int64_t j = 0; j <= mask.key_blocks(); ++j) {
      const double x = left + std::min(static_cast<double>(side), static_cast<double>(j) * per_k);
      image.draw_line(x, top, x, top + side, kGrid);
    }
  }
  // The frame.
  image.draw_line(left, top, left + side, top, plot::kBlack);
  image.draw_line(left, top + side, left + side, top + side, plot::kBlack);
  image.draw_line(left, top, left, top + side, plot::kBlack);
  image.draw_line(left + side, top, left + side, top + side, plot::kBlack);
  return image;
}

int run_mask(const MaskOptions& o) {
  require(o.heads >= 1, "--heads = ", o.heads, ": must be >= 1");
  require(o.size >= 16 && o.size <= 8192, "--size = ", o.size, ": must be in [16, 8192] pixels");
  BlockMask mask;
  if (!o.blocks.mask_file.empty()) {
    require(o.blocks.patterns.empty(), "--pattern and --mask: give one of them (a mask file holds its blocks already)");
    mask = load_block_mask(o.blocks.mask_file);
  } else {
    require(!o.blocks.patterns.empty(), "no block mask: give --pattern (with --seq-len) or --mask");
    require(o.seq_len >= 1, "--seq-len = ", o.seq_len, ": must be >= 1 (the sequence length the mask is for)");
    mask = build_block_mask(o.blocks.grid(o.seq_len, o.causal), o.blocks.parsed_patterns(), o.heads);
  }
  const std::int64_t heads = mask.shared() ? o.heads : mask.heads();
  require(o.head >= 0 && o.head < heads, "--head = ", o.head, ": must be in [0, ", heads, ")");
  double pairs = 0;
  for (std::int64_t h = 0; h < heads; ++h) pairs += static_cast<double>(mask.attended_pairs(h));
  const double all =
      static_cast<double>(heads) * static_cast<double>(mask.seq_len()) * static_cast<double>(mask.seq_len());
  std::cout << "mask: " << o.blocks.describe() << "\n" << mask.describe() << "\n";
  std::cout << "attended pairs: " << pairs << " of " << all << " (" << 100.0 * pairs / all << "% of all pairs, over "
            << heads << (heads == 1 ? " head" : " heads") << ")\n";
  if (!o.save.empty()) {
    save_block_mask(o.save, mask);
    std::cout << "wrote " << o.save << "\n";
  }
  if (!o.png.empty()) {
    const std::string title = o.title.empty() ? o.blocks.describe() : o.title;
    plot::save_png(o.png, render_mask(mask, o.head, o.size, title));
    std::cout << "wrote " << o.png << "\n";
  }
  return 0;
}

}  // namespace

Command add_mask_command(CLI::App& app) {
  auto o = std::make_shared<MaskOptions>();
  auto* command = app.add_subcommand(
      "mask", "Build a block mask of block-sparse attention from --pattern (or read --mask); describe, save, draw it");
  command->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins
  o->blocks.add_to(*command, /*with_mask_file=*/true);
  command->add_option("--seq-len", o->seq_len, "Sequence length N of the mask (with --pattern)");
  command->add_option("--heads", o->heads, "Query heads H (per-head patterns make one mask per head)")
      ->capture_default_str();
  command->add_flag("--causal", o->causal, "Causal: no key after its query");
  command->add_option("--save", o->save, "Write the mask to this safetensors mask file");
  command->add_option("--png", o->png, "Draw head --head's (query, key) pairs as a PNG to this file");
  command->add_option("--head", o->head, "The head --png draws")->capture_default_str();
  command->add_option("--size", o->size, "Width of the drawn matrix in pixels")->capture_default_str();
  command->add_option("--title", o->title, "Title above the picture (default: the patterns)");
  return {command, [o] { return run_mask(*o); }};
}

}  // namespace longnet::cli
