// The block-sparse paths of the `longnet` program: `longnet attn --pattern ...` and
// `--mask FILE` against the library called directly on the same tensors (bitwise: the CPU
// engine is deterministic), `longnet mask` (description, mask file, PNG), `longnet bench
// attention --impl block_sparse` on tiny sizes (table, JSON, plot; no time is asserted),
// and their bad inputs, each a one-line error naming the flag.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "longnet/attention/block_sparse_attention.hpp"
#include "longnet/io/safetensors.hpp"
#include "plot/plot.hpp"
#include "png_reader.hpp"

namespace longnet::testing {
namespace {

NamedTensors make_inputs(std::int64_t N, std::int64_t H, std::int64_t Hk, std::int64_t D) {
  return {{"q", Tensor::randn({1, N, H, D}, 21)},
          {"k", Tensor::randn({1, N, Hk, D}, 22)},
          {"v", Tensor::randn({1, N, Hk, D}, 23)},
          {"do", Tensor::randn({1, N, H, D}, 24)}};
}

const Tensor& named(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  throw Error(str("no tensor ", name));
}

void expect_same(const SafetensorsReader& file, const std::string& name, const Tensor& expected) {
  ASSERT_TRUE(file.contains(name)) << name;
  const Tensor actual = file.load(name);
  ASSERT_EQ(actual.shape(), expected.shape()) << name;
  EXPECT_EQ(actual.to_vector<float>(), expected.to(DType::f32).to_vector<float>()) << name;
}

// Runs `longnet attn` with `flags` on fresh inputs and compares with the library on `mask`.
void expect_attn_matches(const std::vector<std::string>& flags, const BlockMask& mask, const std::string& tag) {
  const ScratchFolder folder(str("bs_attn_", tag));
  const NamedTensors inputs = make_inputs(mask.seq_len(), 4, 2, 8);
  save_safetensors(folder / "in.safetensors", inputs);
  std::vector<std::string> args = {
      "attn",     "--input", folder / "in.safetensors", "--output", folder / "out.safetensors", "--backward",
      "--repeat", "2"};
  args.insert(args.end(), flags.begin(), flags.end());
  const CliResult run = run_longnet(args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("block-sparse: "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("median of 2 runs"), std::string::npos) << run.output;

  const Tensor &q = named(inputs, "q"), &k = named(inputs, "k"), &v = named(inputs, "v"), &dout = named(inputs, "do");
  const AttentionOutput expected = block_sparse_attention_forward(mask, q, k, v);
  const AttentionGradients grads = block_sparse_attention_backward(mask, q, k, v, expected, dout);
  const SafetensorsReader out(folder / "out.safetensors");
  expect_same(out, "o", expected.out);
  expect_same(out, "lse", expected.lse);
  expect_same(out, "dq", grads.dq);
  expect_same(out, "dk", grads.dk);
  expect_same(out, "dv", grads.dv);
  EXPECT_EQ(out.metadata().at("attention"), "block_sparse");
  EXPECT_EQ(out.metadata().at("block_q"), std::to_string(mask.block_q()));
}

TEST(BlockSparseCommand, AttnWithPatternsMatchesTheLibrary) {
  const BlockGrid grid{100, 16, 16, true};
  expect_attn_matches({"--pattern", "local", "--window", "2", "--block-size", "16", "--causal"},
                      local_window_blocks(grid, 2), "local");
  // A union by a repeated flag and by a comma list; per-head random draws; sliding window.
  const BlockGrid uneven{100, 16, 32, false};
  expect_attn_matches(
      {"--pattern", "sliding_window,global", "--pattern", "random", "--before", "9", "--after", "3", "--global-tokens",
       "0,50", "--random-blocks", "2", "--seed", "7", "--per-head", "--block-q", "16", "--block-k", "32"},
      union_of({sliding_window_blocks(uneven, 9, 3), global_blocks(uneven, {0, 50}), random_blocks(uneven, 2, 7, 4)}),
      "union");
  expect_attn_matches({"--pattern", "dilated,hierarchical", "--segment-blocks", "4", "--stride", "2", "--levels",
                       "2:1,4:2", "--block-size", "8"},
                      union_of({dilated_blocks({100, 8, 8, false}, {4, 2}, 1),
                                hierarchical_blocks({100, 8, 8, false}, {{2, 1}, {4, 2}}, 1)}),
                      "dilated");
}

TEST(BlockSparseCommand, MaskFileRoundTrip) {
  const ScratchFolder folder("bs_mask_file");
  const CliResult saved = run_longnet({"mask",
                                       "--pattern",
                                       "random",
                                       "--random-blocks",
                                       "2",
                                       "--seed",
                                       "3",
                                       "--per-head",
                                       "--heads",
                                       "4",
                                       "--seq-len",
                                       "90",
                                       "--block-size",
                                       "16",
                                       "--save",
                                       folder / "m.safetensors",
                                       "--png",
                                       folder / "m.png",
                                       "--head",
                                       "2"});
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  EXPECT_NE(saved.output.find("random(blocks=2, seed=3, per head)"), std::string::npos) << saved.output;
  EXPECT_NE(saved.output.find("attended pairs: "), std::string::npos) << saved.output;
  const BlockMask expected = random_blocks({90, 16, 16, false}, 2, 3, 4);
  const BlockMask loaded = load_block_mask(folder / "m.safetensors");
  EXPECT_EQ(loaded.lists(), expected.lists());
  const DecodedPng png = read_png(folder / "m.png");
  ASSERT_TRUE(png.ok) << png.message;
  EXPECT_GE(png.width, 450);  // 5 pixels per position (90 positions) plus margins
  // The mask file drives `longnet attn --mask`.
  expect_attn_matches({"--mask", folder / "m.safetensors"}, expected, "mask_file");
}

TEST(BlockSparseCommand, MaskPictureShowsTheListedBlocks) {
  const ScratchFolder folder("bs_mask_png");
  // Query block 0 lists key block 1 only (N = 128, blocks of 64, 128 x 128 pixels).
  const BlockMask mask = BlockMask::from_lists({128, 64, 64, false}, {{{1}, {0, 1}}});
  save_block_mask(folder / "m.safetensors", mask);
  const CliResult run = run_longnet(
      {"mask", "--mask", folder / "m.safetensors", "--png", folder / "m.png", "--size", "128", "--title", "T"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const DecodedPng png = read_png(folder / "m.png");
  ASSERT_TRUE(png.ok) << png.message;
  // The matrix starts below the title (margins of 12 pixels around it).
  const int margin = 12, top = margin + plot::text_height(2) + margin;
  EXPECT_EQ(png.pixel(margin + 20, top + 20), 0xFFFFFFu);                           // (query 20, key 20): not listed
  EXPECT_NE(png.pixel(margin + 100, top + 20), 0xFFFFFFu);                          // (query 20, key 100): listed
  EXPECT_NE(png.pixel(margin + 20, top + 100), 0xFFFFFFu);                          // (query 100, key 20): listed
  EXPECT_EQ(png.pixel(margin + 100, top + 20), png.pixel(margin + 30, top + 100));  // both full blocks
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

const std::vector<std::string> kTinyBench = {
    "bench",        "attention", "--impl",     "block_sparse", "--device", "cpu", "--heads",  "2",
    "--head-dim",   "8",         "--seq-lens", "128,256",      "--repeat", "1",   "--warmup", "0",
    "--block-size", "32"};

std::vector<std::string> tiny_bench(std::vector<std::string> more) {
  std::vector<std::string> args = kTinyBench;
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST(BlockSparseCommand, BenchSweepsDensitiesAgainstDense) {
  const ScratchFolder folder("bs_bench");
  const CliResult run =
      run_longnet(tiny_bench({"--densities", "0.5,0.25", "--json", folder / "b.json", "--plot", folder / "b.png"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("dense x d"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("ratio"), std::string::npos) << run.output;
  const nlohmann::json j = read_json(folder / "b.json");
  EXPECT_EQ(j["impl"], "block_sparse");
  ASSERT_EQ(j["results"].size(), 4u);  // two densities at each of two lengths
  for (const auto& row : j["results"]) {
    const std::int64_t n = row["seq_len"];
    const double wanted = row["mask"] == "random density 0.5" ? 0.5 : 0.25;
    // random_blocks(round(density * key blocks) per query block): exactly that share of the pairs.
    const BlockMask mask = random_blocks(
        {n, 32, 32, false}, static_cast<std::int64_t>(std::llround(wanted * static_cast<double>(n / 32))), 1);
    EXPECT_EQ(row["forward_flops"].get<double>(), block_sparse_attention_forward_flops(mask, 1, 2, 8));
    EXPECT_DOUBLE_EQ(row["density"].get<double>(), wanted);
    EXPECT_GT(row["forward_ms"].get<double>(), 0);
    EXPECT_GT(row["dense_forward_backward_ms"].get<double>(), 0);
    EXPECT_DOUBLE_EQ(row["forward_ratio"].get<double>(),
                     row["forward_ms"].get<double>() / (row["dense_forward_ms"].get<double>() * wanted));
  }
  const DecodedPng png = read_png(folder / "b.png");
  ASSERT_TRUE(png.ok) << png.message;
  EXPECT_EQ(png.width, 1400);
}

TEST(BlockSparseCommand, BenchWithAPatternAndWithoutDense) {
  const ScratchFolder folder("bs_bench_pattern");
  const CliResult run = run_longnet(
      tiny_bench({"--pattern", "local", "--causal", "--no-dense", "--forward-only", "--json", folder / "b.json"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = read_json(folder / "b.json");
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["mask"], "local(window=1)");
  EXPECT_TRUE(j["results"][0]["dense_forward_ms"].is_null());
  EXPECT_TRUE(j["results"][0]["forward_backward_ms"].is_null());
  EXPECT_TRUE(j["causal"].get<bool>());
}

void expect_failure(const std::vector<std::string>& args, const std::string& fragment) {
  const CliResult run = run_longnet(args);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << run.output;
}

TEST(BlockSparseCommand, BadInputsNameTheFlag) {
  const ScratchFolder folder("bs_bad");
  save_safetensors(folder / "in.safetensors", make_inputs(64, 2, 2, 8));
  const std::vector<std::string> attn = {"attn", "--input", folder / "in.safetensors", "--output",
                                         folder / "out.safetensors"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = attn;
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };
  expect_failure(with({"--pattern", "stripes"}), "--pattern = 'stripes': must be local, sliding_window");
  expect_failure(with({"--pattern", "local,,global"}), "--pattern = 'local,,global': empty item in the list");
  expect_failure(with({"--pattern", "local", "--pattern", "local"}), "--pattern: local is given twice");
  expect_failure(with({"--pattern", "local", "--window", "-1"}), "--window = -1: must be >= 0");
  expect_failure(with({"--pattern", "dilated", "--segment-blocks", "2", "--stride", "3"}),
                 "--stride = 3: must be <= --segment-blocks = 2");
  expect_failure(with({"--pattern", "hierarchical", "--levels", "8-1"}), "--levels = '8-1': '8-1' is not");
  expect_failure(with({"--pattern", "global", "--global-tokens", "0,x"}), "--global-tokens = '0,x'");
  expect_failure(with({"--pattern", "local", "--block-size", "0"}), "--block-size = 0: must be >= 1");
  expect_failure(with({"--pattern", "local", "--segments", "8", "--dilations", "1"}),
                 "--segments is a dilated-attention flag");
  expect_failure(with({"--pattern", "local", "--mask", folder / "none.safetensors"}), "--pattern and --mask");
  expect_failure(with({}), "--segments is required");
  expect_failure(with({"--segments", "8", "--dilations", "1", "--deterministic"}),
                 "--deterministic: applies to block-sparse attention");
  // A mask file for another N, or another causality.
  save_block_mask(folder / "m.safetensors", BlockMask::dense({100, 32, 32, false}));
  expect_failure(with({"--mask", folder / "m.safetensors"}), "is for seq_len 100 but the inputs have seq_len 64");
  save_block_mask(folder / "c.safetensors", BlockMask::dense({64, 32, 32, true}));
  expect_failure(with({"--mask", folder / "c.safetensors"}), "is causal but --causal is not given");
  EXPECT_FALSE(std::filesystem::exists(folder / "out.safetensors"));

  expect_failure(tiny_bench({"--densities", "0.5,0"}), "--densities contains 0: densities must be in (0, 1]");
  expect_failure(tiny_bench({"--densities", "half"}), "--densities = 'half': 'half' is not a number");
  expect_failure(tiny_bench({"--find-max-seq"}), "--find-max-seq: only with --impl dilated");
  expect_failure({"bench", "attention", "--pattern", "local", "--device", "cpu"},
                 "--pattern: give --impl block_sparse");
  expect_failure({"mask", "--pattern", "local"}, "--seq-len = 0: must be >= 1");
  expect_failure({"mask", "--seq-len", "64"}, "no block mask: give --pattern");
  expect_failure({"mask", "--pattern", "local", "--seq-len", "64", "--head", "3"}, "--head = 3: must be in [0, 1)");
}

}  // namespace
}  // namespace longnet::testing
