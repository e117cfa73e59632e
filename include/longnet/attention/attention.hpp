// The interface every attention operator implements: forward saves what backward needs
// (like an autograd node), backward returns exact gradients of the last forward.
#pragma once

#include <string>

#include "longnet/core/tensor.hpp"

namespace longnet {

struct AttentionOutput {
  Tensor out;  // (B, N, H, D), the dtype and device of q
  Tensor lse;  // (B, H, N) float32 (float64 for f64 inputs): log-sum-exp of each row's scores (-inf: no keys)
};

struct AttentionGradients {
  Tensor dq, dk, dv;  // shapes, dtype and device of q, k, v
};

class Attention {
 public:
  virtual ~Attention() = default;
  // The implementation's name, e.g. "dilated/cpu".
  virtual std::string name() const = 0;
  // q (B, N, H, D); k, v (B, N, Hk, D). Keeps q, k, v, out and lse for backward.
  virtual AttentionOutput forward(const Tensor& q, const Tensor& k, const Tensor& v) = 0;
  // dout: the gradient of the loss with respect to the last forward's out.
  virtual AttentionGradients backward(const Tensor& dout) = 0;
};

}  // namespace longnet
