// Shared pieces of the CUDA model kernels (layer norm, GELU, embedding, cross-entropy,
// dropout, AdamW, gradient norm, rotary, linear, add, dilated decode): the current device
// and stream, grid sizes for grid-stride loops, dtype dispatch (f32, f64) and warp/block
// sums. Every reduction here runs in a fixed order (no atomics), so results are
// reproducible run to run, as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/status_cuda.hpp"
#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet::kernels::cuda_model {

inline int current_device() {
  int device = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  return device;
}

inline cudaStream_t current_cuda_stream() { return static_cast<cudaStream_t>(current_stream(current_device()).handle); }

constexpr int kThreads = 256;

// Blocks of a grid-stride loop over `count` items.
inline unsigned grid_for(std::int64_t count, int threads = kThreads) {
  const std::int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, 65535));
}

template <class Body>
void dispatch_float(DType dtype, const char* kernel, Body&& body) {
  if (dtype == DType::f32) {
    body(float{});
  } else if (dtype == DType::f64) {
    body(double{});
  } else {
    throw Error(str(kernel, " on CUDA: dtype = ", dtype_name(dtype), ": must be f32 or f64"));
  }
}

inline void check_launch() { LONGNET_CHECK(cudaGetLastError()); }

#define LONGNET_GRID_STRIDE(i, count)                                                                  \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (count); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

template <class T>
__device__ inline T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

template <class T>
__device__ inline T warp_max(T value) {
  for (int offset = 16; offset > 0; offset /= 2) value = max(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// The sum over a block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread; `shared` holds 32 values. The order is fixed, so the result is reproducible.
template <class T>
__device__ inline T block_sum(T value, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_sum(value);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  return warp_sum(total);
}

template <class T>
__device__ inline T block_max(T value, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  T total = lane < warps ? shared[lane] : shared[0];
  return warp_max(total);
}

// Column sums out[c] += sum_r value(r, c) of a (rows, columns) matrix, deterministic and
// parallel over rows: pass 1 sums fixed chunks of rows per column into a scratch buffer,
// pass 2 adds the chunks in order. `value` is a device functor (r, c) -> T.
constexpr std::int64_t kRowsPerChunk = 128;

template <class T, class Value>
__global__ void column_chunk_sums_kernel(std::int64_t rows, std::int64_t columns, Value value, T* partial) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  if (c >= columns) return;
  const std::int64_t end = min(rows, (chunk + 1) * kRowsPerChunk);
  T sum = 0;
  for (std::int64_t r = chunk * kRowsPerChunk; r < end; ++r) sum += value(r, c);
  partial[chunk * columns + c] = sum;
}

template <class T>
__global__ void column_chunk_totals_kernel(const T* partial, std::int64_t chunks, std::int64_t columns, T* out) {
  LONGNET_GRID_STRIDE(c, columns) {
    T sum = 0;
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[chunk * columns + c];
    out[c] += sum;
  }
}

template <class T, class Value>
void accumulate_column_sums(std::int64_t rows, std::int64_t columns, Value value, T* out, cudaStream_t stream) {
  if (rows == 0 || columns == 0) return;
  const std::int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  require(chunks <= 65535, "column sums on CUDA: ", rows, " rows: at most ", 65535 * kRowsPerChunk);
  const Tensor partial = Tensor::empty({chunks * columns}, dtype_of<T>::value, Device::cuda(current_device()));
  const dim3 grid(static_cast<unsigned>((columns + 127) / 128), static_cast<unsigned>(chunks));
  column_chunk_sums_kernel<T><<<grid, 128, 0, stream>>>(rows, columns, value, partial.data<T>());
  column_chunk_totals_kernel<T><<<grid_for(columns), kThreads, 0, stream>>>(partial.data<T>(), chunks, columns, out);
  check_launch();
}

}  // namespace longnet::kernels::cuda_model
