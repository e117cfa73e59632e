// AdamW on the CPU (adamw.hpp), elementwise in the master-weight precision.
#include <cmath>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/adamw.hpp"

namespace longnet::kernels {

void adamw_step_cpu(const AdamWParams& p) {
  require(p.param_copy == nullptr, "adamw_step on the CPU: param_copy is set, but the CPU computes in the ",
          "parameters' dtype (mixed precision is a CUDA feature)");
  double grad_scale_value = p.grad_scale;
  if (p.clip_sum_of_squares != nullptr) {
    const double sum = *p.clip_sum_of_squares;
    if (!std::isfinite(sum)) return;  // a diverged step is not taken
    grad_scale_value = clipped_grad_scale(p.grad_scale, sum, p.clip_max_norm);
  }
  cpu::dispatch_float(p.dtype, "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    T* param = static_cast<T*>(p.param);
    const T* grad = static_cast<const T*>(p.grad);
    T* m = static_cast<T*>(p.m);
    T* v = static_cast<T*>(p.v);
    const double t = static_cast<double>(p.step);
    const T correction1 = static_cast<T>(1.0 - std::pow(p.beta1, t));
    const T correction2 = static_cast<T>(1.0 - std::pow(p.beta2, t));
    const T lr = static_cast<T>(p.lr), decay = static_cast<T>(p.lr * p.weight_decay);
    const T beta1 = static_cast<T>(p.beta1), beta2 = static_cast<T>(p.beta2), eps = static_cast<T>(p.eps);
    const T grad_scale = static_cast<T>(grad_scale_value);
    parallel_for(p.count, cpu::grain_for(16), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        const T g = grad[i] * grad_scale;
        param[i] -= decay * param[i];
        m[i] = beta1 * m[i] + (T(1) - beta1) * g;
        v[i] = beta2 * v[i] + (T(1) - beta2) * g * g;
        param[i] -= lr * (m[i] / correction1) / (std::sqrt(v[i] / correction2) + eps);
      }
    });
  });
}

}  // namespace longnet::kernels
