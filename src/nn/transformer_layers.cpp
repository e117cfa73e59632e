// nn::EncoderLayer and nn::DecoderLayer (transformer_layers.hpp).
#include "longnet/nn/transformer_layers.hpp"

#include "longnet/nn/functional.hpp"

namespace longnet::nn {

void TransformerLayerConfig::validate() const {
  attention.validate();
  ffn.validate();
  require(ffn.d_model == attention.d_model, "ffn.d_model = ", ffn.d_model,
          " differs from attention.d_model = ", attention.d_model);
  require(dropout >= 0 && dropout < 1, "dropout = ", dropout, ": must be in [0, 1)");
  require(layer_norm_eps > 0, "layer_norm_eps = ", layer_norm_eps, ": must be positive");
}

namespace {

TransformerLayerConfig with_causal(TransformerLayerConfig config, bool causal) {
  config.attention.attention.causal = causal;
  config.validate();
  return config;
}

// Cross-attention as torchscale's encoder-decoder attention: non-causal, no positional
// encoding, no sub-LayerNorm, separate projections.
MultiheadDilatedAttentionConfig cross_attention_config(const TransformerLayerConfig& config) {
  MultiheadDilatedAttentionConfig cross = config.attention;
  cross.attention.causal = false;
  cross.positional.kind = PositionalEncoding::none;
  cross.sub_layer_norm = false;
  cross.fused_qkv = false;
  cross.gamma = config.cross_gamma;
  return cross;
}

BiasGradient summed_if(bool summed) { return summed ? BiasGradient::summed_by_caller : BiasGradient::compute; }

}  // namespace

EncoderLayer::EncoderLayer(const std::string& name, TransformerLayerConfig config, const ParameterOptions& options,
                           std::uint64_t dropout_stream)
    : attn_layer_norm_(name + ".attn_layer_norm", config.attention.d_model, config.layer_norm_eps, options),
      attn_(name + ".attn", with_causal(config, false).attention, options),
      attn_dropout_(config.dropout, dropout_stream),
      ffn_layer_norm_(name + ".ffn_layer_norm", config.attention.d_model, config.layer_norm_eps, options),
      ffn_(name + ".ffn", config.ffn, options, dropout_stream + 1) {}

Tensor EncoderLayer::forward(const Tensor& x, const ForwardContext& context) {
  // New tensors for each sum (the layer norms keep their inputs for backward), added by the
  // output projections' GEMMs where no dropout comes between.
  const Tensor h = attn_dropout_.drops(context)
                       ? add(x, attn_dropout_.forward(attn_.forward(attn_layer_norm_.forward(x), context), context))
                       : attn_.forward(attn_layer_norm_.forward(x), context, &x);
  // fc1's input with the ones column its bias gradient comes from (no pass over its dy).
  const OnesColumn ones = ffn_.input_ones();
  return ffn_.forward(ffn_layer_norm_.forward(h, kernels::LayerNormInput::identity, ones), context, &h, ones);
}

Tensor EncoderLayer::backward(const Tensor& dy, const LayerGradientSums& sums) {
  // y = h + ffn(ln(h)): dh = dy + ln^T(ffn^T(dy)); h = x + attn(ln(x)) likewise. The
  // layer norms add the residual gradient as they write theirs (one pass fewer each), and
  // the FFN's sums dh's columns into out_proj's bias gradient when dh is out_proj's output
  // gradient (no dropout between).
  Tensor* out_proj_bias = attn_dropout_.dropped_last_forward() ? nullptr : attn_.output_bias_gradient();
  attn_.prepare_backward();  // dq's zero fill beside the FFN's backward
  const Tensor dh = ffn_layer_norm_.backward(ffn_.backward(dy, summed_if(sums.output_bias_summed)), &dy, out_proj_bias);
  return attn_layer_norm_.backward(attn_.backward(attn_dropout_.backward(dh), summed_if(out_proj_bias != nullptr)), &dh,
                                   sums.dx_column_sums);
}

void EncoderLayer::collect_parameters(std::vector<ParameterPtr>& out) const {
  attn_layer_norm_.collect_parameters(out);
  attn_.collect_parameters(out);
  ffn_layer_norm_.collect_parameters(out);
  ffn_.collect_parameters(out);
}

DecoderLayer::DecoderLayer(const std::string& name, TransformerLayerConfig config, const ParameterOptions& options,
                           std::uint64_t dropout_stream)
    : attn_layer_norm_(name + ".attn_layer_norm", config.attention.d_model, config.layer_norm_eps, options),
      attn_(name + ".attn", with_causal(config, true).attention, options),
      attn_dropout_(config.dropout, dropout_stream),
      cross_attn_dropout_(config.dropout, dropout_stream + 3),
      ffn_layer_norm_(name + ".ffn_layer_norm", config.attention.d_model, config.layer_norm_eps, options),
      ffn_(name + ".ffn", config.ffn, options, dropout_stream + 1) {
  if (config.cross_attention) {
    cross_attn_layer_norm_ = std::make_unique<LayerNorm>(name + ".cross_attn_layer_norm", config.attention.d_model,
                                                         config.layer_norm_eps, options);
    cross_attn_ =
        std::make_unique<MultiheadDilatedAttention>(name + ".cross_attn", cross_attention_config(config), options);
  }
}

Tensor DecoderLayer::forward(const Tensor& x, const Tensor& memory, const ForwardContext& context) {
  require(memory.defined() == (cross_attn_ != nullptr),
          cross_attn_ ? "DecoderLayer with cross-attention needs the encoder's output (memory)"
                      : "DecoderLayer without cross-attention takes no memory");
  // New tensors for each sum (the layer norms keep their inputs for backward), added by the
  // output projections' GEMMs where no dropout comes between.
  Tensor h = attn_dropout_.drops(context)
                 ? add(x, attn_dropout_.forward(attn_.forward(attn_layer_norm_.forward(x), context), context))
                 : attn_.forward(attn_layer_norm_.forward(x), context, &x);
  if (cross_attn_) {
    h = add(h, cross_attn_dropout_.forward(cross_attn_->forward(cross_attn_layer_norm_->forward(h), memory, context),
                                           context));
  }
  // fc1's input with the ones column its bias gradient comes from (no pass over its dy).
  const OnesColumn ones = ffn_.input_ones();
  return ffn_.forward(ffn_layer_norm_.forward(h, kernels::LayerNormInput::identity, ones), context, &h, ones);
}

Tensor DecoderLayer::backward(const Tensor& dy, Tensor* dmemory, const LayerGradientSums& sums) {
  // As EncoderLayer::backward. With cross-attention between, out_proj sums its own bias
  // gradient.
  Tensor* out_proj_bias = cross_attn_ || attn_dropout_.dropped_last_forward() ? nullptr : attn_.output_bias_gradient();
  attn_.prepare_backward();  // dq's zero fill beside the FFN's backward
  Tensor dh = ffn_layer_norm_.backward(ffn_.backward(dy, summed_if(sums.output_bias_summed)), &dy, out_proj_bias);
  if (cross_attn_) {
    require(dmemory != nullptr, "DecoderLayer::backward: a layer with cross-attention needs dmemory");
    const CrossAttentionGradients g = cross_attn_->backward_cross(cross_attn_dropout_.backward(dh));
    dh = cross_attn_layer_norm_->backward(g.dx, &dh);
    if (dmemory->defined()) {
      add_into(*dmemory, g.dmemory);
    } else {
      *dmemory = g.dmemory;
    }
  }
  return attn_layer_norm_.backward(attn_.backward(attn_dropout_.backward(dh), summed_if(out_proj_bias != nullptr)), &dh,
                                   sums.dx_column_sums);
}

AttentionCache DecoderLayer::make_cache(std::int64_t batch, std::int64_t max_positions) const {
  require(!cross_attn_, "generation with a KV cache is for decoder-only models");
  return attn_.make_cache(batch, max_positions);
}

Tensor DecoderLayer::decode(const Tensor& x, AttentionCache& cache) const {
  require(!cross_attn_, "generation with a KV cache is for decoder-only models");
  Tensor h = add(x, attn_.decode(attn_layer_norm_.infer(x), cache));
  add_into(h, ffn_.infer(ffn_layer_norm_.infer(h)));
  return h;
}

Tensor DecoderLayer::prefill(const Tensor& x, AttentionCache& cache) const {
  require(!cross_attn_, "generation with a KV cache is for decoder-only models");
  Tensor h = add(x, attn_.prefill(attn_layer_norm_.infer(x), cache));
  add_into(h, ffn_.infer(ffn_layer_norm_.infer(h)));
  return h;
}

void DecoderLayer::collect_parameters(std::vector<ParameterPtr>& out) const {
  attn_layer_norm_.collect_parameters(out);
  attn_.collect_parameters(out);
  if (cross_attn_) {
    cross_attn_layer_norm_->collect_parameters(out);
    cross_attn_->collect_parameters(out);
  }
  ffn_layer_norm_.collect_parameters(out);
  ffn_.collect_parameters(out);
}

}  // namespace longnet::nn
