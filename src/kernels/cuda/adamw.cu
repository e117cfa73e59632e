// AdamW on CUDA (adamw.hpp), elementwise in the master-weight precision; the bias
// corrections are computed on the host. With a param_copy (mixed precision) the same pass
// writes the updated parameter rounded to bf16, the copy the next step's GEMMs read.
#include <cmath>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/adamw.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
struct Hyper {
  T lr, decay, beta1, beta2, eps, grad_scale, correction1, correction2;
};

template <class T>
__device__ __forceinline__ T update(std::int64_t i, T* param, const T* grad, T* m, T* v, const Hyper<T>& h) {
  const T g = grad[i] * h.grad_scale;
  T p = param[i];
  p -= h.decay * p;
  const T m_new = h.beta1 * m[i] + (T(1) - h.beta1) * g;
  const T v_new = h.beta2 * v[i] + (T(1) - h.beta2) * g * g;
  m[i] = m_new;
  v[i] = v_new;
  p -= h.lr * (m_new / h.correction1) / (sqrt(v_new / h.correction2) + h.eps);
  param[i] = p;
  return p;
}

// Copy: void (no copy) or __nv_bfloat16.
template <class T, class Copy>
__global__ void step_kernel(std::int64_t count, T* param, const T* grad, T* m, T* v, Hyper<T> h, Copy* copy) {
  LONGNET_GRID_STRIDE(i, count) {
    const T p = update(i, param, grad, m, v, h);
    if constexpr (!std::is_void_v<Copy>) copy[i] = from_compute<Copy>(static_cast<float>(p));
  }
}

}  // namespace

void adamw_step_cuda(const AdamWParams& p) {
  if (p.count == 0) return;
  require(p.param_copy == nullptr || (p.dtype == DType::f32 && p.copy_dtype == DType::bf16),
          "adamw_step on CUDA: a param_copy needs f32 parameters and copy_dtype bf16 (got ", dtype_name(p.dtype),
          " and ", dtype_name(p.copy_dtype), ")");
  dispatch_float(p.dtype, "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    const double t = static_cast<double>(p.step);
    const Hyper<T> h{static_cast<T>(p.lr),
                     static_cast<T>(p.lr * p.weight_decay),
                     static_cast<T>(p.beta1),
                     static_cast<T>(p.beta2),
                     static_cast<T>(p.eps),
                     static_cast<T>(p.grad_scale),
                     static_cast<T>(1.0 - std::pow(p.beta1, t)),
                     static_cast<T>(1.0 - std::pow(p.beta2, t))};
    T* param = static_cast<T*>(p.param);
    const T* grad = static_cast<const T*>(p.grad);
    T* m = static_cast<T*>(p.m);
    T* v = static_cast<T*>(p.v);
    const unsigned grid = grid_for(p.count);
    const cudaStream_t stream = current_cuda_stream();
    if (p.param_copy) {
      step_kernel<T, __nv_bfloat16>
          <<<grid, kThreads, 0, stream>>>(p.count, param, grad, m, v, h, static_cast<__nv_bfloat16*>(p.param_copy));
    } else {
      step_kernel<T, void><<<grid, kThreads, 0, stream>>>(p.count, param, grad, m, v, h, nullptr);
    }
  });
  check_launch();
}

}  // namespace longnet::kernels
