// nn::Linear: y (..., out) = x (..., in) W^T + b, weight (out, in), bias (out), PyTorch's
// default initialisation U(-1/sqrt(in), 1/sqrt(in)) unless given. Backward writes dx and
// accumulates dW, db. The weight may be shared with another module (tied embeddings).
#pragma once

#include <string>

#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

class Linear final : public Module {
 public:
  Linear(const std::string& name, std::int64_t in_features, std::int64_t out_features, bool bias,
         const ParameterOptions& options);
  // Over existing parameters: weight (out, in), bias (out) or null.
  Linear(ParameterPtr weight, ParameterPtr bias);

  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  // Without saving anything (generation).
  Tensor infer(const Tensor& x) const;

  std::int64_t in_features() const { return weight_->value.size(1); }
  std::int64_t out_features() const { return weight_->value.size(0); }
  const ParameterPtr& weight() const { return weight_; }
  const ParameterPtr& bias() const { return bias_; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  ParameterPtr weight_, bias_;
  Tensor x_;
};

}  // namespace longnet::nn
