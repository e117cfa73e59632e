// Exact (erf) GELU on CUDA (gelu.hpp).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/gelu.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(GeluParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  LONGNET_GRID_STRIDE(i, p.count) { out[i] = T(0.5) * x[i] * (T(1) + erf(x[i] * T(0.70710678118654752440))); }
}

template <class T>
__global__ void backward_kernel(GeluParams p) {
  const T* x = static_cast<const T*>(p.x);
  const T* dout = static_cast<const T*>(p.dout);
  T* dx = static_cast<T*>(p.dx);
  LONGNET_GRID_STRIDE(i, p.count) {
    const T cdf = T(0.5) * (T(1) + erf(x[i] * T(0.70710678118654752440)));
    const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * x[i] * x[i]);
    dx[i] = dout[i] * (cdf + x[i] * pdf);
  }
}

}  // namespace

void gelu_forward_cuda(const GeluParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "gelu_forward", [&](auto tag) {
    forward_kernel<decltype(tag)><<<grid_for(p.count), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

void gelu_backward_cuda(const GeluParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "gelu_backward", [&](auto tag) {
    backward_kernel<decltype(tag)><<<grid_for(p.count), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

}  // namespace longnet::kernels
