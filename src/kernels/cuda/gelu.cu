// Exact (erf) GELU on CUDA (gelu.hpp), f32, f64 or bf16 (computed in f32).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/gelu.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class C>
struct GeluForward {
  __device__ C operator()(const C* in, std::int64_t) const { return gelu_value(in[0]); }
};

// in[0] = x, in[1] = dout.
template <class C>
struct GeluBackward {
  __device__ C operator()(const C* in, std::int64_t) const { return in[1] * gelu_derivative(in[0]); }
};

}  // namespace

void gelu_forward_cuda(const GeluParams& p) {
  dispatch_activation(p.dtype, "gelu_forward", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 1>(p.count, {{static_cast<const T*>(p.x)}, static_cast<T*>(p.out)}, GeluForward<Compute<T>>{});
  });
}

void gelu_backward_cuda(const GeluParams& p) {
  dispatch_activation(p.dtype, "gelu_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 2>(p.count, {{static_cast<const T*>(p.x), static_cast<const T*>(p.dout)}, static_cast<T*>(p.dx)},
                     GeluBackward<Compute<T>>{});
  });
}

}  // namespace longnet::kernels
