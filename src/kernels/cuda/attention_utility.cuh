// Memory-bound helpers of the CUDA attention drivers: fills, delta = rowsum(dO * O) and
// conversion of fp32/fp64 accumulators into strided outputs.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "kernels/cuda/flash_params.cuh"
#include "kernels/cuda/rotary_factors.cuh"
#include "kernels/cuda/simt_attention.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"

namespace longnet::kernels::cuda {

template <class T>
__global__ void fill_kernel(T* data, std::int64_t count, T value) {
  begin_dependent_kernel();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    data[i] = value;
  }
}

// delta[b, h, n] = sum_d dout[b, n, h, d] * out[b, n, h, d]: one warp per row, the rows
// grid-strided (grid_for caps the grid).
template <class Element, class Compute>
__global__ void delta_kernel(DeviceRows out, DeviceRows dout, Compute* delta, std::int64_t batch, std::int64_t seq_len,
                             int heads, int head_dim) {
  begin_dependent_kernel();
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * blockDim.x / 32;
  for (std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
       row < batch * heads * seq_len; row += warps) {  // uniform over the warp
    const std::int64_t n = row % seq_len, h = (row / seq_len) % heads, b = row / (seq_len * heads);
    const Element* o = out.row<const Element>(b, n, h);
    const Element* g = dout.row<const Element>(b, n, h);
    Compute sum = 0;
    for (int d = lane; d < head_dim; d += 32) sum += load<Compute>(o + d) * load<Compute>(g + d);
    sum = warp_sum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

// The same with 16-byte loads: kLanes lanes per row (a power of two, kLanes * 16 bytes >=
// a row) each read one 16-byte pack of O and of dO, rows of one head (blockIdx.y) and batch
// element (blockIdx.z) per CTA, consecutive rows to consecutive lane groups so the writes
// of delta are coalesced. The warp-per-row kernel above read 2-byte elements and divided
// 64-bit row indices per thread: a fifth of HBM bandwidth (100 us for a 32K x 12 x 64
// bf16 training call; 2 GB read at N = 1M, 8 heads).
template <class Element, class Compute, int kLanes>
__global__ void delta_packed_kernel(DeviceRows out, DeviceRows dout, Compute* delta, std::int64_t seq_len,
                                    int heads, int head_dim) {
  begin_dependent_kernel();
  constexpr int kPack = 16 / static_cast<int>(sizeof(Element));
  static_assert(32 % kLanes == 0, "a row's lanes stay in one warp");
  const int h = static_cast<int>(blockIdx.y);
  const std::int64_t b = blockIdx.z;
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x / kLanes) + threadIdx.x / kLanes;
  const int chunk = static_cast<int>(threadIdx.x % kLanes);
  Compute sum = 0;
  if (n < seq_len && chunk * kPack < head_dim) {
    union {
      uint4 raw;
      Element e[kPack];
    } o, g;
    o.raw = *reinterpret_cast<const uint4*>(out.row<const Element>(b, n, h) + chunk * kPack);
    g.raw = *reinterpret_cast<const uint4*>(dout.row<const Element>(b, n, h) + chunk * kPack);
#pragma unroll
    for (int e = 0; e < kPack; ++e) sum += load<Compute>(&o.e[e]) * load<Compute>(&g.e[e]);
  }
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (chunk == 0 && n < seq_len) delta[(b * heads + h) * seq_len + n] = sum;
}

// The Hopper backward's terms of each (b, h, n) row: {lse in the log2 units of its exp2
// (+inf where lse = -inf, a block-sparse row without keys, so its P is 0), delta /
// output_scale}. Computed once per call, they spare every step of the kernel a compare, a
// select and two multiplies per row it reads, and the row takes one 8-byte copy, not two.
__global__ inline void backward_row_terms_kernel(const float* lse, const float* delta, float2* terms,
                                                 std::int64_t count, float inverse_output_scale) {
  begin_dependent_kernel();
  constexpr float kLog2e = 1.4426950408889634f;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float l = lse[i];
    terms[i] = make_float2(l == -INFINITY ? INFINITY : l * kLog2e, delta[i] * inverse_output_scale);
  }
}

// out[b, n, h, :] = scale * accumulator[b, n, h, :] (accumulator contiguous).
template <class Element, class Compute>
__global__ void convert_accumulator_kernel(const Compute* accumulator, DeviceRows out, std::int64_t batch,
                                           std::int64_t seq_len, int heads, int head_dim, Compute scale) {
  begin_dependent_kernel();
  const std::int64_t count = batch * seq_len * heads * head_dim;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t d = i % head_dim;
    const std::int64_t rest = i / head_dim;
    const std::int64_t h = rest % heads, n = (rest / heads) % seq_len, b = rest / (heads * seq_len);
    store(out.row<Element>(b, n, h) + d, accumulator[i] * scale);
  }
}

// The same for head_dim % 4 == 0: a CTA per position (n = blockIdx.x, b = blockIdx.y), a
// thread per four columns of a head, so no thread divides 64-bit row indices (which made
// the element-wise kernel compute-bound at a third of HBM bandwidth).
// kRotate: the rotary map `rotation` (rotary.hpp, transpose set: a positional encoding's
// backward) is applied on the way; the first head_dim / 2 threads compute the position's
// pair factors once into shared memory for every head (rotary_factors.cuh).
constexpr int kMaxRotatedPairs = 128;  // head_dim <= 256

// The per-pair constants of a rotary map, made on the host once per conversion:
// theta_j = base^(-2j / D) and log2(zeta_j). Computed in each CTA (double log2 and exp2),
// they made the rotating conversion 0.068 ms a 32768 x 12 x 64 bf16 call on an H200
// against 0.037 for the plain one.
struct RotaryPairTable {
  double theta[kMaxRotatedPairs];
  float log2_zeta[kMaxRotatedPairs];
};

// The map a gradient leaves through (the transpose of `rotation`, of head_dim-wide rows)
// and its pairs' constants theta_j and log2(zeta_j) for j < head_dim / 2, made on the host
// (the conversions' tables).
inline RotaryParams transposed_gradient_map(const RotaryParams& rotation, std::int64_t head_dim) {
  RotaryParams map = rotation;
  map.head_dim = head_dim;
  map.transpose = true;
  return map;
}
inline void fill_rotary_pair_constants(const RotaryParams& map, double* theta, float* log2_zeta) {
  for (std::int64_t j = 0; j < map.head_dim / 2; ++j) {
    theta[j] = rotary_theta(map.base, j, map.head_dim);
    log2_zeta[j] = static_cast<float>(std::log2(xpos_zeta(j, map.head_dim)));
  }
}

template <class Element, class Compute, bool kRotate>
__global__ void convert_accumulator_rows_kernel(const Compute* accumulator, DeviceRows out, int heads, int head_dim,
                                                Compute scale, RotaryParams rotation, RotaryPairTable table) {
  begin_dependent_kernel();
  const std::int64_t n = blockIdx.x, b = blockIdx.y;
  const int quads = head_dim / 4, per_position = heads * quads;
  const Compute* source = accumulator + (b * gridDim.x + n) * per_position * 4;
  const auto load_quad = [&](int k, Compute* v) {
    if constexpr (std::is_same_v<Compute, float>) {
      const float4 x = reinterpret_cast<const float4*>(source)[k];
      v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = source[4 * k + j];
    }
  };
  // The first quad's load is in flight while the factors are computed: computed first,
  // they held every CTA's loads back (the rotating conversion ran at 0.065 ms a 32768 x 12
  // x 64 call on an H200, the plain one 0.036).
  const int first = static_cast<int>(threadIdx.x);
  Compute v[4];
  if (first < per_position) load_quad(first, v);
  __shared__ Compute factors[kRotate ? 2 : 1][kRotate ? kMaxRotatedPairs : 1];
  if constexpr (kRotate) {
    for (int j = first; j < head_dim / 2; j += static_cast<int>(blockDim.x)) {
      if constexpr (sizeof(Element) == 2) {
        rotary_factors::fast_from_constants(rotation, table.theta[j], table.log2_zeta[j], n, factors[0][j],
                                            factors[1][j]);
      } else {
        rotary_factors::exact(rotation, j, n, factors[0][j], factors[1][j]);
      }
    }
    __syncthreads();
  }
  for (int k = first; k < per_position; k += static_cast<int>(blockDim.x)) {
    const int h = k / quads, d = (k - h * quads) * 4;
    if (k != first) load_quad(k, v);
    if constexpr (kRotate) {
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const Compute cs = factors[0][d / 2 + q], sn = factors[1][d / 2 + q];
        const Compute even = v[2 * q], odd = v[2 * q + 1];
        v[2 * q] = even * cs - odd * sn;
        v[2 * q + 1] = odd * cs + even * sn;
      }
    }
    Element* target = out.row<Element>(b, n, h) + d;
#pragma unroll
    for (int j = 0; j < 4; ++j) store(target + j, v[j] * scale);
  }
}

inline unsigned grid_for(std::int64_t threads_needed, int block) {
  const std::int64_t blocks = (threads_needed + block - 1) / block;
  return static_cast<unsigned>(blocks < 65536 * 8 ? (blocks > 0 ? blocks : 1) : 65536 * 8);
}

}  // namespace longnet::kernels::cuda
