// Gradient-norm helpers on CUDA (gradient_norm.hpp): sums of squares in double over a fixed
// grid — each (tensor, block) pair a fixed share of one tensor, then one block adds all the
// partials in (tensor, block) order — so the result does not vary from run to run, and a
// list of tensors costs one synchronisation; in-place scaling.
#include <algorithm>
#include <vector>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/gradient_norm.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr unsigned kBlocksPerTensor = 64;
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

__global__ void total_kernel(const double* partial, std::int64_t count, double* total) {
  begin_dependent_kernel();
  __shared__ double shared[32];
  // Each thread sums a contiguous run of partials, then the block sums the threads: a
  // fixed order for a given count.
  const std::int64_t per_thread = (count + blockDim.x - 1) / blockDim.x;
  const std::int64_t begin = threadIdx.x * per_thread, end = min(count, begin + per_thread);
  double sum = 0;
  for (std::int64_t i = begin; i < end; ++i) sum += partial[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) *total = sum;
}

template <class C>
struct ScaleOp {
  C factor;
  __device__ C operator()(const C* in, std::int64_t) const { return in[0] * factor; }
};

}  // namespace

double sum_of_squares_many_cuda(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype) {
  if (tensors == 0) return 0.0;
  const auto n = static_cast<std::int64_t>(tensors);
  const std::int64_t partials = n * kBlocksPerTensor;
  const Tensor buffer = Tensor::empty({partials + 1}, DType::f64, Device::cuda(current_device()));
  double* partial = buffer.data<double>();
  const cudaStream_t stream = current_cuda_stream();
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
                   stream, batch, partial + first * kBlocksPerTensor);
    }
  });
  launch_model(total_kernel, 1, 1024, 0, stream, partial, partials, partial + partials);
  check_launch();
  double total = 0;
  LONGNET_CHECK(cudaMemcpyAsync(&total, partial + partials, sizeof total, cudaMemcpyDeviceToHost, stream));
  LONGNET_CHECK(cudaStreamSynchronize(stream));
  return total;
}

double sum_of_squares_cuda(const void* x, std::int64_t count, DType dtype) {
  return sum_of_squares_many_cuda(&x, &count, 1, dtype);
}

void scale_cuda(void* x, std::int64_t count, DType dtype, double factor) {
  dispatch_activation(dtype, "scale", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 1>(count, {{static_cast<const T*>(x)}, static_cast<T*>(x)},
                     ScaleOp<Compute<T>>{static_cast<Compute<T>>(factor)});
  });
}

}  // namespace longnet::kernels
