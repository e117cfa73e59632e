// Gradient-norm helpers on CUDA (gradient_norm.hpp): sums of squares in double over a fixed
// grid — each (tensor, block) pair a fixed share of one tensor, then one block adds all the
// partials in (tensor, block) order (ordered_sum_kernel) — so the result does not vary from
// run to run; the total stays on the device until the caller reads it; in-place scaling.
#include <algorithm>
#include <vector>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/gradient_norm.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr unsigned kBlocksPerTensor = kSumOfSquaresPartialsPerTensor;
constexpr int kTensorsPerLaunch = 64;  // pointers and counts travel as kernel arguments

template <class T>
struct TensorBatch {
  const T* data[kTensorsPerLaunch];
  std::int64_t count[kTensorsPerLaunch];
};

// Block (b, t) sums the squares of the elements b, b + B, ... (B = kBlocksPerTensor blocks
// of threads) of tensor t into partial[t * kBlocksPerTensor + b].
template <class T>
__global__ void partial_sums_kernel(TensorBatch<T> batch, double* partial) {
  begin_dependent_kernel();
  __shared__ double shared[32];
  const T* x = batch.data[blockIdx.y];
  const std::int64_t count = batch.count[blockIdx.y];
  double sum = 0;
  LONGNET_GRID_STRIDE(i, count) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.y * kBlocksPerTensor + blockIdx.x] = sum;
}

template <class C>
struct ScaleOp {
  C factor;
  __device__ C operator()(const C* in, std::int64_t) const { return in[0] * factor; }
};

}  // namespace

void sum_of_squares_partials_cuda(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                  double* partials) {
  const cudaStream_t stream = current_cuda_stream();
  const auto n = static_cast<std::int64_t>(tensors);
  dispatch_float(dtype, "sum_of_squares", [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t first = 0; first < n; first += kTensorsPerLaunch) {
      const int in_launch = static_cast<int>(std::min<std::int64_t>(kTensorsPerLaunch, n - first));
      TensorBatch<T> batch{};
      for (int t = 0; t < in_launch; ++t) {
        batch.data[t] = static_cast<const T*>(x[first + t]);
        batch.count[t] = counts[first + t];
      }
      launch_model(partial_sums_kernel<T>, dim3(kBlocksPerTensor, static_cast<unsigned>(in_launch)), kThreads, 0,
                   stream, batch, partials + first * kBlocksPerTensor);
    }
  });
  check_launch();
}

void ordered_sum_cuda(const double* partials, std::int64_t count, double* total) {
  const cudaStream_t stream = current_cuda_stream();
  if (count == 0) {
    LONGNET_CHECK(cudaMemsetAsync(total, 0, sizeof(double), stream));  // +0.0
    return;
  }
  launch_model(ordered_sum_kernel<double>, 1, kOrderedSumThreads, 0, stream, partials, count, total);
  check_launch();
}

void sum_of_squares_many_into_cuda(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                   double* total) {
  const std::int64_t partials = static_cast<std::int64_t>(tensors) * kBlocksPerTensor;
  const Tensor buffer =
      Tensor::empty({std::max<std::int64_t>(partials, 1)}, DType::f64, Device::cuda(current_device()));
  sum_of_squares_partials_cuda(x, counts, tensors, dtype, buffer.data<double>());
  ordered_sum_cuda(buffer.data<double>(), partials, total);
}

void scale_cuda(void* x, std::int64_t count, DType dtype, double factor) {
  dispatch_activation(dtype, "scale", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 1>(count, {{static_cast<const T*>(x)}, static_cast<T*>(x)},
                     ScaleOp<Compute<T>>{static_cast<Compute<T>>(factor)});
  });
}

}  // namespace longnet::kernels
