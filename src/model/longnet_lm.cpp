// LongNetLM (longnet_lm.hpp).
#include "longnet/model/longnet_lm.hpp"

#include <cmath>

namespace longnet::model {
namespace {

// Dropout streams: 1 for the embedding, 16 (i + 1) + {0..3} for layer i.
constexpr std::uint64_t kEmbeddingStream = 1;
std::uint64_t layer_stream(std::int64_t layer) { return 16 * static_cast<std::uint64_t>(layer + 1); }

const LongNetLMConfig& validated(const LongNetLMConfig& config) {
  config.validate();
  return config;
}

nn::Linear make_lm_head(const LongNetLMConfig& c, const nn::Embedding& embedding, const nn::ParameterOptions& o) {
  if (c.tie_embeddings) return nn::Linear(embedding.weight(), nullptr);
  // torchscale's output projection: N(0, d_model^-1).
  return nn::Linear(
      nn::make_parameter("lm_head.weight",
                         nn::normal_init({c.vocab_size, c.d_model}, nn::parameter_seed(o.seed, "lm_head.weight"),
                                         1.0 / std::sqrt(static_cast<double>(c.d_model))),
                         o),
      nullptr);
}

}  // namespace

LongNetLM::LongNetLM(LongNetLMConfig config, Device device, std::uint64_t seed)
    : config_(validated(config)),
      device_(device),
      embed_tokens_("embed_tokens", config_.vocab_size, config_.d_model,
                    config_.scale_embedding ? std::sqrt(static_cast<double>(config_.d_model)) : 1.0,
                    config_.parameter_options(device, seed)),
      embed_dropout_(config_.dropout, kEmbeddingStream),
      layer_norm_("layer_norm", config_.d_model, config_.layer_norm_eps, config_.parameter_options(device, seed)),
      lm_head_(make_lm_head(config_, embed_tokens_, config_.parameter_options(device, seed))) {
  const double gamma = std::sqrt(std::log(2.0 * static_cast<double>(config_.layers)));
  for (std::int64_t i = 0; i < config_.layers; ++i) {
    layers_.push_back(std::make_unique<nn::DecoderLayer>(str("layers.", i), config_.layer_config(gamma, false),
                                                         config_.parameter_options(device, seed), layer_stream(i)));
  }
}

Tensor LongNetLM::forward(const Tensor& tokens, const nn::ForwardContext& context) {
  require(tokens.defined() && tokens.dim() == 2, "tokens must be (batch, seq_len)");
  Tensor x = embed_dropout_.forward(embed_tokens_.forward(tokens), context);
  for (const auto& layer : layers_) x = layer->forward(x, Tensor(), context);
  return lm_head_.forward(layer_norm_.forward(x));
}

void LongNetLM::backward_logits(const Tensor& dlogits) {
  const auto layer_backward = [](nn::DecoderLayer& layer, const Tensor& dy, const nn::LayerGradientSums& sums) {
    return layer.backward(dy, nullptr, sums);
  };
  // The head's backward before the scope: with tied embeddings its weight gradient is the
  // embedding's, which the embedding's backward adds to on this stream.
  const Tensor dy = lm_head_.backward(dlogits);
  // One scope over the layers (stack_backward's joins into it) and the embedding: the
  // embedding's backward runs beside the first layer's last weight gradients instead of
  // after them (the step's tail 37 us shorter on an H100).
  GradientStream parameter_gradients(dy.device());
  const Tensor dx = nn::stack_backward(layer_norm_, layers_, dy, layer_backward);
  embed_tokens_.backward(embed_dropout_.backward(dx));
}

PendingLoss LongNetLM::queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) {
  return loss_.forward(forward(batch.inputs, context), batch.targets);
}

void LongNetLM::backward(double loss_scale) { backward_logits(loss_.backward(loss_scale)); }

void LongNetLM::collect_parameters(std::vector<nn::ParameterPtr>& out) const {
  embed_tokens_.collect_parameters(out);
  for (const auto& layer : layers_) layer->collect_parameters(out);
  layer_norm_.collect_parameters(out);
  lm_head_.collect_parameters(out);  // nothing new when tied
}

std::size_t LongNetLM::DecodeState::bytes() const {
  std::size_t total = 0;
  for (const nn::AttentionCache& c : caches) total += c.bytes();
  return total;
}

LongNetLM::DecodeState LongNetLM::make_decode_state(std::int64_t batch, std::int64_t max_positions) const {
  DecodeState state;
  for (const auto& layer : layers_) state.caches.push_back(layer->make_cache(batch, max_positions));
  return state;
}

Tensor LongNetLM::decode(const Tensor& tokens, DecodeState& state) const {
  require(state.caches.size() == layers_.size(), "decode: the state was not made by this model");
  const std::int64_t batch = state.caches.front().batch;
  require(tokens.defined() && tokens.numel() == batch, "decode: tokens must hold one token per sequence (", batch, ")");
  Tensor x = embed_tokens_.infer(tokens.reshape({batch, 1}));
  for (std::size_t i = 0; i < layers_.size(); ++i) x = layers_[i]->decode(x, state.caches[i]);
  return lm_head_.infer(layer_norm_.infer(x)).view({batch, config_.vocab_size});
}

Tensor LongNetLM::prefill(const Tensor& tokens, DecodeState& state) const {
  require(state.caches.size() == layers_.size(), "prefill: the state was not made by this model");
  const std::int64_t batch = state.caches.front().batch;
  require(tokens.defined() && tokens.dim() == 2 && tokens.size(0) == batch && tokens.size(1) >= 1,
          "prefill: tokens must be (batch = ", batch, ", positions >= 1)");
  Tensor x = embed_tokens_.infer(tokens);
  for (std::size_t i = 0; i < layers_.size(); ++i) x = layers_[i]->prefill(x, state.caches[i]);
  const Tensor last = x.slice(1, x.size(1) - 1, x.size(1));
  return lm_head_.infer(layer_norm_.infer(last)).view({batch, config_.vocab_size});
}

}  // namespace longnet::model
