// `longnet attn` end to end: inputs written to a safetensors file, the program run on
// them, its output file compared with the library called directly on the same tensors
// (bitwise: the CPU engine is deterministic); and every bad input of issue 3 giving a
// non-zero exit, the expected one-line message, and no output file.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli_runner.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/io/safetensors.hpp"

namespace longnet::testing {
namespace {

struct Case {
  std::int64_t batch, seq_len, heads, kv_heads, head_dim;
  DType file_dtype;  // how the inputs are stored
  DType compute_dtype;
  DilatedAttentionConfig config;
  std::vector<std::string> flags;  // the same configuration as flags
};

NamedTensors make_inputs(const Case& c, bool with_dout) {
  const Shape q_shape{c.batch, c.seq_len, c.heads, c.head_dim}, kv_shape{c.batch, c.seq_len, c.kv_heads, c.head_dim};
  NamedTensors inputs = {{"q", Tensor::randn(q_shape, 11, c.file_dtype)},
                         {"k", Tensor::randn(kv_shape, 12, c.file_dtype)},
                         {"v", Tensor::randn(kv_shape, 13, c.file_dtype)}};
  if (with_dout) inputs.emplace_back("do", Tensor::randn(q_shape, 14, c.file_dtype));
  return inputs;
}

const Tensor& named(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  throw Error(str("no tensor ", name));
}

void expect_same(const SafetensorsReader& file, const std::string& name, const Tensor& expected) {
  ASSERT_TRUE(file.contains(name)) << name;
  EXPECT_EQ(file.entry(name).dtype, DType::f32) << name;
  const Tensor actual = file.load(name);
  ASSERT_EQ(actual.shape(), expected.shape()) << name;
  EXPECT_EQ(actual.to_vector<float>(), expected.to(DType::f32).to_vector<float>()) << name;
}

void run_round_trip(const Case& c, const std::string& tag) {
  const ScratchFolder folder(str("attn_", tag));
  const NamedTensors inputs = make_inputs(c, true);
  save_safetensors(folder / "in.safetensors", inputs);
  std::vector<std::string> args = {"attn",
                                   "--input",
                                   folder / "in.safetensors",
                                   "--output",
                                   folder / "out.safetensors",
                                   "--backward",
                                   "--repeat",
                                   "2",
                                   "--dtype",
                                   std::string(dtype_name(c.compute_dtype))};
  args.insert(args.end(), c.flags.begin(), c.flags.end());
  const CliResult run = run_longnet(args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("median of 2 runs"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("GFLOP/s"), std::string::npos) << run.output;

  // The library on the same tensors, converted to the compute dtype as the program does.
  const Tensor q = named(inputs, "q").to(c.compute_dtype), k = named(inputs, "k").to(c.compute_dtype),
               v = named(inputs, "v").to(c.compute_dtype), dout = named(inputs, "do").to(c.compute_dtype);
  const AttentionOutput expected = dilated_attention_forward(c.config, q, k, v);
  const AttentionGradients grads = dilated_attention_backward(c.config, q, k, v, expected, dout);
  const SafetensorsReader out(folder / "out.safetensors");
  expect_same(out, "o", expected.out);
  expect_same(out, "lse", expected.lse);
  expect_same(out, "dq", grads.dq);
  expect_same(out, "dk", grads.dk);
  expect_same(out, "dv", grads.dv);
  EXPECT_EQ(out.metadata().at("mode"), std::string(to_string(c.config.mode)));
}

TEST(AttnCommand, RoundTripLongNetModeGroupedQuery) {
  Case c{2, 70, 4, 2, 8, DType::f32, DType::f32, {}, {"--segments", "16,32", "--dilations", "1,2"}};
  c.config.segment_lengths = {16, 32};
  c.config.dilation_rates = {1, 2};
  run_round_trip(c, "longnet");
}

TEST(AttnCommand, RoundTripHeadGroupsCausalScaleFromBFloat16File) {
  Case c{1,
         45,
         3,
         3,
         5,
         DType::bf16,
         DType::f32,
         {},
         {"--segments", "8,20,64", "--dilations", "1,3,4", "--mode", "head_groups", "--causal", "--scale", "0.3"}};
  c.config.segment_lengths = {8, 20, 64};
  c.config.dilation_rates = {1, 3, 4};
  c.config.mode = DilatedMode::head_groups;
  c.config.causal = true;
  c.config.scale = 0.3;
  run_round_trip(c, "head_groups");
}

TEST(AttnCommand, RoundTripFloat64Compute) {
  Case c{1, 33, 2, 1, 4, DType::f16, DType::f64, {}, {"--segments", "1K", "--dilations", "3", "--causal"}};
  c.config.segment_lengths = {1024};
  c.config.dilation_rates = {3};
  c.config.causal = true;
  run_round_trip(c, "f64");
}

TEST(AttnCommand, ForwardOnlyWritesOutputAndLse) {
  const ScratchFolder folder("attn_forward");
  Case c{1, 20, 2, 2, 4, DType::f32, DType::f32, {}, {}};
  save_safetensors(folder / "in.safetensors", make_inputs(c, false));
  const CliResult run = run_longnet({"attn", "--input", folder / "in.safetensors", "--output",
                                     folder / "out.safetensors", "--segments", "8", "--dilations", "2"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const SafetensorsReader out(folder / "out.safetensors");
  EXPECT_EQ(out.tensor_names(), (std::vector<std::string>{"o", "lse"}));
  EXPECT_EQ(out.entry("lse").shape, (Shape{1, 2, 20}));
}

// Each bad input: a non-zero exit, a one-line "longnet: error: ..." naming the problem,
// and no output file.
class AttnBadInput : public ::testing::Test {
 protected:
  ScratchFolder folder{"attn_bad"};
  std::string input = folder / "in.safetensors";
  std::string output = folder / "out.safetensors";

  void write(const NamedTensors& tensors) { save_safetensors(input, tensors); }
  void write_good(bool with_dout = false) {
    Case c{1, 24, 4, 2, 8, DType::f32, DType::f32, {}, {}};
    write(make_inputs(c, with_dout));
  }
  void expect_error(std::vector<std::string> flags, const std::string& fragment) {
    std::vector<std::string> args = {"attn", "--input", input, "--output", output};
    args.insert(args.end(), flags.begin(), flags.end());
    const CliResult run = run_longnet(args);
    EXPECT_NE(run.exit_code, 0) << run.output;
    EXPECT_NE(run.output.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << run.output;
    EXPECT_FALSE(std::filesystem::exists(output)) << "an output file was written despite the error";
  }
};

const std::vector<std::string> kPatterns = {"--segments", "8,16", "--dilations", "1,2"};

std::vector<std::string> with_patterns(std::vector<std::string> flags) {
  flags.insert(flags.end(), kPatterns.begin(), kPatterns.end());
  return flags;
}

TEST_F(AttnBadInput, MissingTensorNamesTheFileAndTheTensorsPresent) {
  write({{"q", Tensor::randn({1, 8, 2, 4}, 1)}, {"k", Tensor::randn({1, 8, 2, 4}, 2)}});
  expect_error(kPatterns, "no tensor named 'v' (the file has: ");
  write_good();
  expect_error(with_patterns({"--backward"}), "no tensor named 'do'");
}

TEST_F(AttnBadInput, MissingFile) { expect_error(kPatterns, "in.safetensors: cannot open"); }

TEST_F(AttnBadInput, MismatchedShapes) {
  write({{"q", Tensor::randn({1, 8, 2, 4}, 1)},
         {"k", Tensor::randn({1, 8, 2, 4}, 2)},
         {"v", Tensor::randn({1, 9, 2, 4}, 3)}});
  expect_error(kPatterns, "k has shape (1, 8, 2, 4) but v has shape (1, 9, 2, 4)");
  write({{"q", Tensor::randn({1, 10, 2, 4}, 1)},
         {"k", Tensor::randn({1, 8, 2, 4}, 2)},
         {"v", Tensor::randn({1, 8, 2, 4}, 3)}});
  expect_error(kPatterns, "q has seq_len 10 but k has seq_len 8");
  write({{"q", Tensor::randn({8, 2, 4}, 1)},
         {"k", Tensor::randn({1, 8, 2, 4}, 2)},
         {"v", Tensor::randn({1, 8, 2, 4}, 3)}});
  expect_error(kPatterns, "tensor 'q' in");
  write_good(false);
  save_safetensors(input, [&] {
    NamedTensors t = make_inputs({1, 24, 4, 2, 8, DType::f32, DType::f32, {}, {}}, false);
    t.emplace_back("do", Tensor::randn({1, 24, 2, 8}, 5));
    return t;
  }());
  expect_error(with_patterns({"--backward"}), "tensor 'do' in");
}

TEST_F(AttnBadInput, HeadsNotDivisibleByKvHeads) {
  write({{"q", Tensor::randn({1, 8, 4, 4}, 1)},
         {"k", Tensor::randn({1, 8, 3, 4}, 2)},
         {"v", Tensor::randn({1, 8, 3, 4}, 3)}});
  expect_error(kPatterns, "q has 4 heads and k has 3: the number of query heads must be a multiple");
}

TEST_F(AttnBadInput, PatternLists) {
  write_good();
  expect_error({"--segments", "", "--dilations", "1"}, "--segments = '': give a comma-separated list");
  expect_error({"--segments", "8,16", "--dilations", "1"}, "--segments has 2 entries but --dilations has 1");
  expect_error({"--segments", "8,16", "--dilations", "1,0"}, "dilation_rates[1] = 0: must be >= 1");
  expect_error({"--segments", "8,4", "--dilations", "1,8"}, "dilation_rates[1] = 8: must be <= segment_lengths[1] = 4");
  expect_error({"--segments", "8,abc", "--dilations", "1,2"}, "--segments = '8,abc': 'abc' is not an integer");
  expect_error({"--segments", "8,,16", "--dilations", "1,2,4"}, "empty item in the list");
  expect_error({"--segments", "0", "--dilations", "1"}, "segment_lengths[0] = 0: must be >= 1");
}

TEST_F(AttnBadInput, DtypeProblems) {
  write_good();
  expect_error(with_patterns({"--dtype", "i32"}), "--dtype = 'i32': must be f32, f64, bf16, f16 or auto");
  write({{"q", Tensor::zeros({1, 8, 2, 4}, DType::i32)},
         {"k", Tensor::randn({1, 8, 2, 4}, 2)},
         {"v", Tensor::randn({1, 8, 2, 4}, 3)}});
  expect_error(kPatterns, "tensor 'q' in");
  expect_error(kPatterns, "has dtype i32: must be a float dtype");
}

TEST_F(AttnBadInput, DeviceProblems) {
  write_good();
  expect_error(with_patterns({"--device", "tpu"}), "--device = 'tpu': must be cpu, cuda or cuda:N");
  if (cuda_device_count() == 0) expect_error(with_patterns({"--device", "cuda"}), "--device = cuda:0");
  expect_error(with_patterns({"--device", "cuda:99"}), "--device = cuda:99");
}

TEST_F(AttnBadInput, FewerHeadsThanGroupsInHeadGroupsMode) {
  write({{"q", Tensor::randn({1, 8, 2, 4}, 1)},
         {"k", Tensor::randn({1, 8, 2, 4}, 2)},
         {"v", Tensor::randn({1, 8, 2, 4}, 3)}});
  expect_error({"--segments", "4,8,16", "--dilations", "1,2,4", "--mode", "head_groups"},
               "head_groups mode with 3 patterns needs at least 3 heads, q has 2");
  expect_error(with_patterns({"--mode", "ring"}), "--mode = 'ring': must be longnet or head_groups");
}

TEST_F(AttnBadInput, RepeatAndRequiredFlags) {
  write_good();
  expect_error(with_patterns({"--repeat", "0"}), "--repeat = 0: must be >= 1");
  const CliResult run = run_longnet({"attn", "--input", input, "--output", output});
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("--segments is required"), std::string::npos) << run.output;
}

TEST_F(AttnBadInput, ErrorsAreOneLine) {
  write_good();
  std::vector<std::string> args = {"attn", "--input", input, "--output", output, "--segments", "8", "--dilations", "9"};
  const CliResult run = run_longnet(args);
  EXPECT_EQ(run.output.rfind("longnet: error: ", 0), 0u) << run.output;
  EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
}

}  // namespace
}  // namespace longnet::testing
