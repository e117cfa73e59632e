// Training arithmetic: the AdamW optimizer (decoupled weight decay, PyTorch's update;
// kernels/adamw.hpp) over a model's parameters, the warmup + cosine learning-rate
// schedule, and global gradient-norm clipping.
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/io/safetensors.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::model {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to parameters with weight_decay (not biases, norms)
  void validate() const;
};

// Clipping by the global gradient norm, as queued on the parameters' device: the update
// scales every gradient by clip_factor(sqrt(sum_of_squares), max_norm), computed where it
// runs, so the host need not wait for the norm before queuing the update.
struct GradientClip {
  Tensor sum_of_squares;  // f64, one element, on the parameters' device (gradient_sum_of_squares)
  double max_norm = 0;    // <= 0: no clipping
};

class AdamW {
 public:
  AdamW(std::vector<nn::ParameterPtr> parameters, AdamWConfig config);

  // One update of every parameter with learning rate `lr`, gradients times grad_scale.
  void step(double lr, double grad_scale = 1.0);
  // One update with the gradients clipped by `clip`. Where clip's sum is not finite (the
  // gradients diverged) the update changes no parameter and no state; it is counted all
  // the same, since the host has not read the sum: a caller that finds it not finite
  // afterwards calls forget_skipped_step().
  void step(double lr, const GradientClip& clip);
  // Takes back the count of the last step, which changed nothing (see above).
  void forget_skipped_step();
  std::int64_t steps() const { return steps_; }
  const AdamWConfig& config() const { return config_; }
  const std::vector<nn::ParameterPtr>& parameters() const { return parameters_; }

  // The state as named tensors ("exp_avg.<name>", "exp_avg_sq.<name>", PyTorch's names)
  // and back; set_state checks every name, shape and dtype.
  NamedTensors state() const;
  void set_state(const NamedTensors& state, std::int64_t steps, const std::string& source);

 private:
  // The update, with the clip's sum (null: none) read where it runs.
  void queue_step(double lr, double grad_scale, const Tensor* clip_sum, double max_norm);

  std::vector<nn::ParameterPtr> parameters_;
  AdamWConfig config_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::int64_t steps_ = 0;
};

// Linear warmup from max_lr / warmup_steps to max_lr over warmup_steps, then a cosine decay
// to min_lr at total_steps (and min_lr after).
struct LearningRateSchedule {
  double max_lr = 1e-3;
  double min_lr = 1e-4;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  void validate() const;
  double at(std::int64_t step) const;  // step = 0, 1, ...
};

// The sum of squares of every parameter's gradient, queued (GradientClip reads it where
// the update runs): an f64 tensor of one element on the parameters' device (a CPU zero
// without parameters).
Tensor gradient_sum_of_squares(const std::vector<nn::ParameterPtr>& parameters);
// sqrt of that sum, read at once (on CUDA a wait for the device).
double global_gradient_norm(const std::vector<nn::ParameterPtr>& parameters);
// The factor that brings the norm down to max_norm (1 when it is below, or max_norm <= 0);
// kernels::clip_factor, which the clipped update computes on the device.
double clip_factor(double norm, double max_norm);

}  // namespace longnet::model
