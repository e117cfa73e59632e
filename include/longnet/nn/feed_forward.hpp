// nn::FeedForward, torchscale's feed-forward network with MAGNETO's sub-LayerNorm:
//   y = dropout(fc2(subln(activation_dropout(gelu(fc1(x))))))
// x, y: (..., d_model); the hidden (..., ffn_dim). Parameters fc1 (ffn_dim, d_model),
// ffn_layernorm (ffn_dim, only with sub_layer_norm), fc2 (d_model, ffn_dim); fc1 and fc2
// start as PyTorch's nn.Linear times `gamma` (MAGNETO's initialisation scale).
#pragma once

#include <string>

#include "longnet/nn/activation.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"

namespace longnet::nn {

struct FeedForwardConfig {
  std::int64_t d_model = 0;
  std::int64_t ffn_dim = 0;
  bool bias = true;
  bool sub_layer_norm = true;
  double layer_norm_eps = 1e-5;
  double dropout = 0.0;
  double activation_dropout = 0.0;
  double gamma = 1.0;
  void validate() const;
};

class FeedForward final : public Module {
 public:
  // Dropout masks use streams dropout_stream and dropout_stream + 1.
  FeedForward(const std::string& name, const FeedForwardConfig& config, const ParameterOptions& options,
              std::uint64_t dropout_stream);

  // residual (nullable, x's shape) is added to the output (by fc2's GEMM when the output
  // dropout is inactive).
  // x_ones: x's rows are followed by the ones column (linear.hpp's OnesColumn), which fc1
  // takes its bias gradient from; input_ones() says whether fc1 would use one.
  Tensor forward(const Tensor& x, const ForwardContext& context, const Tensor* residual = nullptr,
                 OnesColumn x_ones = OnesColumn::absent);
  OnesColumn input_ones() const { return fc1_.bias() ? OnesColumn::present : OnesColumn::absent; }
  // fc2_bias = summed_by_caller: the caller added dy's column sums into
  // output_bias_gradient() (which must then be non-null).
  Tensor backward(const Tensor& dy, BiasGradient fc2_bias = BiasGradient::compute);
  Tensor infer(const Tensor& x) const;
  // fc2's bias gradient when the last forward left it equal to the column sums of
  // backward's dy (fc2 has a bias and no dropout came after it), else null.
  Tensor* output_bias_gradient();

  Linear& fc1() { return fc1_; }
  Linear& fc2() { return fc2_; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  FeedForwardConfig config_;
  Linear fc1_;
  GELU gelu_;
  Dropout activation_dropout_;
  std::unique_ptr<LayerNorm> ffn_layernorm_;
  Linear fc2_;
  Dropout dropout_;
  bool fused_activation_ = false;  // the last forward ran GELU inside the sub-LayerNorm
};

}  // namespace longnet::nn
