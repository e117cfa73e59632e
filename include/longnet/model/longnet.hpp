// LongNet, the encoder-decoder model (as the Python package's LongNet and torchscale's
// EncoderDecoder, with dilated attention everywhere):
//   memory = encoder.layer_norm(encoder.layers(dropout(embed_tokens(source))))   non-causal
//   x = decoder.layers(dropout(embed_tokens(inputs)), memory)   causal self-attention and
//                                                               cross-attention over memory
//   logits = lm_head(decoder.layer_norm(x))
// Source and target sequences have equal length N (dilated cross-attention needs it). One
// token embedding is shared by encoder and decoder (and by lm_head when tie_embeddings).
// Names: embed_tokens.weight, encoder.layers.{i}.*, encoder.layer_norm.*,
// decoder.layers.{i}.* (with cross_attn and cross_attn_layer_norm), decoder.layer_norm.*,
// lm_head.weight.
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

class LongNet final : public LanguageModel {
 public:
  LongNet(LongNetConfig config, Device device = Device::cpu(), std::uint64_t seed = 0);

  // source, inputs (B, N) -> logits (B, N, vocab); saves activations for backward.
  Tensor forward(const Tensor& source, const Tensor& inputs, const nn::ForwardContext& context);
  void backward_logits(const Tensor& dlogits);

  PendingLoss queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) override;
  void backward(double loss_scale = 1.0) override;
  std::string config_json() const override { return to_json(config_); }
  Device device() const override { return device_; }
  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override;

  const LongNetConfig& config() const { return config_; }

 private:
  LongNetConfig config_;
  Device device_;
  nn::ParameterPtr embedding_weight_;
  nn::Embedding encoder_embed_, decoder_embed_;  // two uses of one table
  nn::Dropout encoder_dropout_, decoder_dropout_;
  std::vector<std::unique_ptr<nn::EncoderLayer>> encoder_layers_;
  nn::LayerNorm encoder_layer_norm_;
  std::vector<std::unique_ptr<nn::DecoderLayer>> decoder_layers_;
  nn::LayerNorm decoder_layer_norm_;
  nn::Linear lm_head_;
  Tensor memory_;
  TokenLoss loss_;
};

}  // namespace longnet::model
