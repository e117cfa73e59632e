// Fused softmax cross-entropy on CUDA (cross_entropy.hpp): one block per row for the
// maximum, the log-sum-exp and the loss, then one block for the loss sum (in a fixed
// order, on the device: the host reads it when it needs it); backward recomputes the
// probabilities from lse.
// bf16 logits are read into f32, where the softmax, the loss and lse are computed.
#include <limits>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/cross_entropy.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(CrossEntropyParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  __shared__ C shared[32];
  const std::int64_t r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  C max_value = -std::numeric_limits<C>::infinity();
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) max_value = max(max_value, to_compute(row[v]));
  max_value = block_max(max_value, shared);
  C sum = 0;
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) sum += exp(to_compute(row[v]) - max_value);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const C lse = max_value + log(sum);
    static_cast<C*>(p.lse)[r] = lse;
    const std::int32_t target = p.targets[r];
    static_cast<C*>(p.loss)[r] = target == p.ignore_index ? C(0) : lse - to_compute(row[target]);
  }
}

template <class T>
__global__ void backward_kernel(CrossEntropyParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const std::int64_t r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  T* drow = static_cast<T*>(p.dlogits) + r * p.dlogits_row_stride;
  const std::int32_t target = p.targets[r];
  const C lse = static_cast<const C*>(p.lse)[r];
  const C scale = static_cast<C>(p.grad_scale);
  for (std::int64_t v = threadIdx.x; v < p.vocab; v += blockDim.x) {
    drow[v] = from_compute<T>(
        target == p.ignore_index ? C(0) : scale * (exp(to_compute(row[v]) - lse) - (v == target ? C(1) : C(0))));
  }
}

}  // namespace

void cross_entropy_forward_cuda(const CrossEntropyParams& p) {
  const cudaStream_t stream = current_cuda_stream();
  if (p.rows == 0) {
    if (p.loss_sum != nullptr) LONGNET_CHECK(cudaMemsetAsync(p.loss_sum, 0, sizeof(double), stream));  // +0.0
    return;
  }
  dispatch_activation(p.dtype, "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    launch_model(forward_kernel<T>, static_cast<unsigned>(p.rows), kThreads, 0, stream, p);
    if (p.loss_sum != nullptr) {
      launch_model(ordered_sum_kernel<Compute<T>>, 1, kOrderedSumThreads, 0, stream,
                   static_cast<const Compute<T>*>(p.loss), p.rows, p.loss_sum);
    }
  });
  check_launch();
}

void cross_entropy_backward_cuda(const CrossEntropyParams& p) {
  if (p.rows == 0) return;
  dispatch_activation(p.dtype, "cross_entropy_backward", [&](auto tag) {
    launch_model(backward_kernel<decltype(tag)>, static_cast<unsigned>(p.rows), kThreads, 0, current_cuda_stream(), p);
  });
  check_launch();
}

}  // namespace longnet::kernels
