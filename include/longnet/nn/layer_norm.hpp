// nn::LayerNorm over the last dimension (kernels/layer_norm.hpp), weight 1 and bias 0 at
// initialisation, eps 1e-5 by default (PyTorch's).
#pragma once

#include <string>

#include "longnet/kernels/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

class LayerNorm final : public Module {
 public:
  LayerNorm(const std::string& name, std::int64_t dim, double eps, const ParameterOptions& options);

  // input = gelu normalises gelu(x) (kernels/layer_norm.hpp): the feed-forward's
  // activation and sub-LayerNorm in one pass; backward then returns the gradient of x.
  // ones = present: the output is a column slice of rows kernels::kOnesColumns longer,
  // each followed by 1, 0, ..., 0: the input a Linear takes as OnesColumn::present.
  Tensor forward(const Tensor& x, kernels::LayerNormInput input = kernels::LayerNormInput::identity,
                 OnesColumn ones = OnesColumn::absent);
  // dresidual (nullable, dy's shape): added to the returned gradient in the same pass (the
  // residual stream's gradient, which would otherwise take an add of its own).
  // dx_column_sums (nullable, (dim) in the gradients' dtype, on the module's device): the
  // returned gradient's column sums are added into it in the same pass, as stored
  // (kernels/layer_norm.hpp): a Linear bias gradient when dx is that Linear's output
  // gradient, which then skips its own pass (Linear::BiasGradient::summed_by_caller).
  // Inside a GradientStream on CUDA these sums, like the parameters' gradients, are added on
  // the side stream: read them only after the scope's join.
  // segment_dots (nullable; x of shape (B, N, dim), identity input): a (B, S, N) tensor in
  // the accumulation dtype on the module's device, S dividing dim, written with the dot
  // products of the returned gradient (as stored) and x over each of the S segments of
  // dim / S columns: for an attention output x (heads side by side) the attention
  // backward's delta (AttentionBackwardOptions::output_deltas), in the same pass.
  Tensor backward(const Tensor& dy, const Tensor* dresidual = nullptr, Tensor* dx_column_sums = nullptr,
                  Tensor* segment_dots = nullptr);
  Tensor infer(const Tensor& x, kernels::LayerNormInput input = kernels::LayerNormInput::identity) const;

  std::int64_t dim() const { return weight_->value.size(0); }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  Tensor run_forward(const Tensor& x, kernels::LayerNormInput input, OnesColumn ones, Tensor* mean, Tensor* rstd) const;

  ParameterPtr weight_, bias_;
  double eps_;
  Tensor x_, mean_, rstd_;
  kernels::LayerNormInput input_ = kernels::LayerNormInput::identity;
};

}  // namespace longnet::nn
