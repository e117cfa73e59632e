// out = a + alpha * b on CUDA (elementwise.hpp), f32, f64 or bf16 (computed in f32).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/elementwise.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
struct AddOp {
  Compute<T> alpha;
  __device__ Compute<T> operator()(const Compute<T>* in, std::int64_t) const { return in[0] + alpha * in[1]; }
};

}  // namespace

void add_cuda(const AddParams& p) {
  dispatch_activation(p.dtype, "add", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 2>(p.count, {{static_cast<const T*>(p.a), static_cast<const T*>(p.b)}, static_cast<T*>(p.out)},
                     AddOp<T>{static_cast<Compute<T>>(p.alpha)});
  });
}

}  // namespace longnet::kernels
