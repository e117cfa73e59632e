// Counter-based inverted dropout on CUDA (dropout.hpp): the same mask as the CPU's, from
// counter_uniform(key, i).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/dropout.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void apply_kernel(std::int64_t count, float threshold, T keep_scale, std::uint64_t key, const T* in,
                             T* out) {
  LONGNET_GRID_STRIDE(i, count) {
    out[i] = counter_uniform(key, static_cast<std::uint64_t>(i)) >= threshold ? in[i] * keep_scale : T(0);
  }
}

template <class T>
void apply(std::int64_t count, double probability, std::uint64_t key, const void* in, void* out) {
  if (count == 0) return;
  apply_kernel<T><<<grid_for(count), kThreads, 0, current_cuda_stream()>>>(
      count, static_cast<float>(probability), static_cast<T>(1.0 / (1.0 - probability)), key, static_cast<const T*>(in),
      static_cast<T*>(out));
  check_launch();
}

}  // namespace

void dropout_forward_cuda(const DropoutParams& p) {
  dispatch_float(p.dtype, "dropout_forward",
                 [&](auto tag) { apply<decltype(tag)>(p.count, p.probability, p.key, p.x, p.out); });
}

void dropout_backward_cuda(const DropoutParams& p) {
  dispatch_float(p.dtype, "dropout_backward",
                 [&](auto tag) { apply<decltype(tag)>(p.count, p.probability, p.key, p.dout, p.dx); });
}

}  // namespace longnet::kernels
