// Memory-bound helpers of the CUDA attention drivers: fills, delta = rowsum(dO * O) and
// conversion of fp32/fp64 accumulators into strided outputs.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/simt_attention.cuh"

namespace longnet::kernels::cuda {

template <class T>
__global__ void fill_kernel(T* data, std::int64_t count, T value) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    data[i] = value;
  }
}

// delta[b, h, n] = sum_d dout[b, n, h, d] * out[b, n, h, d]: one warp per row.
template <class Element, class Compute>
__global__ void delta_kernel(DeviceRows out, DeviceRows dout, Compute* delta, std::int64_t batch, std::int64_t seq_len,
                             int heads, int head_dim) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= batch * heads * seq_len) return;
  const std::int64_t n = row % seq_len, h = (row / seq_len) % heads, b = row / (seq_len * heads);
  const Element* o = out.row<const Element>(b, n, h);
  const Element* g = dout.row<const Element>(b, n, h);
  Compute sum = 0;
  for (int d = lane; d < head_dim; d += 32) sum += load<Compute>(o + d) * load<Compute>(g + d);
  sum = warp_sum(sum);
  if (lane == 0) delta[row] = sum;
}

// out[b, n, h, :] = scale * accumulator[b, n, h, :] (accumulator contiguous).
template <class Element, class Compute>
__global__ void convert_accumulator_kernel(const Compute* accumulator, DeviceRows out, std::int64_t batch,
                                           std::int64_t seq_len, int heads, int head_dim, Compute scale) {
  const std::int64_t count = batch * seq_len * heads * head_dim;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t d = i % head_dim;
    const std::int64_t rest = i / head_dim;
    const std::int64_t h = rest % heads, n = (rest / heads) % seq_len, b = rest / (heads * seq_len);
    store(out.row<Element>(b, n, h) + d, accumulator[i] * scale);
  }
}

inline unsigned grid_for(std::int64_t threads_needed, int block) {
  const std::int64_t blocks = (threads_needed + block - 1) / block;
  return static_cast<unsigned>(blocks < 65536 * 8 ? (blocks > 0 ? blocks : 1) : 65536 * 8);
}

}  // namespace longnet::kernels::cuda
