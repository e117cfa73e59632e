// The transformer layers of LongNet (pre-LayerNorm with MAGNETO's sub-LayerNorms, as
// torchscale's EncoderLayer/DecoderLayer with subln):
//   encoder:  h = x + dropout(attn(attn_layer_norm(x)))                  (non-causal)
//             y = h + ffn(ffn_layer_norm(h))
//   decoder:  h = x + dropout(attn(attn_layer_norm(x)))                  (causal)
//             [h = h + dropout(cross_attn(cross_attn_layer_norm(h), memory))]  (encoder-decoder)
//             y = h + ffn(ffn_layer_norm(h))
// x, y, memory: (B, N, d_model). Cross-attention is over an equal-length memory (as the
// Python package's decoder layer) and has no sub-LayerNorm (as torchscale's).
#pragma once

#include <memory>
#include <string>

#include "longnet/nn/activation.hpp"
#include "longnet/nn/feed_forward.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/multihead_dilated_attention.hpp"

namespace longnet::nn {

struct TransformerLayerConfig {
  MultiheadDilatedAttentionConfig attention;  // its `attention.causal` is set by the layer
  FeedForwardConfig ffn;
  double dropout = 0.0;  // on the attention outputs (the FFN has its own)
  double layer_norm_eps = 1e-5;
  bool cross_attention = false;  // decoder only
  double cross_gamma = 1.0;      // MAGNETO gamma of the cross-attention (torchscale: none, 1)
  void validate() const;
};

class EncoderLayer final : public Module {
 public:
  // Dropout streams dropout_stream .. dropout_stream + 3.
  EncoderLayer(const std::string& name, TransformerLayerConfig config, const ParameterOptions& options,
               std::uint64_t dropout_stream);
  Tensor forward(const Tensor& x, const ForwardContext& context);
  Tensor backward(const Tensor& dy);
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  LayerNorm attn_layer_norm_;
  MultiheadDilatedAttention attn_;
  Dropout attn_dropout_;
  LayerNorm ffn_layer_norm_;
  FeedForward ffn_;
};

class DecoderLayer final : public Module {
 public:
  // Dropout streams dropout_stream .. dropout_stream + 3.
  DecoderLayer(const std::string& name, TransformerLayerConfig config, const ParameterOptions& options,
               std::uint64_t dropout_stream);
  // memory: undefined for a decoder-only model; required when the layer has cross-attention.
  Tensor forward(const Tensor& x, const Tensor& memory, const ForwardContext& context);
  // Returns dx; adds the memory's gradient into *dmemory (assigned when undefined).
  Tensor backward(const Tensor& dy, Tensor* dmemory = nullptr);

  // Generation (decoder-only): one position, x (B, 1, d_model).
  AttentionCache make_cache(std::int64_t batch, std::int64_t max_positions) const;
  Tensor decode(const Tensor& x, AttentionCache& cache) const;
  // A whole prompt, x (B, P, d_model), into an empty cache (MultiheadDilatedAttention::prefill).
  Tensor prefill(const Tensor& x, AttentionCache& cache) const;

  bool has_cross_attention() const { return cross_attn_ != nullptr; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  LayerNorm attn_layer_norm_;
  MultiheadDilatedAttention attn_;
  Dropout attn_dropout_;
  std::unique_ptr<LayerNorm> cross_attn_layer_norm_;
  std::unique_ptr<MultiheadDilatedAttention> cross_attn_;
  Dropout cross_attn_dropout_;
  LayerNorm ffn_layer_norm_;
  FeedForward ffn_;
};

}  // namespace longnet::nn
