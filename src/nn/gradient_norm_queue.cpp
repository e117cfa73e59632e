// The gradients' sum of squares queued layer by layer during the backward
// (gradient_norm_queue.hpp).
#include "longnet/nn/gradient_norm_queue.hpp"

#include <utility>

#include "longnet/core/error.hpp"
#include "longnet/core/gradient_stream.hpp"
#include "longnet/core/runtime_switch.hpp"
#include "longnet/kernels/gradient_norm.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::nn {
namespace {

RuntimeSwitch& norm_in_backward_switch() {
  static RuntimeSwitch on{"LONGNET_NORM_IN_BACKWARD", RuntimeSwitch::Unset::off};
  return on;
}

thread_local GradientNormQueue* open_queue = nullptr;

}  // namespace

bool gradient_norm_in_backward() { return norm_in_backward_switch().enabled(); }
void set_gradient_norm_in_backward(bool enabled) { norm_in_backward_switch().set(enabled); }

GradientNormQueue::GradientNormQueue(std::vector<ParameterPtr> parameters)
    : parameters_(std::move(parameters)), state_(parameters_.size(), State::waiting) {
  require(!parameters_.empty(), "GradientNormQueue: no parameters (the result's device would be unknown)");
  require(open_queue == nullptr, "GradientNormQueue: another queue is open on this thread");
  const Tensor& first = parameters_.front()->grad;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const Tensor& g = parameters_[i]->grad;
    require(g.defined() && g.is_contiguous() && g.dtype() == first.dtype() && g.device() == first.device(),
            "GradientNormQueue: parameter ", parameters_[i]->name, "'s gradient must be a contiguous ",
            dtype_name(first.dtype()), " tensor on ", to_string(first.device()));
    index_.emplace(parameters_[i].get(), i);
  }
  if (first.device().is_cuda()) {
    const auto count = static_cast<std::int64_t>(parameters_.size()) * kernels::kSumOfSquaresPartialsPerTensor;
    partials_ = Tensor::empty({count}, DType::f64, first.device());
  }
  open_queue = this;
  open_ = true;
}

GradientNormQueue::~GradientNormQueue() {
  if (open_) open_queue = nullptr;
}

GradientNormQueue* GradientNormQueue::active() { return open_queue; }

void GradientNormQueue::layer_done(const Module& module) {
  if (!open_ || !partials_.defined()) return;  // the CPU: finish() takes every gradient
  // A gradient whose zero fill is still deferred (a layer whose backward skipped a weight)
  // is left to finish(), after the fill.
  const DeferredGradientZero* deferred = DeferredGradientZero::active();
  std::vector<std::size_t> ready;
  for (const ParameterPtr& p : module.parameters()) {
    const auto found = index_.find(p.get());
    if (found == index_.end()) continue;
    State& state = state_[found->second];
    if (state == State::queued) state = State::shared;  // its first partials were early
    if (state != State::waiting) continue;
    if (deferred != nullptr && deferred->deferred(p->grad)) continue;
    state = State::queued;
    ready.push_back(found->second);
  }
  if (ready.empty()) return;
  // Where the layer's parameter gradients are written, behind them; the partials buffer
  // stays alive until the current stream has waited for this work.
  if (GradientStream* side = GradientStream::active(partials_.device())) {
    side->run([&] { queue_partials(ready); }, {partials_});
  } else {
    queue_partials(ready);
  }
}

void GradientNormQueue::queue_partials(const std::vector<std::size_t>& indices) {
  // Consecutive indices in one call (a layer's parameters are consecutive in a model's list).
  std::size_t begin = 0;
  while (begin < indices.size()) {
    std::size_t end = begin + 1;
    while (end < indices.size() && indices[end] == indices[end - 1] + 1) ++end;
    std::vector<const void*> data;
    std::vector<std::int64_t> counts;
    for (std::size_t k = begin; k < end; ++k) {
      const Tensor& g = parameters_[indices[k]]->grad;
      data.push_back(g.data());
      counts.push_back(g.numel());
    }
    kernels::sum_of_squares_partials_cuda(
        data.data(), counts.data(), data.size(), parameters_.front()->grad.dtype(),
        partials_.data<double>() + static_cast<std::int64_t>(indices[begin]) * kernels::kSumOfSquaresPartialsPerTensor);
    begin = end;
  }
}

Tensor GradientNormQueue::finish() {
  require(open_, "GradientNormQueue::finish: called twice");
  open_ = false;
  open_queue = nullptr;
  if (!partials_.defined()) {
    std::vector<Tensor> gradients;
    for (const ParameterPtr& p : parameters_) gradients.push_back(p->grad);
    return queue_sum_of_squares(gradients);
  }
  // The rest on the current stream (after the backward's scope joined its side stream).
  std::vector<std::size_t> rest;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    if (state_[i] != State::queued) rest.push_back(i);
  }
  queue_partials(rest);
  Tensor total = Tensor::empty({1}, DType::f64, partials_.device());
  kernels::ordered_sum_cuda(partials_.data<double>(), partials_.numel(), total.data<double>());
  return total;
}

}  // namespace longnet::nn
