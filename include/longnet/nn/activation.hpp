// nn::GELU (exact erf form, as torchscale's F.gelu) and nn::Dropout (inverted, with a
// counter-based mask regenerated in backward; identity when not training or p = 0).
#pragma once

#include <cstdint>

#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

class GELU {
 public:
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  static Tensor infer(const Tensor& x);

 private:
  Tensor x_;
};

class Dropout {
 public:
  // `stream` tells this dropout's mask apart from every other dropout of the model.
  Dropout(double probability, std::uint64_t stream);

  Tensor forward(const Tensor& x, const ForwardContext& context);
  Tensor backward(const Tensor& dy);
  double probability() const { return probability_; }
  // Whether forward(x, context) would change x (training with p > 0).
  bool drops(const ForwardContext& context) const { return context.training && probability_ > 0; }
  // Whether the last forward dropped: false makes backward the identity.
  bool dropped_last_forward() const { return active_; }

 private:
  double probability_;
  std::uint64_t stream_;
  bool active_ = false;
  std::uint64_t key_ = 0;
};

}  // namespace longnet::nn
