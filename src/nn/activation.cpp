// nn::GELU and nn::Dropout (activation.hpp).
#include "longnet/nn/activation.hpp"

#include <cmath>

#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/dropout.hpp"
#include "longnet/kernels/gelu.hpp"

namespace longnet::nn {

Tensor GELU::infer(const Tensor& x_in) {
  require(x_in.defined() && is_floating(x_in.dtype()), "GELU: the input must be a floating tensor");
  const Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::GeluParams p;
  p.count = x.numel();
  p.dtype = x.dtype();
  p.x = x.data();
  p.out = out.data();
  if (x.device().is_cuda()) {
    kernels::gelu_forward_cuda(p);
  } else {
    kernels::gelu_forward_cpu(p);
  }
  return out;
}

Tensor GELU::forward(const Tensor& x) {
  Tensor out = infer(x);
  x_ = x.contiguous();
  return out;
}

Tensor GELU::backward(const Tensor& dy_in) {
  require(x_.defined(), "GELU: backward called before forward");
  require(dy_in.shape() == x_.shape() && dy_in.dtype() == x_.dtype() && dy_in.device() == x_.device(),
          "GELU: dy must match the forward input (shape ", shape_to_string(x_.shape()), ")");
  const Tensor dy = dy_in.contiguous();
  Tensor dx = Tensor::empty(x_.shape(), x_.dtype(), x_.device());
  kernels::GeluParams p;
  p.count = x_.numel();
  p.dtype = x_.dtype();
  p.x = x_.data();
  p.dout = dy.data();
  p.dx = dx.data();
  if (x_.device().is_cuda()) {
    kernels::gelu_backward_cuda(p);
  } else {
    kernels::gelu_backward_cpu(p);
  }
  return dx;
}

Dropout::Dropout(double probability, std::uint64_t stream) : probability_(probability), stream_(stream) {
  require(probability >= 0 && probability < 1, "dropout = ", probability, ": must be in [0, 1)");
}

Tensor Dropout::forward(const Tensor& x_in, const ForwardContext& context) {
  active_ = drops(context);
  if (!active_) return x_in;
  key_ = kernels::counter_key(context.seed ^ kernels::mix64(static_cast<std::uint64_t>(context.micro_step)),
                              static_cast<std::uint64_t>(context.step), stream_);
  const Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::DropoutParams p;
  p.count = x.numel();
  p.probability = probability_;
  p.key = key_;
  p.dtype = x.dtype();
  p.x = x.data();
  p.out = out.data();
  if (x.device().is_cuda()) {
    kernels::dropout_forward_cuda(p);
  } else {
    kernels::dropout_forward_cpu(p);
  }
  return out;
}

Tensor Dropout::backward(const Tensor& dy_in) {
  if (!active_) return dy_in;
  const Tensor dy = dy_in.contiguous();
  Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
  kernels::DropoutParams p;
  p.count = dy.numel();
  p.probability = probability_;
  p.key = key_;
  p.dtype = dy.dtype();
  p.dout = dy.data();
  p.dx = dx.data();
  if (dy.device().is_cuda()) {
    kernels::dropout_backward_cuda(p);
  } else {
    kernels::dropout_backward_cpu(p);
  }
  return dx;
}

}  // namespace longnet::nn
