// Counter-based inverted dropout on CUDA (dropout.hpp): the same mask as the CPU's, from
// counter_uniform(key, i); f32, f64 or bf16 (scaled in f32).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/dropout.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class C>
struct DropoutOp {
  float threshold;
  C keep_scale;
  std::uint64_t key;
  __device__ C operator()(const C* in, std::int64_t i) const {
    return counter_uniform(key, static_cast<std::uint64_t>(i)) >= threshold ? in[0] * keep_scale : C(0);
  }
};

void apply(DType dtype, const char* kernel, std::int64_t count, double probability, std::uint64_t key, const void* in,
           void* out) {
  dispatch_activation(dtype, kernel, [&](auto tag) {
    using T = decltype(tag);
    using C = Compute<T>;
    launch_map<T, 1>(count, {{static_cast<const T*>(in)}, static_cast<T*>(out)},
                     DropoutOp<C>{static_cast<float>(probability), static_cast<C>(1.0 / (1.0 - probability)), key});
  });
}

}  // namespace

void dropout_forward_cuda(const DropoutParams& p) {
  apply(p.dtype, "dropout_forward", p.count, p.probability, p.key, p.x, p.out);
}

void dropout_backward_cuda(const DropoutParams& p) {
  apply(p.dtype, "dropout_backward", p.count, p.probability, p.key, p.dout, p.dx);
}

}  // namespace longnet::kernels
