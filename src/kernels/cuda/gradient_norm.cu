// Gradient-norm helpers on CUDA (gradient_norm.hpp): the sum of squares in double over a
// fixed grid (each block a fixed share, then one block adds the partials in order), so the
// result does not vary from run to run; in-place scaling.
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/gradient_norm.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr unsigned kPartials = 256;

template <class T>
__global__ void partial_sums_kernel(const T* x, std::int64_t count, double* partial) {
  __shared__ double shared[32];
  double sum = 0;
  LONGNET_GRID_STRIDE(i, count) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void total_kernel(const double* partial, unsigned count, double* total) {
  __shared__ double shared[32];
  double sum = 0;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) *total = sum;
}

template <class T>
__global__ void scale_kernel(T* x, std::int64_t count, T factor) {
  LONGNET_GRID_STRIDE(i, count) x[i] *= factor;
}

}  // namespace

double sum_of_squares_cuda(const void* x, std::int64_t count, DType dtype) {
  if (count == 0) return 0.0;
  const Tensor partial = Tensor::empty({kPartials + 1}, DType::f64, Device::cuda(current_device()));
  double* partial_data = partial.data<double>();
  const cudaStream_t stream = current_cuda_stream();
  dispatch_float(dtype, "sum_of_squares", [&](auto tag) {
    using T = decltype(tag);
    partial_sums_kernel<T><<<kPartials, kThreads, 0, stream>>>(static_cast<const T*>(x), count, partial_data);
  });
  total_kernel<<<1, kThreads, 0, stream>>>(partial_data, kPartials, partial_data + kPartials);
  check_launch();
  double total = 0;
  LONGNET_CHECK(cudaMemcpyAsync(&total, partial_data + kPartials, sizeof total, cudaMemcpyDeviceToHost, stream));
  LONGNET_CHECK(cudaStreamSynchronize(stream));
  return total;
}

void scale_cuda(void* x, std::int64_t count, DType dtype, double factor) {
  if (count == 0) return;
  dispatch_float(dtype, "scale", [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T>
        <<<grid_for(count), kThreads, 0, current_cuda_stream()>>>(static_cast<T*>(x), count, static_cast<T>(factor));
  });
  check_launch();
}

}  // namespace longnet::kernels
