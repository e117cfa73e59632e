// Generation: the cached decode path equals recomputing the full forward at every step
// (logits to rounding, for xPos/RoPE, both modes, GQA, fused projections, batches, f32 and
// f64), generate() equals an uncached generation loop token for token, sampling
// (greedy, top-k, top-p, temperature, seeded), and the cache stays bounded.
#include "longnet/model/generation.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "model/model_test_support.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

// The largest difference between cached decode logits and the full forward's logits at
// every position of `tokens` (B, N).
double cached_vs_full(LongNetLM& model, const Tensor& tokens) {
  const std::int64_t B = tokens.size(0), N = tokens.size(1), V = model.config().vocab_size;
  LongNetLM::DecodeState state = model.make_decode_state(B, N);
  const auto full = model.forward(tokens, {}).to_vector<double>();  // (B, N, V)
  double worst = 0;
  for (std::int64_t p = 0; p < N; ++p) {
    const auto step = model.decode(tokens.slice(1, p, p + 1).contiguous(), state).to_vector<double>();  // (B, V)
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t v = 0; v < V; ++v) {
        const double e = full[static_cast<std::size_t>((b * N + p) * V + v)];
        worst = std::max(worst, std::abs(step[static_cast<std::size_t>(b * V + v)] - e) / std::max(1.0, std::abs(e)));
      }
    }
  }
  return worst;
}

TEST(Generation, CachedDecodeEqualsFullForwardAtEveryPosition) {
  struct Case {
    const char* name;
    LongNetLMConfig config;
  };
  std::vector<Case> cases;
  cases.push_back({"xpos GQA", tiny_lm_config()});
  LongNetLMConfig rope = tiny_lm_config();
  rope.positional = nn::PositionalEncoding::rope;
  rope.fused_qkv = true;
  rope.segment_lengths = {5, 16, 40};
  rope.dilation_rates = {1, 3, 8};  // r > H, w > N
  cases.push_back({"rope fused", rope});
  LongNetLMConfig groups = tiny_lm_config();
  groups.mode = DilatedMode::head_groups;
  groups.tie_embeddings = true;
  cases.push_back({"head groups, tied", groups});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    LongNetLM model(c.config, Device::cpu(), 8);
    EXPECT_LT(cached_vs_full(model, random_tokens(2, 31, c.config.vocab_size, 3)), 1e-11);
  }
  LongNetLM f32(tiny_lm_config(DType::f32), Device::cpu(), 8);
  EXPECT_LT(cached_vs_full(f32, random_tokens(1, 31, 11, 3)), 2e-5);
}

// Prefilling a prompt at once, then decoding, equals decoding every position, for prompt
// lengths before, at and after segment boundaries.
TEST(Generation, PrefillEqualsDecodingThePromptPositionByPosition) {
  for (bool head_groups : {false, true}) {
    LongNetLMConfig config = tiny_lm_config();
    config.segment_lengths = {4, 8, INT64_MAX};
    config.dilation_rates = {1, 2, 4};
    config.heads = 4;
    config.kv_heads = 2;
    if (head_groups) config.mode = DilatedMode::head_groups;
    LongNetLM model(config, Device::cpu(), 4);
    const Tensor tokens = random_tokens(2, 30, config.vocab_size, 5);
    for (std::int64_t P : {1, 3, 8, 13, 16, 29}) {
      SCOPED_TRACE(str("P = ", P, head_groups ? " head groups" : ""));
      LongNetLM::DecodeState stepped = model.make_decode_state(2, 30), prefilled = model.make_decode_state(2, 30);
      Tensor expected;
      for (std::int64_t p = 0; p < P; ++p) expected = model.decode(tokens.slice(1, p, p + 1).contiguous(), stepped);
      const Tensor got = model.prefill(tokens.slice(1, 0, P).contiguous(), prefilled);
      EXPECT_LT(relative_l2_error(got, expected, 1.0), 1e-12);
      for (std::int64_t p = P; p < 30; ++p) {
        const Tensor next = tokens.slice(1, p, p + 1).contiguous();
        EXPECT_LT(relative_l2_error(model.decode(next, prefilled), model.decode(next, stepped), 1.0), 1e-12) << p;
      }
    }
  }
}

TEST(Generation, GenerateEqualsAnUncachedGenerationLoop) {
  LongNetLM model(tiny_lm_config(), Device::cpu(), 2);
  const std::vector<std::int32_t> prompt{3, 1, 4, 1, 5};
  for (const SamplingConfig& sampling :
       {SamplingConfig{.temperature = 0.0}, SamplingConfig{.temperature = 0.9, .top_k = 5, .top_p = 0.9, .seed = 7}}) {
    const GenerationResult cached = generate(model, prompt, 20, sampling);
    ASSERT_EQ(cached.tokens.size(), 20u);
    std::vector<std::int32_t> sequence = prompt;
    for (std::size_t i = 0; i < 20; ++i) {
      const auto n = static_cast<std::int64_t>(sequence.size());
      const Tensor logits = model.forward(Tensor::from_vector(sequence, {1, n}), {});
      const auto last = logits.select(1, n - 1).to_vector<double>();
      sequence.push_back(sample_token(last, sampling, static_cast<std::uint64_t>(n)));
      EXPECT_EQ(cached.tokens[i], sequence.back()) << "token " << i;
    }
    EXPECT_EQ(generate(model, prompt, 20, sampling).tokens, cached.tokens);  // reproducible
  }
  EXPECT_THROW(generate(model, {}, 3, {}), Error);
  EXPECT_THROW(generate(model, {11}, 3, {}), Error);  // out of the vocabulary
}

TEST(Generation, SamplingRules) {
  const std::vector<double> logits{0.1, 2.0, -1.0, 1.9, 0.0};
  EXPECT_EQ(sample_token(logits, {.temperature = 0.0}, 0), 1);
  for (std::uint64_t draw = 0; draw < 50; ++draw) {
    EXPECT_EQ(sample_token(logits, {.temperature = 1.0, .top_k = 1, .seed = 3}, draw), 1);
    EXPECT_EQ(sample_token(logits, {.temperature = 1.0, .top_p = 0.01, .seed = 3}, draw), 1);
    const std::int32_t two = sample_token(logits, {.temperature = 1.0, .top_k = 2, .seed = 3}, draw);
    EXPECT_TRUE(two == 1 || two == 3);
  }
  // Frequencies follow softmax(logits / T).
  const double T = 0.7;
  std::vector<double> counts(5, 0.0), expected(5);
  double total = 0;
  for (std::size_t i = 0; i < 5; ++i) total += expected[i] = std::exp(logits[i] / T);
  const int draws = 20000;
  for (int d = 0; d < draws; ++d)
    counts[static_cast<std::size_t>(
        sample_token(logits, {.temperature = T, .seed = 11}, static_cast<std::uint64_t>(d)))] += 1;
  for (std::size_t i = 0; i < 5; ++i) EXPECT_NEAR(counts[i] / draws, expected[i] / total, 0.015) << i;
  EXPECT_THROW((SamplingConfig{.top_p = 0.0}.validate()), Error);
  EXPECT_THROW((SamplingConfig{.temperature = -1.0}.validate()), Error);
}

TEST(Generation, CacheMemoryIsBoundedBySegmentLengths) {
  LongNetLM model(tiny_lm_config(), Device::cpu(), 2);  // segments (3, 6)
  const std::size_t bytes = model.make_decode_state(1, 1000).bytes();
  EXPECT_EQ(model.make_decode_state(1, 10'000'000).bytes(), bytes);
  EXPECT_GT(bytes, 0u);
  const GenerationResult long_run = generate(model, {1}, 300, {.temperature = 1.0, .seed = 1});
  EXPECT_EQ(long_run.cache_bytes, bytes);
}

}  // namespace
}  // namespace longnet::testing
