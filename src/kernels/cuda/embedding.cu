// Token embedding on CUDA (embedding.hpp). Backward: one thread per column visits the
// tokens in order (deterministic scatter-add, no atomics).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/embedding.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(EmbeddingParams p) {
  const T* table = static_cast<const T*>(p.table);
  T* out = static_cast<T*>(p.out);
  LONGNET_GRID_STRIDE(i, p.count * p.dim) {
    const std::int64_t token = i / p.dim, c = i % p.dim;
    out[i] = table[static_cast<std::int64_t>(p.tokens[token]) * p.dim + c] * static_cast<T>(p.scale);
  }
}

template <class T>
__global__ void backward_kernel(EmbeddingParams p) {
  const T* dout = static_cast<const T*>(p.dout);
  T* dtable = static_cast<T*>(p.dtable);
  LONGNET_GRID_STRIDE(c, p.dim) {
    for (std::int64_t i = 0; i < p.count; ++i) {
      dtable[static_cast<std::int64_t>(p.tokens[i]) * p.dim + c] += dout[i * p.dim + c] * static_cast<T>(p.scale);
    }
  }
}

}  // namespace

void embedding_forward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "embedding_forward", [&](auto tag) {
    forward_kernel<decltype(tag)><<<grid_for(p.count * p.dim), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

void embedding_backward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  dispatch_float(p.dtype, "embedding_backward", [&](auto tag) {
    backward_kernel<decltype(tag)><<<grid_for(p.dim, 64), 64, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

}  // namespace longnet::kernels
