// MultiheadDilatedAttention's forward against a naive reference (projections written out,
// xPos from torchscale's definition, the fp64 dilated-attention oracle, sub-LN), and
// generation: decode() with the bounded per-pattern KV cache equals the full causal
// forward at every position, for both modes, GQA, r > H, w > N, fused projections, and
// every positional encoding; the cache's size is bounded by the segment lengths.
#include <gtest/gtest.h>

#include <cmath>

#include "longnet/nn/multihead_dilated_attention.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::nn;

MultiheadDilatedAttentionConfig make_config(std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                                            std::vector<std::int64_t> segments, std::vector<std::int64_t> rates,
                                            PositionalEncoding positional, DilatedMode mode, bool fused) {
  MultiheadDilatedAttentionConfig c;
  c.d_model = heads * head_dim;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.attention.segment_lengths = std::move(segments);
  c.attention.dilation_rates = std::move(rates);
  c.attention.mode = mode;
  c.attention.causal = true;
  c.positional.kind = positional;
  c.positional.xpos_scale_base = 8.0;  // small, so xPos's factors are far from 1
  c.fused_qkv = fused;
  c.gamma = 1.5;
  return c;
}

ParameterOptions f64_options() {
  ParameterOptions o;
  o.dtype = o.compute_dtype = DType::f64;
  o.seed = 99;
  return o;
}

// y (rows, out) = x (rows, in) W^T + b.
std::vector<double> naive_linear(const std::vector<double>& x, const Parameter& w, const Parameter* b,
                                 std::int64_t rows) {
  const std::int64_t out = w.value.size(0), in = w.value.size(1);
  const auto wv = w.value.to_vector<double>();
  const auto bv = b ? b->value.to_vector<double>() : std::vector<double>(static_cast<std::size_t>(out), 0.0);
  std::vector<double> y(static_cast<std::size_t>(rows * out));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t o = 0; o < out; ++o) {
      double s = bv[static_cast<std::size_t>(o)];
      for (std::int64_t i = 0; i < in; ++i) {
        s += x[static_cast<std::size_t>(r * in + i)] * wv[static_cast<std::size_t>(o * in + i)];
      }
      y[static_cast<std::size_t>(r * out + o)] = s;
    }
  }
  return y;
}

// torchscale's XPOS on (B, N, heads, D): centred exponent (n - ceil(N/2)) / scale_base.
std::vector<double> naive_xpos(std::vector<double> x, std::int64_t B, std::int64_t N, std::int64_t heads,
                               std::int64_t D, double scale_base, bool key) {
  const double center = static_cast<double>((N + 1) / 2);
  std::vector<double> out(x.size());
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::size_t base = static_cast<std::size_t>(((b * N + n) * heads + h) * D);
        for (std::int64_t j = 0; j < D / 2; ++j) {
          const double theta = std::pow(10000.0, -static_cast<double>(j) / static_cast<double>(D / 2));
          const double zeta = (2.0 * static_cast<double>(j) + 0.4 * D) / (1.4 * D);
          double f = std::pow(zeta, (static_cast<double>(n) - center) / scale_base);
          if (key) f = 1 / f;
          const double c = f * std::cos(static_cast<double>(n) * theta),
                       s = f * std::sin(static_cast<double>(n) * theta);
          const double x0 = x[base + 2 * static_cast<std::size_t>(j)],
                       x1 = x[base + 2 * static_cast<std::size_t>(j) + 1];
          out[base + 2 * static_cast<std::size_t>(j)] = x0 * c - x1 * s;
          out[base + 2 * static_cast<std::size_t>(j) + 1] = x1 * c + x0 * s;
        }
      }
    }
  }
  return out;
}

std::vector<double> naive_layer_norm(const std::vector<double>& x, const Parameter& w, const Parameter& b,
                                     std::int64_t C) {
  const auto wv = w.value.to_vector<double>(), bv = b.value.to_vector<double>();
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r < x.size() / static_cast<std::size_t>(C); ++r) {
    double mean = 0, var = 0;
    for (std::int64_t c = 0; c < C; ++c) mean += x[r * static_cast<std::size_t>(C) + static_cast<std::size_t>(c)] / C;
    for (std::int64_t c = 0; c < C; ++c) {
      var += std::pow(x[r * static_cast<std::size_t>(C) + static_cast<std::size_t>(c)] - mean, 2) / C;
    }
    for (std::int64_t c = 0; c < C; ++c) {
      const std::size_t i = r * static_cast<std::size_t>(C) + static_cast<std::size_t>(c);
      y[i] = (x[i] - mean) / std::sqrt(var + 1e-5) * wv[static_cast<std::size_t>(c)] + bv[static_cast<std::size_t>(c)];
    }
  }
  return y;
}

TEST(MultiheadDilatedAttentionTest, ForwardMatchesNaiveReference) {
  const std::int64_t B = 2, N = 19, H = 4, Hk = 2, D = 6;
  const MultiheadDilatedAttentionConfig config =
      make_config(H, Hk, D, {4, 8, 32}, {1, 2, 4}, PositionalEncoding::xpos, DilatedMode::longnet, false);
  MultiheadDilatedAttention attn("attn", config, f64_options());
  const Tensor x = Tensor::randn({B, N, H * D}, 3, DType::f64);
  const auto y = attn.forward(x).to_vector<double>();

  const auto params = attn.parameters();  // q, k, v (weight, bias), inner_attn_ln, out_proj
  ASSERT_EQ(params.size(), 10u);
  EXPECT_EQ(params[0]->name, "attn.q_proj.weight");
  EXPECT_EQ(params[9]->name, "attn.out_proj.bias");
  const auto xv = x.to_vector<double>();
  const auto q = naive_xpos(naive_linear(xv, *params[0], params[1].get(), B * N), B, N, H, D, 8.0, false);
  const auto k = naive_xpos(naive_linear(xv, *params[2], params[3].get(), B * N), B, N, Hk, D, 8.0, true);
  const auto v = naive_linear(xv, *params[4], params[5].get(), B * N);
  DilatedProblem problem{.batch = B,
                         .seq_len = N,
                         .heads = H,
                         .kv_heads = Hk,
                         .head_dim = D,
                         .patterns = config.attention.patterns(),
                         .causal = true,
                         .scale = 1 / std::sqrt(6.0)};
  const OracleOutput o =
      dilated_oracle_forward(problem, Tensor::from_vector(q, {B, N, H, D}), Tensor::from_vector(k, {B, N, Hk, D}),
                             Tensor::from_vector(v, {B, N, Hk, D}));
  const auto normed = naive_layer_norm(o.out.to_vector<double>(), *params[6], *params[7], H * D);
  const auto expected = naive_linear(normed, *params[8], params[9].get(), B * N);
  ASSERT_EQ(y.size(), expected.size());
  for (std::size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], expected[i], 1e-11) << i;
}

// q, k and v's parameters sit in adjacent memory (pack_parameters) and self-attention runs
// them as one GEMM; the result and every gradient equal the three-GEMM path's, taken when
// the adjacency is broken (a parameter's value replaced by a copy).
TEST(MultiheadDilatedAttentionTest, PackedProjectionsEqualThreeGemms) {
  const std::int64_t B = 2, N = 17, H = 4, Hk = 2, D = 6;
  const MultiheadDilatedAttentionConfig config =
      make_config(H, Hk, D, {4, 8, 32}, {1, 2, 4}, PositionalEncoding::xpos, DilatedMode::longnet, false);
  MultiheadDilatedAttention attn("attn", config, f64_options());
  const auto params = attn.parameters();  // q, k, v (weight, bias), inner_attn_ln, out_proj
  const auto* q_weight = static_cast<const double*>(params[0]->value.data());
  EXPECT_EQ(params[2]->value.data(), q_weight + params[0]->value.numel());  // k's weight follows q's
  EXPECT_EQ(params[3]->grad.data(), static_cast<const double*>(params[1]->grad.data()) + H * D);
  const Tensor x = Tensor::randn({B, N, H * D}, 4, DType::f64), dy = Tensor::randn({B, N, H * D}, 5, DType::f64);
  const auto run = [&] {
    for (const ParameterPtr& p : params) p->grad.fill(0.0);
    std::vector<std::vector<double>> results{attn.forward(x).to_vector<double>(),
                                             attn.backward(dy).to_vector<double>()};
    for (const ParameterPtr& p : params) results.push_back(p->grad.to_vector<double>());
    return results;
  };
  EXPECT_NE(adjacent_parameter({params[0], params[2], params[4]}, "qkv"), nullptr);
  const auto packed = run();
  params[4]->value = params[4]->value.clone();  // v's weight moved: three GEMMs
  EXPECT_EQ(adjacent_parameter({params[0], params[2], params[4]}, "qkv"), nullptr);
  const auto separate = run();
  ASSERT_EQ(packed.size(), separate.size());
  for (std::size_t t = 0; t < packed.size(); ++t) {
    for (std::size_t i = 0; i < packed[t].size(); ++i) EXPECT_NEAR(packed[t][i], separate[t][i], 1e-12) << t << " " << i;
  }
}

TEST(MultiheadDilatedAttentionTest, MagnetoInitialisation) {
  MultiheadDilatedAttentionConfig config =
      make_config(4, 4, 8, {16}, {1}, PositionalEncoding::xpos, DilatedMode::longnet, false);
  config.gamma = 2.0;
  MultiheadDilatedAttention attn("attn", config, f64_options());
  // Xavier-uniform bounds: gain * sqrt(6 / (in + out)), gain 1/sqrt 2 (q, k), gamma/sqrt 2 (v), gamma (out_proj).
  const double bound = std::sqrt(6.0 / 64.0);
  auto max_abs = [](const ParameterPtr& p) {
    double m = 0;
    for (double v : p->value.to_vector<double>()) m = std::max(m, std::abs(v));
    return m;
  };
  const auto params = attn.parameters();
  EXPECT_LE(max_abs(params[0]), bound / std::sqrt(2.0));
  EXPECT_GT(max_abs(params[0]), 0.9 * bound / std::sqrt(2.0));
  EXPECT_LE(max_abs(params[4]), 2.0 * bound / std::sqrt(2.0));
  EXPECT_GT(max_abs(params[4]), 0.9 * 2.0 * bound / std::sqrt(2.0));
  EXPECT_GT(max_abs(params[8]), 0.9 * 2.0 * bound);
  EXPECT_EQ(max_abs(params[1]), 0.0);  // biases start at 0
}

struct DecodeCase {
  const char* name;
  MultiheadDilatedAttentionConfig config;
};

TEST(MultiheadDilatedAttentionTest, DecodeWithBoundedCacheEqualsFullForward) {
  const DecodeCase cases[] = {
      {"xpos GQA", make_config(4, 2, 4, {4, 8, 16}, {1, 2, 4}, PositionalEncoding::xpos, DilatedMode::longnet, false)},
      {"rope fused, w not multiple of r",
       make_config(3, 3, 4, {5, 7}, {2, 3}, PositionalEncoding::rope, DilatedMode::longnet, true)},
      {"none, r > H, w > N",
       make_config(2, 1, 4, {6, 64}, {4, 8}, PositionalEncoding::none, DilatedMode::longnet, false)},
      {"head groups",
       make_config(5, 1, 2, {3, 6, 12}, {1, 2, 3}, PositionalEncoding::xpos, DilatedMode::head_groups, false)},
      {"dense", make_config(2, 2, 4, {INT64_MAX}, {1}, PositionalEncoding::xpos, DilatedMode::longnet, false)},
  };
  for (const DecodeCase& c : cases) {
    SCOPED_TRACE(c.name);
    MultiheadDilatedAttention attn("attn", c.config, f64_options());
    const std::int64_t B = 2, N = 37;
    const Tensor x = Tensor::randn({B, N, c.config.d_model}, 4, DType::f64);
    const Tensor full = attn.forward(x);
    AttentionCache cache = attn.make_cache(B, N);
    double worst = 0;
    for (std::int64_t p = 0; p < N; ++p) {
      const auto step = attn.decode(x.slice(1, p, p + 1), cache).to_vector<double>();
      const auto expected = full.slice(1, p, p + 1).to_vector<double>();
      for (std::size_t i = 0; i < step.size(); ++i) {
        worst = std::max(worst, std::abs(step[i] - expected[i]) / std::max(1.0, std::abs(expected[i])));
      }
    }
    EXPECT_LT(worst, 1e-11);
    EXPECT_THROW(attn.decode(x.slice(1, 0, 1), cache), Error);  // beyond max_positions
  }
}

TEST(MultiheadDilatedAttentionTest, CacheIsBoundedBySegmentLengths) {
  const MultiheadDilatedAttentionConfig config =
      make_config(4, 2, 4, {8, 32}, {2, 4}, PositionalEncoding::xpos, DilatedMode::longnet, false);
  MultiheadDilatedAttention attn("attn", config, f64_options());
  const std::size_t long_run = attn.make_cache(1, 1'000'000).bytes();
  EXPECT_EQ(long_run, attn.make_cache(1, 64).bytes());
  // (8, 2): 2 slots of 4 rows; (32, 4): 4 slots of 8 rows; keys and values of Hk * D = 8 doubles.
  EXPECT_EQ(long_run, static_cast<std::size_t>((2 * 4 + 4 * 8) * 2 * 8 * 8));
  MultiheadDilatedAttentionConfig non_causal = config;
  non_causal.attention.causal = false;
  EXPECT_THROW(MultiheadDilatedAttention("attn", non_causal, f64_options()).make_cache(1, 8), Error);
}

}  // namespace
}  // namespace longnet::testing
