// nn::FeedForward (feed_forward.hpp).
#include "longnet/nn/feed_forward.hpp"

#include <cmath>

#include "longnet/nn/functional.hpp"

namespace longnet::nn {

void FeedForwardConfig::validate() const {
  require(d_model >= 1, "d_model = ", d_model, ": must be >= 1");
  require(ffn_dim >= 1, "ffn_dim = ", ffn_dim, ": must be >= 1");
  require(dropout >= 0 && dropout < 1, "dropout = ", dropout, ": must be in [0, 1)");
  require(activation_dropout >= 0 && activation_dropout < 1, "activation_dropout = ", activation_dropout,
          ": must be in [0, 1)");
  require(gamma > 0 && std::isfinite(gamma), "ffn gamma = ", gamma, ": must be positive and finite");
}

namespace {
const FeedForwardConfig& validated(const FeedForwardConfig& config) {
  config.validate();
  return config;
}
}  // namespace

FeedForward::FeedForward(const std::string& name, const FeedForwardConfig& config, const ParameterOptions& options,
                         std::uint64_t dropout_stream)
    : config_(validated(config)),
      fc1_(name + ".fc1", config.d_model, config.ffn_dim, config.bias, options),
      activation_dropout_(config.activation_dropout, dropout_stream),
      fc2_(name + ".fc2", config.ffn_dim, config.d_model, config.bias, options),
      dropout_(config.dropout, dropout_stream + 1) {
  if (config.gamma != 1.0) {
    for (Linear* linear : {&fc1_, &fc2_}) {
      for (const ParameterPtr& p : linear->parameters()) {
        scale_in_place(p->value, config.gamma);
        p->refresh_compute();
      }
    }
  }
  if (config.sub_layer_norm) {
    ffn_layernorm_ =
        std::make_unique<LayerNorm>(name + ".ffn_layernorm", config.ffn_dim, config.layer_norm_eps, options);
  }
}

// With the sub-LayerNorm and no activation dropout in between, the LayerNorm applies the
// GELU as it reads the rows (LayerNormInput::gelu): the activation is never stored.
Tensor FeedForward::forward(const Tensor& x, const ForwardContext& context, const Tensor* residual, OnesColumn x_ones) {
  fused_activation_ = ffn_layernorm_ && !activation_dropout_.drops(context);
  Tensor h;
  if (fused_activation_) {
    h = ffn_layernorm_->forward(fc1_.forward(x, nullptr, x_ones), kernels::LayerNormInput::gelu);
  } else {
    h = activation_dropout_.forward(gelu_.forward(fc1_.forward(x, nullptr, x_ones)), context);
    if (ffn_layernorm_) h = ffn_layernorm_->forward(h);
  }
  if (residual && dropout_.drops(context)) return add(*residual, dropout_.forward(fc2_.forward(h), context));
  return dropout_.forward(fc2_.forward(h, residual), context);
}

Tensor* FeedForward::output_bias_gradient() {
  return fc2_.bias() && !dropout_.dropped_last_forward() ? &fc2_.bias()->grad : nullptr;
}

Tensor FeedForward::backward(const Tensor& dy, BiasGradient fc2_bias) {
  require(fc2_bias == BiasGradient::compute || output_bias_gradient(), fc2_.weight()->name,
          ": fc2's bias gradient summed by the caller, but it has no bias or dropout came after it");
  Tensor dh = fc2_.backward(dropout_.backward(dy), fc2_bias);
  if (fused_activation_) return fc1_.backward(ffn_layernorm_->backward(dh));
  if (ffn_layernorm_) dh = ffn_layernorm_->backward(dh);
  dh = activation_dropout_.backward(dh);
  return fc1_.backward(gelu_.backward(dh));
}

Tensor FeedForward::infer(const Tensor& x) const {
  if (ffn_layernorm_) return fc2_.infer(ffn_layernorm_->infer(fc1_.infer(x), kernels::LayerNormInput::gelu));
  return fc2_.infer(GELU::infer(fc1_.infer(x)));
}

void FeedForward::collect_parameters(std::vector<ParameterPtr>& out) const {
  fc1_.collect_parameters(out);
  if (ffn_layernorm_) ffn_layernorm_->collect_parameters(out);
  fc2_.collect_parameters(out);
}

}  // namespace longnet::nn
