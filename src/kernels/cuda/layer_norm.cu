// LayerNorm on CUDA (layer_norm.hpp): forward and dx with one warp per row (statistics in
// the input precision, two passes over the row); dweight and dbias as deterministic
// two-pass column sums (no atomics).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/layer_norm.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void forward_kernel(LayerNormParams p) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const T* weight = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T sum = 0;
  for (std::int64_t c = lane; c < p.columns; c += 32) sum += x[c];
  const T mean = warp_sum(sum) / static_cast<T>(p.columns);
  T squares = 0;
  for (std::int64_t c = lane; c < p.columns; c += 32) squares += (x[c] - mean) * (x[c] - mean);
  const T rstd = T(1) / sqrt(warp_sum(squares) / static_cast<T>(p.columns) + static_cast<T>(p.eps));
  T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
  for (std::int64_t c = lane; c < p.columns; c += 32) {
    T y = (x[c] - mean) * rstd;
    if (weight) y *= weight[c];
    if (bias) y += bias[c];
    out[c] = y;
  }
  if (lane == 0) {
    static_cast<T*>(p.mean)[row] = mean;
    static_cast<T*>(p.rstd)[row] = rstd;
  }
}

template <class T>
__global__ void dx_kernel(LayerNormParams p) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const T* g = static_cast<const T*>(p.dout) + row * p.dout_row_stride;
  const T* weight = static_cast<const T*>(p.weight);
  const T mean = static_cast<const T*>(p.mean)[row], rstd = static_cast<const T*>(p.rstd)[row];
  T g_sum = 0, gx_sum = 0;
  for (std::int64_t c = lane; c < p.columns; c += 32) {
    const T gw = weight ? g[c] * weight[c] : g[c];
    g_sum += gw;
    gx_sum += gw * (x[c] - mean) * rstd;
  }
  const T g_mean = warp_sum(g_sum) / static_cast<T>(p.columns);
  const T gx_mean = warp_sum(gx_sum) / static_cast<T>(p.columns);
  T* dx = static_cast<T*>(p.dx) + row * p.dx_row_stride;
  for (std::int64_t c = lane; c < p.columns; c += 32) {
    const T gw = weight ? g[c] * weight[c] : g[c];
    dx[c] = rstd * (gw - g_mean - (x[c] - mean) * rstd * gx_mean);
  }
}

// The terms of dweight and dbias at (row r, column c).
template <class T>
struct WeightGradientTerm {
  const T *x, *dout, *mean, *rstd;
  std::int64_t x_row_stride, dout_row_stride;
  __device__ T operator()(std::int64_t r, std::int64_t c) const {
    return dout[r * dout_row_stride + c] * (x[r * x_row_stride + c] - mean[r]) * rstd[r];
  }
};

template <class T>
struct BiasGradientTerm {
  const T* dout;
  std::int64_t dout_row_stride;
  __device__ T operator()(std::int64_t r, std::int64_t c) const { return dout[r * dout_row_stride + c]; }
};

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads); }

}  // namespace

void layer_norm_forward_cuda(const LayerNormParams& p) {
  if (p.rows == 0) return;
  dispatch_float(p.dtype, "layer_norm_forward", [&](auto tag) {
    forward_kernel<decltype(tag)><<<row_blocks(p.rows), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

void layer_norm_backward_cuda(const LayerNormParams& p) {
  if (p.rows == 0) return;
  dispatch_float(p.dtype, "layer_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    dx_kernel<T><<<row_blocks(p.rows), kThreads, 0, stream>>>(p);
    check_launch();
    if (p.dweight) {
      const WeightGradientTerm<T> term{static_cast<const T*>(p.x),
                                       static_cast<const T*>(p.dout),
                                       static_cast<const T*>(p.mean),
                                       static_cast<const T*>(p.rstd),
                                       p.x_row_stride,
                                       p.dout_row_stride};
      accumulate_column_sums(p.rows, p.columns, term, static_cast<T*>(p.dweight), stream);
    }
    if (p.dbias) {
      const BiasGradientTerm<T> term{static_cast<const T*>(p.dout), p.dout_row_stride};
      accumulate_column_sums(p.rows, p.columns, term, static_cast<T*>(p.dbias), stream);
    }
  });
  check_launch();
}

}  // namespace longnet::kernels
