// out = a + alpha * b on CUDA (elementwise.hpp).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/elementwise.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void add_kernel(std::int64_t count, const T* a, const T* b, T alpha, T* out) {
  LONGNET_GRID_STRIDE(i, count) out[i] = a[i] + alpha * b[i];
}

}  // namespace

void add_cuda(const AddParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "add", [&](auto tag) {
    using T = decltype(tag);
    add_kernel<T><<<grid_for(p.count), kThreads, 0, current_cuda_stream()>>>(
        p.count, static_cast<const T*>(p.a), static_cast<const T*>(p.b), static_cast<T>(p.alpha),
        static_cast<T*>(p.out));
  });
  check_launch();
}

}  // namespace longnet::kernels
