// fp64 finite-difference checks of every nn layer's backward: Linear, LayerNorm,
// Embedding, GELU, Dropout, FeedForward (with and without sub-LN), the positional
// encodings, MultiheadDilatedAttention (separate/fused projections, GQA, xPos/RoPE/none,
// both modes, causal or not, cross-attention), EncoderLayer and DecoderLayer.
#include <gtest/gtest.h>

#include "longnet/nn/activation.hpp"
#include "longnet/nn/embedding.hpp"
#include "longnet/nn/feed_forward.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/multihead_dilated_attention.hpp"
#include "longnet/nn/positional.hpp"
#include "longnet/nn/transformer_layers.hpp"
#include "nn/gradient_check.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::nn;

ParameterOptions f64_options(std::uint64_t seed = 7) {
  ParameterOptions o;
  o.dtype = DType::f64;
  o.compute_dtype = DType::f64;
  o.seed = seed;
  return o;
}

// Every parameter of a module as a probe (value and accumulated gradient).
void add_parameter_probes(const Module& module, std::vector<GradientProbe>& probes) {
  for (const ParameterPtr& p : module.parameters()) probes.push_back({p->name, p->value, p->grad});
}

// LayerNorm weights of 1 and biases of 0 hide mistakes that involve them: randomise.
void randomise_parameters(const Module& module, std::uint64_t seed) {
  for (const ParameterPtr& p : module.parameters()) {
    p->value.copy_from(Tensor::randn(p->value.shape(), seed++, DType::f64));
    scale_in_place(p->value, 0.5);
  }
}

TEST(NnGradients, Linear) {
  for (bool bias : {true, false}) {
    Linear linear("proj", 5, 7, bias, f64_options());
    const Tensor x = Tensor::randn({2, 3, 5}, 1, DType::f64);
    const Tensor g = Tensor::randn({2, 3, 7}, 2, DType::f64);
    linear.forward(x);
    const Tensor dx = linear.backward(g);
    std::vector<GradientProbe> probes{{"x", x, dx}};
    add_parameter_probes(linear, probes);
    EXPECT_EQ(probes.size(), bias ? 3u : 2u);
    check_gradients([&] { return linear.infer(x); }, g, probes);
  }
}

TEST(NnGradients, LinearWithAResidual) {
  Linear linear("proj", 5, 7, true, f64_options());
  const Tensor x = Tensor::randn({2, 3, 5}, 1, DType::f64);
  const Tensor residual = Tensor::randn({2, 3, 7}, 3, DType::f64);
  const std::vector<double> y = linear.forward(x, &residual).to_vector<double>();
  const std::vector<double> plain = linear.infer(x).to_vector<double>(), r = residual.to_vector<double>();
  for (std::size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], plain[i] + r[i], 1e-14);
  // The residual leaves the backward alone (its gradient is the output's, the caller's).
  const Tensor g = Tensor::randn({2, 3, 7}, 2, DType::f64);
  std::vector<GradientProbe> probes{{"x", x, linear.backward(g)}};
  add_parameter_probes(linear, probes);
  check_gradients([&] { return linear.infer(x, &residual); }, g, probes);
  const Tensor wrong = Tensor::randn({2, 3, 5}, 3, DType::f64);
  try {
    linear.forward(x, &wrong);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the residual has shape (2, 3, 5)"), std::string::npos) << e.what();
  }
}

// BiasGradient::summed_by_caller leaves the bias gradient to the caller (a LayerNorm
// backward that wrote dy); everything else is as with BiasGradient::compute.
TEST(NnGradients, LinearBiasGradientSummedByTheCaller) {
  Linear linear("proj", 4, 3, true, f64_options());
  const Tensor x = Tensor::randn({5, 4}, 1, DType::f64), g = Tensor::randn({5, 3}, 2, DType::f64);
  linear.forward(x);
  const Tensor dx = linear.backward(g);
  const std::vector<double> dweight = linear.weight()->grad.to_vector<double>();
  EXPECT_NE(linear.bias()->grad.to_vector<double>(), std::vector<double>(3, 0.0));
  linear.zero_grad();
  EXPECT_EQ(linear.backward(g, BiasGradient::summed_by_caller).to_vector<double>(), dx.to_vector<double>());
  EXPECT_EQ(linear.weight()->grad.to_vector<double>(), dweight);
  EXPECT_EQ(linear.bias()->grad.to_vector<double>(), std::vector<double>(3, 0.0));
}

TEST(NnGradients, ParameterGradientsAccumulateAndActivationGradientsAreWritten) {
  Linear linear("proj", 4, 3, true, f64_options());
  const Tensor x = Tensor::randn({5, 4}, 1, DType::f64);
  const Tensor g = Tensor::randn({5, 3}, 2, DType::f64);
  linear.forward(x);
  const Tensor dx1 = linear.backward(g);
  const std::vector<double> once = linear.weight()->grad.to_vector<double>();
  const Tensor dx2 = linear.backward(g);
  const std::vector<double> twice = linear.weight()->grad.to_vector<double>();
  for (std::size_t i = 0; i < once.size(); ++i) EXPECT_DOUBLE_EQ(twice[i], 2 * once[i]);
  EXPECT_EQ(dx1.to_vector<double>(), dx2.to_vector<double>());
  linear.zero_grad();
  for (double v : linear.weight()->grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(NnGradients, LayerNorm) {
  LayerNorm norm("ln", 9, 1e-5, f64_options());
  randomise_parameters(norm, 3);
  const Tensor x = Tensor::randn({4, 2, 9}, 1, DType::f64);
  const Tensor g = Tensor::randn({4, 2, 9}, 2, DType::f64);
  norm.forward(x);
  const Tensor dx = norm.backward(g);
  std::vector<GradientProbe> probes{{"x", x, dx}};
  add_parameter_probes(norm, probes);
  check_gradients([&] { return norm.infer(x); }, g, probes);
}

// The feed-forward's fusion: LayerNorm of gelu(x) (LayerNormInput::gelu), with the residual
// stream's gradient added to dx in the same pass.
TEST(NnGradients, LayerNormOfGeluPreactivationsWithAResidualGradient) {
  LayerNorm norm("ln", 9, 1e-5, f64_options()), plain("ln", 9, 1e-5, f64_options());
  randomise_parameters(norm, 3);
  randomise_parameters(plain, 3);
  const Tensor x = Tensor::randn({4, 2, 9}, 1, DType::f64);
  const Tensor g = Tensor::randn({4, 2, 9}, 2, DType::f64);
  const Tensor residual = Tensor::randn({4, 2, 9}, 4, DType::f64);
  const Tensor y = norm.forward(x, kernels::LayerNormInput::gelu);
  // The same function as GELU then LayerNorm.
  GELU gelu;
  const Tensor y_plain = plain.forward(gelu.forward(x));
  const std::vector<double> yv = y.to_vector<double>(), y_plain_v = y_plain.to_vector<double>();
  for (std::size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(yv[i], y_plain_v[i], 1e-12);
  const Tensor dx_plain = gelu.backward(plain.backward(g));
  // dx = (the gradient of x) + residual: check the first part by finite differences.
  const Tensor dx = add(norm.backward(g, &residual), residual, -1.0);
  const std::vector<double> dxv = dx.to_vector<double>(), dx_plain_v = dx_plain.to_vector<double>();
  for (std::size_t i = 0; i < dxv.size(); ++i) EXPECT_NEAR(dxv[i], dx_plain_v[i], 1e-12);
  std::vector<GradientProbe> probes{{"x", x, dx}};
  add_parameter_probes(norm, probes);
  check_gradients([&] { return norm.infer(x, kernels::LayerNormInput::gelu); }, g, probes);
}

TEST(NnGradients, LayerNormRejectsAResidualGradientOfAnotherShape) {
  LayerNorm norm("ln", 9, 1e-5, f64_options());
  norm.forward(Tensor::randn({4, 9}, 1, DType::f64));
  const Tensor residual = Tensor::randn({3, 9}, 4, DType::f64);
  try {
    norm.backward(Tensor::randn({4, 9}, 2, DType::f64), &residual);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("residual gradient has shape (3, 9)"), std::string::npos) << e.what();
  }
}

TEST(NnGradients, LayerNormRejectsColumnSumsOfAnotherDtypeOrShape) {
  LayerNorm norm("ln", 9, 1e-5, f64_options());
  norm.forward(Tensor::randn({4, 9}, 1, DType::f64));
  const Tensor dy = Tensor::randn({4, 9}, 2, DType::f64);
  const auto expect_error = [&](Tensor sums, const std::string& message) {
    try {
      norm.backward(dy, nullptr, &sums);
      FAIL() << "expected an error: " << message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  expect_error(Tensor::zeros({9}, DType::f32), "ln.weight: dx_column_sums has dtype f32: must be f64");
  expect_error(Tensor::zeros({10}, DType::f64), "ln.weight: dx_column_sums has shape (10,): must be a contiguous (9,)");
  expect_error(Tensor::zeros({4, 9}, DType::f64), "dx_column_sums has shape (4, 9)");
  expect_error(Tensor(), "dx_column_sums is undefined");
  // The right one: the column sums of the returned gradient, added.
  Tensor sums = Tensor::full({9}, 1.0, DType::f64);
  const std::vector<double> dx = norm.backward(dy, nullptr, &sums).to_vector<double>(), s = sums.to_vector<double>();
  for (std::size_t c = 0; c < 9; ++c) {
    double expected = 1;
    for (std::size_t r = 0; r < 4; ++r) expected += dx[r * 9 + c];
    EXPECT_NEAR(s[c], expected, 1e-14);
  }
}

TEST(NnGradients, EmbeddingWithRepeatedTokens) {
  Embedding embedding("embed_tokens", 6, 4, 1.7, f64_options());
  const Tensor tokens = Tensor::from_vector<std::int32_t>({0, 3, 3, 5, 1, 3}, {2, 3});
  const Tensor g = Tensor::randn({2, 3, 4}, 2, DType::f64);
  embedding.forward(tokens);
  embedding.backward(g);
  std::vector<GradientProbe> probes;
  add_parameter_probes(embedding, probes);
  check_gradients([&] { return embedding.infer(tokens); }, g, probes);
}

TEST(NnGradients, EmbeddingRejectsOutOfRangeTokens) {
  Embedding embedding("embed_tokens", 6, 4, 1.0, f64_options());
  try {
    embedding.forward(Tensor::from_vector<std::int32_t>({0, 6}, {1, 2}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokens[1] = 6"), std::string::npos) << e.what();
  }
  EXPECT_THROW(embedding.forward(Tensor::from_vector<std::int64_t>({-1}, {1, 1})), Error);
}

TEST(NnGradients, Gelu) {
  GELU gelu;
  const Tensor x = Tensor::randn({3, 17}, 1, DType::f64);
  const Tensor g = Tensor::randn({3, 17}, 2, DType::f64);
  gelu.forward(x);
  check_gradients([&] { return GELU::infer(x); }, g, {{"x", x, gelu.backward(g)}});
}

TEST(NnGradients, DropoutRegeneratesItsMask) {
  Dropout dropout(0.3, 11);
  ForwardContext context{.training = true, .seed = 5, .step = 2, .micro_step = 1};
  const Tensor x = Tensor::randn({1000}, 1, DType::f64);
  const Tensor g = Tensor::randn({1000}, 2, DType::f64);
  const Tensor y = dropout.forward(x, context);
  const Tensor dx = dropout.backward(g);
  const auto xv = x.to_vector<double>(), yv = y.to_vector<double>(), gv = g.to_vector<double>(),
             dv = dx.to_vector<double>();
  int dropped = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const bool kept = yv[i] != 0;
    dropped += !kept;
    EXPECT_NEAR(yv[i], kept ? xv[i] / 0.7 : 0.0, 1e-12);
    EXPECT_NEAR(dv[i], kept ? gv[i] / 0.7 : 0.0, 1e-12);  // the same mask in backward
  }
  EXPECT_GT(dropped, 230);
  EXPECT_LT(dropped, 370);
  // Another step gives another mask; the same (seed, step, micro_step, stream) the same.
  Dropout same(0.3, 11);
  EXPECT_EQ(same.forward(x, context).to_vector<double>(), yv);
  context.step = 3;
  EXPECT_NE(same.forward(x, context).to_vector<double>(), yv);
  // Identity outside training.
  context.training = false;
  EXPECT_EQ(same.forward(x, context).to_vector<double>(), xv);
}

TEST(NnGradients, FeedForward) {
  // Activation dropout 0 with the sub-LayerNorm takes the fused GELU + LayerNorm path.
  for (const auto& [sub_layer_norm, activation_dropout] :
       {std::pair{true, 0.1}, std::pair{false, 0.1}, std::pair{true, 0.0}}) {
    SCOPED_TRACE(str("sub_layer_norm ", sub_layer_norm, " activation_dropout ", activation_dropout));
    FeedForwardConfig config{.d_model = 6,
                             .ffn_dim = 10,
                             .sub_layer_norm = sub_layer_norm,
                             .dropout = 0.2,
                             .activation_dropout = activation_dropout};
    FeedForward ffn("ffn", config, f64_options(), 40);
    randomise_parameters(ffn, 9);
    const ForwardContext context{.training = true, .seed = 3, .step = 1};
    const Tensor x = Tensor::randn({2, 5, 6}, 1, DType::f64);
    const Tensor g = Tensor::randn({2, 5, 6}, 2, DType::f64);
    ffn.forward(x, context);
    std::vector<GradientProbe> probes{{"x", x, ffn.backward(g)}};
    add_parameter_probes(ffn, probes);
    check_gradients([&] { return ffn.forward(x, context); }, g, probes);
  }
}

TEST(NnGradients, PositionalEncodings) {
  for (PositionalEncoding kind : {PositionalEncoding::rope, PositionalEncoding::xpos}) {
    for (bool is_key : {false, true}) {
      PositionalConfig config{.kind = kind, .xpos_scale_base = 8.0};  // a small base makes the factors matter
      // A strided input: every other head of a larger tensor.
      const Tensor big = Tensor::randn({2, 9, 6, 8}, 1, DType::f64);
      const Tensor x = big.slice(2, 0, 6, 2).contiguous();
      const Tensor g = Tensor::randn({2, 9, 3, 8}, 2, DType::f64);
      const Tensor dx = apply_positional(config, g, 3, 7.0, is_key, /*transpose=*/true);
      check_gradients([&] { return apply_positional(config, x, 3, 7.0, is_key); }, g, {{"x", x, dx}});
      // Strided input gives the same result as contiguous.
      EXPECT_EQ(apply_positional(config, big.slice(2, 0, 6, 2), 3, 7.0, is_key).to_vector<double>(),
                apply_positional(config, x, 3, 7.0, is_key).to_vector<double>());
    }
  }
}

MultiheadDilatedAttentionConfig attention_config(std::int64_t heads, std::int64_t kv_heads,
                                                 std::vector<std::int64_t> segments, std::vector<std::int64_t> rates,
                                                 bool causal, PositionalEncoding positional, bool fused,
                                                 DilatedMode mode = DilatedMode::longnet) {
  MultiheadDilatedAttentionConfig c;
  c.d_model = heads * 4;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.attention.segment_lengths = std::move(segments);
  c.attention.dilation_rates = std::move(rates);
  c.attention.causal = causal;
  c.attention.mode = mode;
  c.positional.kind = positional;
  c.positional.xpos_scale_base = 16.0;
  c.fused_qkv = fused;
  c.gamma = 1.3;
  return c;
}

TEST(NnGradients, MultiheadDilatedAttention) {
  struct Case {
    const char* name;
    MultiheadDilatedAttentionConfig config;
  };
  const Case cases[] = {
      {"xpos causal GQA", attention_config(4, 2, {4, 8}, {1, 2}, true, PositionalEncoding::xpos, false)},
      {"rope non-causal fused", attention_config(4, 4, {5, 13}, {1, 3}, false, PositionalEncoding::rope, true)},
      {"none, r > H, w > N", attention_config(2, 1, {3, 32}, {2, 8}, true, PositionalEncoding::none, false)},
      {"head groups, fused GQA",
       attention_config(3, 1, {4, 6, 16}, {1, 2, 4}, true, PositionalEncoding::xpos, true, DilatedMode::head_groups)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    for (bool sub_layer_norm : {true, false}) {
      MultiheadDilatedAttentionConfig config = c.config;
      config.sub_layer_norm = sub_layer_norm;
      MultiheadDilatedAttention attn("attn", config, f64_options());
      randomise_parameters(attn, 21);
      const Tensor x = Tensor::randn({2, 13, config.d_model}, 1, DType::f64);
      const Tensor g = Tensor::randn({2, 13, config.d_model}, 2, DType::f64);
      attn.forward(x);
      std::vector<GradientProbe> probes{{"x", x, attn.backward(g)}};
      add_parameter_probes(attn, probes);
      check_gradients([&] { return attn.forward(x); }, g, probes, 1e-6, 12);
    }
  }
}

TEST(NnGradients, CrossAttention) {
  MultiheadDilatedAttentionConfig config =
      attention_config(4, 2, {4, 8}, {1, 2}, false, PositionalEncoding::none, false);
  config.sub_layer_norm = false;
  MultiheadDilatedAttention attn("cross_attn", config, f64_options());
  randomise_parameters(attn, 5);
  const Tensor x = Tensor::randn({2, 11, 16}, 1, DType::f64);
  const Tensor memory = Tensor::randn({2, 11, 16}, 3, DType::f64);
  const Tensor g = Tensor::randn({2, 11, 16}, 2, DType::f64);
  attn.forward(x, memory);
  const CrossAttentionGradients grads = attn.backward_cross(g);
  std::vector<GradientProbe> probes{{"x", x, grads.dx}, {"memory", memory, grads.dmemory}};
  add_parameter_probes(attn, probes);
  check_gradients([&] { return attn.forward(x, memory); }, g, probes, 1e-6, 24);
  EXPECT_THROW(attn.forward(x, Tensor::randn({2, 10, 16}, 3, DType::f64)), Error);
}

// Without dropout the layers take their fused paths: the residual adds in the output
// projections' GEMMs, GELU inside the feed-forward's sub-LayerNorm, out_proj's bias
// gradient summed by the FFN's pre-norm (attention dropout 0, no cross-attention) and fc2's
// by the caller (FFN dropout 0, LayerGradientSums).
TransformerLayerConfig layer_config(bool cross, double dropout = 0.1, double ffn_dropout = -1) {
  TransformerLayerConfig c;
  c.attention = attention_config(4, 2, {4, 8}, {1, 2}, false, PositionalEncoding::xpos, false);
  if (ffn_dropout < 0) ffn_dropout = dropout;
  c.ffn = {.d_model = 16, .ffn_dim = 24, .dropout = ffn_dropout, .activation_dropout = ffn_dropout};
  c.dropout = dropout;
  c.cross_attention = cross;
  return c;
}

TEST(NnGradients, EncoderLayer) {
  for (double dropout : {0.1, 0.0}) {
    SCOPED_TRACE(str("dropout ", dropout));
    EncoderLayer layer("layers.0", layer_config(false, dropout), f64_options(), 100);
    randomise_parameters(layer, 8);
    const ForwardContext context{.training = true, .seed = 1, .step = 4};
    const Tensor x = Tensor::randn({2, 10, 16}, 1, DType::f64);
    const Tensor g = Tensor::randn({2, 10, 16}, 2, DType::f64);
    layer.forward(x, context);
    std::vector<GradientProbe> probes{{"x", x, layer.backward(g)}};
    add_parameter_probes(layer, probes);
    check_gradients([&] { return layer.forward(x, context); }, g, probes, 1e-6, 16);
  }
}

TEST(NnGradients, DecoderLayerWithAndWithoutCrossAttention) {
  struct Case {
    bool cross;
    double dropout, ffn_dropout;
  };
  for (const Case& k : {Case{false, 0.1, 0.1}, Case{true, 0.1, 0.1}, Case{false, 0.0, 0.0}, Case{true, 0.0, 0.0},
                        Case{false, 0.1, 0.0}, Case{false, 0.0, 0.1}}) {
    const bool cross = k.cross;
    SCOPED_TRACE(str(cross ? "cross" : "decoder-only", " dropout ", k.dropout, " ffn dropout ", k.ffn_dropout));
    DecoderLayer layer("layers.0", layer_config(cross, k.dropout, k.ffn_dropout), f64_options(), 200);
    randomise_parameters(layer, 8);
    const ForwardContext context{.training = true, .seed = 1, .step = 4};
    const Tensor x = Tensor::randn({2, 10, 16}, 1, DType::f64);
    const Tensor memory = cross ? Tensor::randn({2, 10, 16}, 5, DType::f64) : Tensor();
    const Tensor g = Tensor::randn({2, 10, 16}, 2, DType::f64);
    layer.forward(x, memory, context);
    Tensor dmemory;
    std::vector<GradientProbe> probes{{"x", x, layer.backward(g, &dmemory)}};
    if (cross) probes.push_back({"memory", memory, dmemory});
    add_parameter_probes(layer, probes);
    check_gradients([&] { return layer.forward(x, memory, context); }, g, probes, 1e-6, 12);
  }
}

// LayerGradientSums: a caller that sums the output gradient's columns into
// output_bias_gradient() (fc2's bias gradient, null when dropout follows fc2) gets the
// gradients of a plain backward, and dx_column_sums receives the returned dx's column sums.
TEST(NnGradients, TransformerLayersTakeBiasGradientsSummedByTheirCaller) {
  const ForwardContext context{.training = true, .seed = 1, .step = 4};
  const Tensor x = Tensor::randn({2, 10, 16}, 1, DType::f64), g = Tensor::randn({2, 10, 16}, 2, DType::f64);
  const std::vector<double> gv = g.to_vector<double>();
  const auto column_sums = [](const std::vector<double>& rows, std::vector<double> start) {
    for (std::size_t i = 0; i < rows.size(); ++i) start[i % start.size()] += rows[i];
    return start;
  };
  const auto gradients = [](const Module& module) {
    std::vector<std::vector<double>> out;
    for (const ParameterPtr& p : module.parameters()) out.push_back(p->grad.to_vector<double>());
    return out;
  };
  for (const bool encoder : {true, false}) {
    for (const double ffn_dropout : {0.0, 0.1}) {
      SCOPED_TRACE(str(encoder ? "encoder" : "decoder", " ffn dropout ", ffn_dropout));
      EncoderLayer encoder_layer("layers.0", layer_config(false, 0.0, ffn_dropout), f64_options(), 100);
      DecoderLayer decoder_layer("layers.0", layer_config(false, 0.0, ffn_dropout), f64_options(), 200);
      const Module& module = encoder ? static_cast<const Module&>(encoder_layer) : decoder_layer;
      const auto forward = [&] {
        if (encoder) return encoder_layer.forward(x, context);
        return decoder_layer.forward(x, Tensor(), context);
      };
      const auto backward = [&](const LayerGradientSums& sums) {
        if (encoder) return encoder_layer.backward(g, sums);
        return decoder_layer.backward(g, nullptr, sums);
      };
      const auto output_bias = [&] {
        return encoder ? encoder_layer.output_bias_gradient() : decoder_layer.output_bias_gradient();
      };
      randomise_parameters(module, 8);
      forward();
      const std::vector<double> dx = backward({}).to_vector<double>();
      const auto plain = gradients(module);
      module.zero_grad();
      forward();
      Tensor* bias = output_bias();
      ASSERT_EQ(bias != nullptr, ffn_dropout == 0.0);
      if (bias) bias->copy_from(Tensor::from_vector(column_sums(gv, std::vector<double>(16, 0.0)), {16}));
      Tensor sums = Tensor::full({16}, 0.5, DType::f64);
      EXPECT_EQ(backward({.output_bias_summed = bias != nullptr, .dx_column_sums = &sums}).to_vector<double>(), dx);
      const auto summed = gradients(module);
      for (std::size_t i = 0; i < plain.size(); ++i) {
        SCOPED_TRACE(module.parameters()[i]->name);
        for (std::size_t j = 0; j < plain[i].size(); ++j) EXPECT_NEAR(summed[i][j], plain[i][j], 1e-12);
      }
      const std::vector<double> expected = column_sums(dx, std::vector<double>(16, 0.5));
      const std::vector<double> actual = sums.to_vector<double>();
      for (std::size_t c = 0; c < 16; ++c) EXPECT_NEAR(actual[c], expected[c], 1e-12);
      if (!bias) {
        forward();
        EXPECT_THROW(backward({.output_bias_summed = true}), Error);  // dropout after fc2: not a column sum
      }
    }
  }
}

}  // namespace
}  // namespace longnet::testing
