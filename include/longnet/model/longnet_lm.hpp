// LongNetLM, the decoder-only LongNet language model:
//   x = dropout(embed_tokens(tokens) [* sqrt(d_model)])          (B, N, d_model)
//   x = layers[L-1](... layers[0](x))                            causal dilated decoder layers
//   logits = lm_head(layer_norm(x))                              (B, N, vocab)
// with lm_head tied to embed_tokens when tie_embeddings. Parameter names:
// embed_tokens.weight, layers.{i}.{attn_layer_norm, attn.{q,k,v,out}_proj,
// attn.inner_attn_ln, ffn_layer_norm, ffn.{fc1, ffn_layernorm, fc2}}.{weight,bias},
// layer_norm.{weight,bias}, lm_head.weight.
// Generation: decode() runs one position for a batch against per-layer KV caches bounded by
// the segment lengths (nn::AttentionCache); generation.hpp samples from it.
#pragma once

#include <memory>
#include <vector>

#include "longnet/model/config.hpp"
#include "longnet/model/language_model.hpp"
#include "longnet/model/token_loss.hpp"
#include "longnet/nn/embedding.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/transformer_layers.hpp"

namespace longnet::model {

class LongNetLM final : public LanguageModel {
 public:
  LongNetLM(LongNetLMConfig config, Device device = Device::cpu(), std::uint64_t seed = 0);

  // tokens (B, N) int32/int64 -> logits (B, N, vocab); saves activations for backward.
  Tensor forward(const Tensor& tokens, const nn::ForwardContext& context);
  // Backward from dlogits (B, N, vocab); accumulates parameter gradients.
  void backward_logits(const Tensor& dlogits);

  PendingLoss queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) override;
  void backward(double loss_scale = 1.0) override;
  std::string config_json() const override { return to_json(config_); }
  Device device() const override { return device_; }
  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override;

  // Generation: caches for `batch` sequences of up to max_positions positions, and one
  // step: tokens (B) int32 at the caches' next position -> logits (B, vocab).
  struct DecodeState {
    std::vector<nn::AttentionCache> caches;
    std::int64_t position() const { return caches.empty() ? 0 : caches.front().next_position; }
    std::size_t bytes() const;
  };
  DecodeState make_decode_state(std::int64_t batch, std::int64_t max_positions) const;
  Tensor decode(const Tensor& tokens, DecodeState& state) const;
  // A whole prompt at once into fresh caches: tokens (B, P) -> logits (B, vocab) of the
  // last position (equal to P decode() steps, faster: one batched forward).
  Tensor prefill(const Tensor& tokens, DecodeState& state) const;

  const LongNetLMConfig& config() const { return config_; }

 private:
  LongNetLMConfig config_;
  Device device_;
  nn::Embedding embed_tokens_;
  nn::Dropout embed_dropout_;
  std::vector<std::unique_ptr<nn::DecoderLayer>> layers_;
  nn::LayerNorm layer_norm_;
  nn::Linear lm_head_;
  // Saved by forward_loss.
  TokenLoss loss_;
};

}  // namespace longnet::model
