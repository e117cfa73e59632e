// LongNet, the encoder-decoder model (longnet.hpp).
#include "longnet/model/longnet.hpp"

#include <cmath>

namespace longnet::model {
namespace {

// Dropout streams: 1 and 2 for the embeddings; 16 (i + 1) + {0..3} for decoder layer i and
// 2^32 + 16 (i + 1) + {0..3} for encoder layer i.
std::uint64_t decoder_stream(std::int64_t layer) { return 16 * static_cast<std::uint64_t>(layer + 1); }
std::uint64_t encoder_stream(std::int64_t layer) { return (1ull << 32) + decoder_stream(layer); }

const LongNetConfig& validated(const LongNetConfig& config) {
  config.validate();
  return config;
}

nn::ParameterPtr make_embedding_weight(const LongNetConfig& c, const nn::ParameterOptions& o) {
  return nn::make_parameter(
      "embed_tokens.weight",
      nn::normal_init({c.vocab_size, c.d_model}, nn::parameter_seed(o.seed, "embed_tokens.weight"),
                      1.0 / std::sqrt(static_cast<double>(c.d_model))),
      o);
}

nn::Linear make_lm_head(const LongNetConfig& c, const nn::ParameterPtr& embedding, const nn::ParameterOptions& o) {
  if (c.tie_embeddings) return nn::Linear(embedding, nullptr);
  return nn::Linear(
      nn::make_parameter("lm_head.weight",
                         nn::normal_init({c.vocab_size, c.d_model}, nn::parameter_seed(o.seed, "lm_head.weight"),
                                         1.0 / std::sqrt(static_cast<double>(c.d_model))),
                         o),
      nullptr);
}

double embedding_scale(const LongNetConfig& c) {
  return c.scale_embedding ? std::sqrt(static_cast<double>(c.d_model)) : 1.0;
}

}  // namespace

LongNet::LongNet(LongNetConfig config, Device device, std::uint64_t seed)
    : config_(validated(config)),
      device_(device),
      embedding_weight_(make_embedding_weight(config_, config_.parameter_options(device, seed))),
      encoder_embed_(embedding_weight_, embedding_scale(config_)),
      decoder_embed_(embedding_weight_, embedding_scale(config_)),
      encoder_dropout_(config_.dropout, 2),
      decoder_dropout_(config_.dropout, 1),
      encoder_layer_norm_("encoder.layer_norm", config_.d_model, config_.layer_norm_eps,
                          config_.parameter_options(device, seed)),
      decoder_layer_norm_("decoder.layer_norm", config_.d_model, config_.layer_norm_eps,
                          config_.parameter_options(device, seed)),
      lm_head_(make_lm_head(config_, embedding_weight_, config_.parameter_options(device, seed))) {
  const auto Ld = static_cast<double>(config_.layers), Le = static_cast<double>(config_.encoder_layers);
  const double decoder_gamma = std::sqrt(std::log(3.0 * Ld));
  const double encoder_gamma = std::sqrt(std::log(3.0 * Ld) * std::log(2.0 * Le) / 3.0);
  const nn::ParameterOptions options = config_.parameter_options(device, seed);
  for (std::int64_t i = 0; i < config_.encoder_layers; ++i) {
    encoder_layers_.push_back(std::make_unique<nn::EncoderLayer>(
        str("encoder.layers.", i), config_.layer_config(encoder_gamma, false), options, encoder_stream(i)));
  }
  for (std::int64_t i = 0; i < config_.layers; ++i) {
    decoder_layers_.push_back(std::make_unique<nn::DecoderLayer>(
        str("decoder.layers.", i), config_.layer_config(decoder_gamma, true), options, decoder_stream(i)));
  }
}

Tensor LongNet::forward(const Tensor& source, const Tensor& inputs, const nn::ForwardContext& context) {
  require(source.defined() && inputs.defined() && source.dim() == 2 && source.shape() == inputs.shape(),
          "source and inputs must be (batch, seq_len) of equal shape (dilated cross-attention needs equal lengths)");
  Tensor m = encoder_dropout_.forward(encoder_embed_.forward(source), context);
  for (const auto& layer : encoder_layers_) m = layer->forward(m, context);
  memory_ = encoder_layer_norm_.forward(m);
  Tensor x = decoder_dropout_.forward(decoder_embed_.forward(inputs), context);
  for (const auto& layer : decoder_layers_) x = layer->forward(x, memory_, context);
  return lm_head_.forward(decoder_layer_norm_.forward(x));
}

void LongNet::backward_logits(const Tensor& dlogits) {
  Tensor dmemory;
  const auto decoder_backward = [&](nn::DecoderLayer& layer, const Tensor& dy, const nn::LayerGradientSums& sums) {
    return layer.backward(dy, &dmemory, sums);
  };
  // The head's backward outside any gradient-stream scope (stack_backward opens its own):
  // with tied embeddings its weight gradient is the embedding table's, which the
  // embeddings' backwards add to on this stream.
  const Tensor dhidden = lm_head_.backward(dlogits);
  const Tensor dx = nn::stack_backward(decoder_layer_norm_, decoder_layers_, dhidden, decoder_backward);
  decoder_embed_.backward(decoder_dropout_.backward(dx));
  const auto encoder_backward = [](nn::EncoderLayer& layer, const Tensor& dy, const nn::LayerGradientSums& sums) {
    return layer.backward(dy, sums);
  };
  const Tensor dm = nn::stack_backward(encoder_layer_norm_, encoder_layers_, dmemory, encoder_backward);
  encoder_embed_.backward(encoder_dropout_.backward(dm));
}

PendingLoss LongNet::queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) {
  return loss_.forward(forward(batch.source, batch.inputs, context), batch.targets);
}

void LongNet::backward(double loss_scale) { backward_logits(loss_.backward(loss_scale)); }

void LongNet::collect_parameters(std::vector<nn::ParameterPtr>& out) const {
  nn::append_unique(out, embedding_weight_);
  for (const auto& layer : encoder_layers_) layer->collect_parameters(out);
  encoder_layer_norm_.collect_parameters(out);
  for (const auto& layer : decoder_layers_) layer->collect_parameters(out);
  decoder_layer_norm_.collect_parameters(out);
  lm_head_.collect_parameters(out);
}

}  // namespace longnet::model
