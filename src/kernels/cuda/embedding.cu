// Token embedding on CUDA (embedding.hpp): the table in the accumulation precision (the
// f32 master table under bf16 activations), rows written in the activations' dtype.
// Backward: one thread per (distinct token, column) sums that token's rows in sorted order
// (deterministic scatter-add, no atomics).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/embedding.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(EmbeddingParams p) {
  using C = Compute<T>;
  const C* table = static_cast<const C*>(p.table);
  T* out = static_cast<T*>(p.out);
  LONGNET_GRID_STRIDE(i, p.count * p.dim) {
    const std::int64_t token = i / p.dim, c = i % p.dim;
    out[i] = from_compute<T>(table[static_cast<std::int64_t>(p.tokens[token]) * p.dim + c] * static_cast<C>(p.scale));
  }
}

// Thread (run u, column c): the rows of one distinct token, in order.
template <class T>
__global__ void backward_kernel(EmbeddingParams p) {
  using C = Compute<T>;
  const T* dout = static_cast<const T*>(p.dout);
  C* dtable = static_cast<C*>(p.dtable);
  LONGNET_GRID_STRIDE(i, p.runs * p.dim) {
    const std::int64_t run = i / p.dim, c = i % p.dim;
    C sum = 0;
    for (std::int64_t k = p.run_starts[run]; k < p.run_starts[run + 1]; ++k) {
      sum += to_compute(dout[p.order[k] * p.dim + c]);
    }
    dtable[static_cast<std::int64_t>(p.tokens[p.order[p.run_starts[run]]]) * p.dim + c] +=
        sum * static_cast<C>(p.scale);
  }
}

}  // namespace

void embedding_forward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  dispatch_activation(p.dtype, "embedding_forward", [&](auto tag) {
    forward_kernel<decltype(tag)><<<grid_for(p.count * p.dim), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

void embedding_backward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  require(p.order != nullptr && p.run_starts != nullptr, "embedding_backward on CUDA needs order and run_starts");
  dispatch_activation(p.dtype, "embedding_backward", [&](auto tag) {
    backward_kernel<decltype(tag)><<<grid_for(p.runs * p.dim), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

}  // namespace longnet::kernels
