// fp64 finite-difference gradient checks of whole tiny models: LongNetLM (training with
// and without dropout, untied and tied embeddings, xPos and RoPE) and the encoder-decoder
// LongNet (with and without dropout), for the scalar mean token loss with ignored targets.
#include <gtest/gtest.h>

#include "longnet/model/longnet.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "model/model_test_support.hpp"
#include "nn/gradient_check.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

// Checks every parameter of `model` (a sample of its elements) against finite differences
// of the mean loss of `batch`.
void check_model_gradients(LanguageModel& model, const Batch& batch, const nn::ForwardContext& context) {
  model.zero_grad();
  const LossOutput loss = model.forward_loss(batch, context);
  EXPECT_GT(loss.tokens, 0);
  model.backward(1.0);
  std::vector<GradientProbe> probes;
  for (const nn::ParameterPtr& p : model.parameters()) probes.push_back({p->name, p->value, p->grad});
  const Tensor one = Tensor::full({1}, 1.0, DType::f64);
  const double worst = check_gradients(
      [&] { return Tensor::full({1}, model.forward_loss(batch, context).loss, DType::f64); }, one, probes, 1e-6, 6);
  std::cout << "largest relative gradient error " << worst << " over " << probes.size() << " parameters\n";
}

Batch lm_batch(std::int64_t vocab) {
  Batch b{random_tokens(2, 9, vocab, 1), random_tokens(2, 9, vocab, 2), Tensor()};
  b.targets.data<std::int32_t>()[4] = kIgnoreIndex;  // an ignored target
  return b;
}

TEST(ModelGradients, LongNetLMWithDropout) {
  LongNetLMConfig config = tiny_lm_config();
  config.dropout = 0.1;
  config.activation_dropout = 0.1;
  LongNetLM model(config, Device::cpu(), 3);
  check_model_gradients(model, lm_batch(config.vocab_size), {.training = true, .seed = 4, .step = 2});
}

// Training without dropout: the LayerNorm backwards sum out_proj's and fc2's bias
// gradients (nn::LayerGradientSums), fc2's across layers (three: a middle one too).
TEST(ModelGradients, LongNetLMWithoutDropout) {
  LongNetLMConfig config = tiny_lm_config();
  config.layers = 3;
  LongNetLM model(config, Device::cpu(), 4);
  check_model_gradients(model, lm_batch(config.vocab_size), {.training = true, .seed = 4, .step = 2});
}

TEST(ModelGradients, LongNetLMTiedRopeFusedScaledEmbedding) {
  LongNetLMConfig config = tiny_lm_config();
  config.tie_embeddings = true;
  config.positional = nn::PositionalEncoding::rope;
  config.fused_qkv = true;
  config.scale_embedding = true;
  config.mode = DilatedMode::head_groups;
  LongNetLM model(config, Device::cpu(), 5);
  const auto names = model.parameters();
  EXPECT_EQ(names.front()->name, "embed_tokens.weight");
  EXPECT_NE(names.back()->name, "lm_head.weight");  // tied: one parameter
  check_model_gradients(model, lm_batch(config.vocab_size), {});
}

// With dropout, and without (the bias gradients summed by the LayerNorm backwards where
// they can be: the encoder's out_proj and fc2, the decoder's fc2).
TEST(ModelGradients, EncoderDecoderLongNet) {
  for (double dropout : {0.1, 0.0}) {
    SCOPED_TRACE(str("dropout ", dropout));
    LongNetConfig config;
    static_cast<LongNetLMConfig&>(config) = tiny_lm_config();
    config.encoder_layers = 2;
    config.layers = 2;
    config.dropout = dropout;
    LongNet model(config, Device::cpu(), 6);
    Batch batch = lm_batch(config.vocab_size);
    batch.source = random_tokens(2, 9, config.vocab_size, 3);
    check_model_gradients(model, batch, {.training = true, .seed = 1, .step = 7});
    bool has_cross = false;
    for (const auto& p : model.parameters()) has_cross |= p->name == "decoder.layers.0.cross_attn.q_proj.weight";
    EXPECT_TRUE(has_cross);
  }
}

}  // namespace
}  // namespace longnet::testing
