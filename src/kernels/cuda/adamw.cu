// AdamW on CUDA (adamw.hpp), elementwise; the bias corrections are computed on the host.
#include <cmath>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/adamw.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void step_kernel(std::int64_t count, T* param, const T* grad, T* m, T* v, T lr, T decay, T beta1, T beta2,
                            T eps, T grad_scale, T correction1, T correction2) {
  LONGNET_GRID_STRIDE(i, count) {
    const T g = grad[i] * grad_scale;
    param[i] -= decay * param[i];
    m[i] = beta1 * m[i] + (T(1) - beta1) * g;
    v[i] = beta2 * v[i] + (T(1) - beta2) * g * g;
    param[i] -= lr * (m[i] / correction1) / (sqrt(v[i] / correction2) + eps);
  }
}

}  // namespace

void adamw_step_cuda(const AdamWParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    const double t = static_cast<double>(p.step);
    step_kernel<T><<<grid_for(p.count), kThreads, 0, current_cuda_stream()>>>(
        p.count, static_cast<T*>(p.param), static_cast<const T*>(p.grad), static_cast<T*>(p.m), static_cast<T*>(p.v),
        static_cast<T>(p.lr), static_cast<T>(p.lr * p.weight_decay), static_cast<T>(p.beta1), static_cast<T>(p.beta2),
        static_cast<T>(p.eps), static_cast<T>(p.grad_scale), static_cast<T>(1.0 - std::pow(p.beta1, t)),
        static_cast<T>(1.0 - std::pow(p.beta2, t)));
  });
  check_launch();
}

}  // namespace longnet::kernels
