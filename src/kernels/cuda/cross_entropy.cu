// Fused softmax cross-entropy on CUDA (cross_entropy.hpp): one block per row for the
// maximum, the log-sum-exp and the loss; backward recomputes the probabilities from lse.
#include <limits>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/cross_entropy.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(CrossEntropyParams p) {
  __shared__ T shared[32];
  const std::int64_t r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  T max_value = -std::numeric_limits<T>::infinity();
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) max_value = max(max_value, row[v]);
  max_value = block_max(max_value, shared);
  T sum = 0;
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) sum += exp(row[v] - max_value);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const T lse = max_value + log(sum);
    static_cast<T*>(p.lse)[r] = lse;
    const std::int32_t target = p.targets[r];
    static_cast<T*>(p.loss)[r] = target == p.ignore_index ? T(0) : lse - row[target];
  }
}

template <class T>
__global__ void backward_kernel(CrossEntropyParams p) {
  const std::int64_t r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  T* drow = static_cast<T*>(p.dlogits) + r * p.dlogits_row_stride;
  const std::int32_t target = p.targets[r];
  const T lse = static_cast<const T*>(p.lse)[r];
  const T scale = static_cast<T>(p.grad_scale);
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) {
    drow[v] = target == p.ignore_index ? T(0) : scale * (exp(row[v] - lse) - (v == target ? T(1) : T(0)));
  }
}

}  // namespace

void cross_entropy_forward_cuda(const CrossEntropyParams& p) {
  if (p.rows == 0) return;
  dispatch_float(p.dtype, "cross_entropy_forward", [&](auto tag) {
    forward_kernel<decltype(tag)><<<static_cast<unsigned>(p.rows), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

void cross_entropy_backward_cuda(const CrossEntropyParams& p) {
  if (p.rows == 0) return;
  dispatch_float(p.dtype, "cross_entropy_backward", [&](auto tag) {
    backward_kernel<decltype(tag)><<<static_cast<unsigned>(p.rows), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

}  // namespace longnet::kernels
