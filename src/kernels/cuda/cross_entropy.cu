// Fused softmax cross-entropy on CUDA (cross_entropy.hpp): one warp per row for the
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

// A warp per row (kRowsPerBlock rows a block): a block per row spent its time in two
// block-wide reductions for 256 logits (32768 rows on an H100: forward 52 -> 14 us,
// backward 41 -> 14 us in the training step).
constexpr int kRowsPerBlock = kThreads / 32;

// This warp's row (past the last row in the last block's spare warps).
__device__ std::int64_t warp_row() { return blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + threadIdx.x / 32; }

template <class T>
__global__ void forward_kernel(CrossEntropyParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const std::int64_t r = warp_row();
  if (r >= p.rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  C max_value = -std::numeric_limits<C>::infinity();
  for (std::int64_t v = lane; v < p.vocab; v += 32) max_value = max(max_value, to_compute(row[v]));
  max_value = warp_max(max_value);
  C sum = 0;
  for (std::int64_t v = lane; v < p.vocab; v += 32) sum += exp(to_compute(row[v]) - max_value);
  sum = warp_sum(sum);
  if (lane == 0) {
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
  const std::int64_t r = warp_row();
  if (r >= p.rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const T* row = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
  T* drow = static_cast<T*>(p.dlogits) + r * p.dlogits_row_stride;
  const std::int32_t target = p.targets[r];
  const C lse = static_cast<const C*>(p.lse)[r];
  const C scale = static_cast<C>(p.grad_scale);
  for (std::int64_t v = lane; v < p.vocab; v += 32) {
    drow[v] = from_compute<T>(
        target == p.ignore_index ? C(0) : scale * (exp(to_compute(row[v]) - lse) - (v == target ? C(1) : C(0))));
  }
}

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void cross_entropy_forward_cuda(const CrossEntropyParams& p) {
  const cudaStream_t stream = current_cuda_stream();
  if (p.rows == 0) {
    if (p.loss_sum != nullptr) LONGNET_CHECK(cudaMemsetAsync(p.loss_sum, 0, sizeof(double), stream));  // +0.0
    return;
  }
  dispatch_activation(p.dtype, "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    launch_model(forward_kernel<T>, row_blocks(p.rows), kThreads, 0, stream, p);
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
    launch_model(backward_kernel<decltype(tag)>, row_blocks(p.rows), kThreads, 0, current_cuda_stream(), p);
  });
  check_launch();
}

}  // namespace longnet::kernels
