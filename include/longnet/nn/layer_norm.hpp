// nn::LayerNorm over the last dimension (kernels/layer_norm.hpp), weight 1 and bias 0 at
// initialisation, eps 1e-5 by default (PyTorch's).
#pragma once

#include <string>

#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

class LayerNorm final : public Module {
 public:
  LayerNorm(const std::string& name, std::int64_t dim, double eps, const ParameterOptions& options);

  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  Tensor infer(const Tensor& x) const;

  std::int64_t dim() const { return weight_->value.size(0); }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  Tensor run_forward(const Tensor& x, Tensor* mean, Tensor* rstd) const;

  ParameterPtr weight_, bias_;
  double eps_;
  Tensor x_, mean_, rstd_;
};

}  // namespace longnet::nn
