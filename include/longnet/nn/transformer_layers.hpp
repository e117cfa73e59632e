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
#include <vector>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/nn/activation.hpp"
#include "longnet/nn/feed_forward.hpp"
#include "longnet/nn/gradient_norm_queue.hpp"
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

// Column sums of a layer's gradients that LayerNorm backwards compute as they write them,
// given to Linear bias gradients in place of a pass over a (rows, d_model) gradient each.
// Inside a layer, out_proj's bias takes the column sums of the gradient that the FFN's
// pre-norm writes, when no dropout or cross-attention comes between; across layers,
// stack_backward (below) chains them: fc2's bias takes the column sums of the layer's output
// gradient from the norm backward that writes it.
struct LayerGradientSums {
  // The caller added the column sums of dy (the layer's output gradient) into
  // output_bias_gradient(), which must be non-null: fc2 skips its bias gradient.
  bool output_bias_summed = false;
  // Nullable, (d_model) in the gradients' dtype: receives (+=) the column sums of the
  // returned dx (as LayerNorm::backward's dx_column_sums), e.g. the previous layer's
  // output_bias_gradient().
  Tensor* dx_column_sums = nullptr;
};

class EncoderLayer final : public Module {
 public:
  // Dropout streams dropout_stream .. dropout_stream + 3.
  EncoderLayer(const std::string& name, TransformerLayerConfig config, const ParameterOptions& options,
               std::uint64_t dropout_stream);
  Tensor forward(const Tensor& x, const ForwardContext& context);
  Tensor backward(const Tensor& dy, const LayerGradientSums& sums = {});
  // The gradient that equals the column sums of backward's dy after the last forward (fc2's
  // bias gradient, FeedForward::output_bias_gradient), else null.
  Tensor* output_bias_gradient() { return ffn_.output_bias_gradient(); }
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
  Tensor backward(const Tensor& dy, Tensor* dmemory = nullptr, const LayerGradientSums& sums = {});
  // As EncoderLayer::output_bias_gradient.
  Tensor* output_bias_gradient() { return ffn_.output_bias_gradient(); }

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

// Backward through y = final_norm(layers[L-1](... layers[0](x))) from y's gradient dy;
// returns x's. The norm backward that writes each layer's output gradient (the final norm,
// or the next layer's input norm) sums its columns into that layer's output_bias_gradient()
// (LayerGradientSums), and the layer skips that pass. layer_backward(layer, dy, sums) runs
// one layer's backward (a decoder's with its dmemory).
template <class Layer, class LayerBackward>
Tensor stack_backward(LayerNorm& final_norm, const std::vector<std::unique_ptr<Layer>>& layers, const Tensor& dy,
                      LayerBackward&& layer_backward) {
  Tensor* output_bias = layers.empty() ? nullptr : layers.back()->output_bias_gradient();
  Tensor dx = final_norm.backward(dy, nullptr, output_bias);
  // The layers' parameter gradients overlap the rest of the backward on CUDA (a side
  // stream, GradientStream); all of them are written when this returns (the scope joins),
  // or, when the caller has a scope open, when the caller's ends.
  GradientStream parameter_gradients(dx.device());
  for (std::size_t i = layers.size(); i-- > 0;) {
    Tensor* previous_output_bias = i > 0 ? layers[i - 1]->output_bias_gradient() : nullptr;
    dx = layer_backward(
        *layers[i], dx,
        LayerGradientSums{.output_bias_summed = output_bias != nullptr, .dx_column_sums = previous_output_bias});
    output_bias = previous_output_bias;
    // The layer's parameter gradients are final (its output bias's column sums were taken by
    // the norm after it, before it): their share of the gradient norm may be queued now.
    if (GradientNormQueue* norms = GradientNormQueue::active()) norms->layer_done(*layers[i]);
  }
  return dx;
}

}  // namespace longnet::nn
