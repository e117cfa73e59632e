// AdamW, the learning-rate schedule and gradient clipping (optimizer.hpp).
#include "longnet/model/optimizer.hpp"

#include <cmath>
#include <numbers>

#include "longnet/kernels/adamw.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::model {

void AdamWConfig::validate() const {
  require(beta1 >= 0 && beta1 < 1, "beta1 = ", beta1, ": must be in [0, 1)");
  require(beta2 >= 0 && beta2 < 1, "beta2 = ", beta2, ": must be in [0, 1)");
  require(eps > 0, "eps = ", eps, ": must be positive");
  require(weight_decay >= 0 && std::isfinite(weight_decay), "weight_decay = ", weight_decay, ": must be >= 0");
}

AdamW::AdamW(std::vector<nn::ParameterPtr> parameters, AdamWConfig config)
    : parameters_(std::move(parameters)), config_(config) {
  config_.validate();
  for (const nn::ParameterPtr& p : parameters_) {
    exp_avg_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device()));
  }
}

void AdamW::step(double lr, double grad_scale) { queue_step(lr, grad_scale, nullptr, 0); }

void AdamW::step(double lr, const GradientClip& clip) {
  const Tensor& sum = clip.sum_of_squares;
  require(sum.defined() && sum.dtype() == DType::f64 && sum.numel() == 1 && sum.is_contiguous(),
          "GradientClip: the sum of squares must be a contiguous f64 tensor of one element");
  if (!parameters_.empty()) {
    const Device device = parameters_.front()->value.device();
    require(sum.device() == device, "GradientClip: the sum of squares is on ", to_string(sum.device()),
            " but the parameters on ", to_string(device));
  }
  require(std::isfinite(clip.max_norm), "GradientClip: max_norm = ", clip.max_norm, ": must be finite");
  queue_step(lr, 1.0, &sum, clip.max_norm);
}

void AdamW::forget_skipped_step() {
  require(steps_ > 0, "AdamW::forget_skipped_step: no step was taken");
  --steps_;
}

void AdamW::queue_step(double lr, double grad_scale, const Tensor* clip_sum, double max_norm) {
  require(std::isfinite(lr) && lr >= 0, "learning rate = ", lr, ": must be finite and >= 0");
  require(std::isfinite(grad_scale), "grad_scale = ", grad_scale, ": must be finite");
  ++steps_;
  std::vector<kernels::AdamWParams> on_cuda;  // one batch: a launch per parameter outlasted the device's work
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const nn::Parameter& p = *parameters_[i];
    kernels::AdamWParams k;
    k.count = p.value.numel();
    k.dtype = p.value.dtype();
    k.param = p.value.data();
    k.grad = p.grad.data();
    k.m = exp_avg_[i].data();
    k.v = exp_avg_sq_[i].data();
    k.lr = lr;
    k.beta1 = config_.beta1;
    k.beta2 = config_.beta2;
    k.eps = config_.eps;
    k.weight_decay = p.weight_decay ? config_.weight_decay : 0.0;
    k.grad_scale = grad_scale;
    if (clip_sum != nullptr) {
      k.clip_sum_of_squares = clip_sum->data<double>();
      k.clip_max_norm = max_norm;
    }
    k.step = steps_;
    if (p.compute.defined()) {  // mixed precision: the update also rewrites the bf16 copy
      k.param_copy = p.compute.data();
      k.copy_dtype = p.compute.dtype();
    }
    if (p.value.device().is_cuda()) {
      on_cuda.push_back(k);
    } else {
      kernels::adamw_step_cpu(k);
    }
  }
  if (!on_cuda.empty()) kernels::adamw_step_many_cuda(on_cuda.data(), on_cuda.size());
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    out.emplace_back("exp_avg." + parameters_[i]->name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + parameters_[i]->name, exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::set_state(const NamedTensors& state, std::int64_t steps, const std::string& source) {
  require(steps >= 0, source, ": optimizer step = ", steps, ": must be >= 0");
  require(state.size() == 2 * parameters_.size(), source, ": optimizer state has ", state.size(), " tensors, expected ",
          2 * parameters_.size(), " (exp_avg and exp_avg_sq of each parameter)");
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, tensor] : state) by_name[name] = &tensor;
  auto find = [&](const std::string& name, const Tensor& like) -> const Tensor& {
    const auto it = by_name.find(name);
    require(it != by_name.end(), source, ": optimizer state lacks '", name, "'");
    require(it->second->shape() == like.shape(), source, ": optimizer state '", name, "' has shape ",
            shape_to_string(it->second->shape()), ", expected ", shape_to_string(like.shape()));
    require(is_floating(it->second->dtype()), source, ": optimizer state '", name, "' is not floating");
    return *it->second;
  };
  // Check everything before changing anything.
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    find("exp_avg." + parameters_[i]->name, exp_avg_[i]);
    find("exp_avg_sq." + parameters_[i]->name, exp_avg_sq_[i]);
  }
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    exp_avg_[i].copy_from(find("exp_avg." + parameters_[i]->name, exp_avg_[i]));
    exp_avg_sq_[i].copy_from(find("exp_avg_sq." + parameters_[i]->name, exp_avg_sq_[i]));
  }
  steps_ = steps;
}

void LearningRateSchedule::validate() const {
  require(max_lr > 0 && std::isfinite(max_lr), "lr = ", max_lr, ": must be positive and finite");
  require(min_lr >= 0 && min_lr <= max_lr, "min_lr = ", min_lr, ": must be in [0, lr = ", max_lr, "]");
  require(warmup_steps >= 0, "warmup_steps = ", warmup_steps, ": must be >= 0");
  require(total_steps >= 1, "steps = ", total_steps, ": must be >= 1");
}

double LearningRateSchedule::at(std::int64_t step) const {
  if (step < warmup_steps) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const std::int64_t decay_steps = std::max<std::int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

Tensor gradient_sum_of_squares(const std::vector<nn::ParameterPtr>& parameters) {
  if (parameters.empty()) return Tensor::zeros({1}, DType::f64);
  std::vector<Tensor> gradients;
  for (const nn::ParameterPtr& p : parameters) gradients.push_back(p->grad);
  return nn::queue_sum_of_squares(gradients);
}

double global_gradient_norm(const std::vector<nn::ParameterPtr>& parameters) {
  return std::sqrt(gradient_sum_of_squares(parameters).item());  // one device synchronisation
}

double clip_factor(double norm, double max_norm) { return kernels::clip_factor(norm, max_norm); }

}  // namespace longnet::model
