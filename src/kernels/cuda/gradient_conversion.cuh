// The attention backward's last pass when the caller wants the gradients' column sums
// (DilatedAttentionParams::gradient_column_sums: a fused q/k/v projection's bias gradient).
// The fp32 accumulators of dQ, dK and dV are converted into the caller's 16-bit gradients,
// dQ and dK through the positional encoding's transposed rotary maps, and the column sums
// are taken from the values as written, in the same pass. Converting first and summing the
// projection's output gradient after (what Linear's backward does) reads that gradient once
// more: 151 MB a layer of issue 5's model (32768 x 2304 bf16), ~50 us on an H100.
//
// The sums take a Linear bias gradient's order (model_kernels_common.cuh): chunks of
// kMatrixRowsPerChunk consecutive rows of the (B N, (H + 2 Hk) D) matrix summed in row
// order, then the chunks by accumulate_chunk_totals; so the bias gradient has the bits it
// had when the Linear summed it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/attention_driver.cuh"
#include "kernels/cuda/model_kernels_common.cuh"
#include "kernels/cuda/rotary_factors.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels::cuda {

// The rotary factors of a chunk's rows sit in shared memory: 32 rows x 64 pairs x 8 bytes
// = 16 KB at most (head_dim <= 128, the tensor-core kernels' limit).
constexpr int kMaxSummedPairs = 64;
constexpr int kSummedChunkRows = static_cast<int>(cuda_model::kMatrixRowsPerChunk);
// Rows whose loads a thread keeps in flight (16 bytes each).
constexpr int kSummedRowsInFlight = 8;

struct SummedGradient {
  const float* accumulator = nullptr;  // contiguous (B, N, heads, D)
  void* target = nullptr;              // row r = b N + n of the (B N, heads D) matrix at r * row_stride
  std::int64_t row_stride = 0, head_stride = 0;
  int heads = 0;
  int map = -1;  // rotary map (GradientSums::maps) or -1
};

struct GradientSums {
  SummedGradient gradients[3];  // dq, dk, dv
  // The transposed rotary maps and their per-pair constants (as convert_accumulator's).
  RotaryParams maps[2];
  double theta[2][kMaxSummedPairs];
  float log2_zeta[2][kMaxSummedPairs];
  int map_count = 0;
  std::int64_t rows = 0, seq_len = 0;  // rows = B N
  int head_dim = 0;
  int first_quad[4] = {};    // gradient i's columns are quads [first_quad[i], first_quad[i + 1])
  float* partial = nullptr;  // (chunks, columns): each chunk's column sums
};

// A CTA per chunk of rows and gradient (blockIdx.x = 3 chunk + gradient: dq, dk, dv), a
// thread per 4 of its columns (looping when there are more quads than threads). One CTA
// for all of [dq | dk | dv] (576 threads at 64 registers in issue 5's model) fit one an SM,
// 36 KB of loads in flight there; a gradient's 192 threads fit five an SM. In the training
// step (CUPTI timeline, H100) that took the kernel from 172 to 157 us a layer; the same
// CTAs ordered gradient-major (all of dq's chunks first) took 183 us there, though 174
// against 197 alone under Nsight Compute (docs/benchmarks.md, twenty-sixth session).
// Bytes: 4 read and 2 written an element, 4 written per chunk and column.
template <class Element>
__global__ void __launch_bounds__(1024) convert_gradients_summing_kernel(GradientSums g) {
  begin_dependent_kernel();
  extern __shared__ float2 factors[];  // [row of the chunk][pair]: (f cos, f sin)
  const int i = static_cast<int>(blockIdx.x % 3);
  const std::int64_t chunk = blockIdx.x / 3;
  const SummedGradient& s = g.gradients[i];
  const int pairs = g.head_dim / 2;
  const std::int64_t row0 = chunk * static_cast<std::int64_t>(kSummedChunkRows);
  const int rows = static_cast<int>(min(static_cast<std::int64_t>(kSummedChunkRows), g.rows - row0));
  if (s.map >= 0) {
    const std::int64_t n0 = row0 % g.seq_len;
    for (int e = threadIdx.x; e < kSummedChunkRows * pairs; e += blockDim.x) {
      const int r = e / pairs, j = e % pairs;
      if (r >= rows) continue;
      std::int64_t n = n0 + r;  // the position of row row0 + r
      while (n >= g.seq_len) n -= g.seq_len;
      float cs, sn;
      rotary_factors::fast_from_constants(g.maps[s.map], g.theta[s.map][j], g.log2_zeta[s.map][j], n, cs, sn);
      factors[e] = make_float2(cs, sn);
    }
    __syncthreads();
  }

  const int columns = g.first_quad[3] * 4, quads_per_head = g.head_dim / 4;
  const int row_elements = s.heads * g.head_dim;
  for (int local = threadIdx.x; local < g.first_quad[i + 1] - g.first_quad[i]; local += blockDim.x) {
    const int h = local / quads_per_head, d = (local - h * quads_per_head) * 4;
    const float* source = s.accumulator + row0 * row_elements + h * g.head_dim + d;
    Element* target = static_cast<Element*>(s.target) + row0 * s.row_stride + h * s.head_stride + d;
    const float2* f = s.map >= 0 ? factors + d / 2 : nullptr;
    float sum[4] = {};
    for (int r0 = 0; r0 < rows; r0 += kSummedRowsInFlight) {
      float4 v[kSummedRowsInFlight];
#pragma unroll
      for (int u = 0; u < kSummedRowsInFlight; ++u) {
        if (r0 + u < rows) v[u] = *reinterpret_cast<const float4*>(source + (r0 + u) * row_elements);
      }
#pragma unroll
      for (int u = 0; u < kSummedRowsInFlight; ++u) {
        if (r0 + u >= rows) break;
        float x[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
        if (f) {
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const float2 c = f[(r0 + u) * pairs + q];
            const float even = x[2 * q], odd = x[2 * q + 1];
            x[2 * q] = even * c.x - odd * c.y;
            x[2 * q + 1] = odd * c.x + even * c.y;
          }
        }
        unsigned bits[2] = {};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const Element rounded = cuda_model::from_compute<Element>(x[e]);
          sum[e] += cuda_model::to_compute(rounded);
          bits[e / 2] |= static_cast<unsigned>(*reinterpret_cast<const unsigned short*>(&rounded)) << (16 * (e % 2));
        }
        *reinterpret_cast<uint2*>(target + (r0 + u) * s.row_stride) = make_uint2(bits[0], bits[1]);
      }
    }
    const int k = g.first_quad[i] + local;  // the quad's column in [dq | dk | dv]
    *reinterpret_cast<float4*>(g.partial + chunk * columns + k * 4) = make_float4(sum[0], sum[1], sum[2], sum[3]);
  }
}

// Whether convert_gradients_summing takes these gradients (of 16-bit elements: the
// caller's condition): dq, dk and dv all in fp32 accumulators, head_dim % 4 == 0 up to 2 kMaxSummedPairs, targets that
// are (B N, heads D) matrices with 8-byte aligned quads.
inline bool gradients_summed_in_conversion(const DilatedAttentionParams& p, bool accumulators) {
  const auto quads_aligned = [&](const RowTensor& t) {  // and (B N, heads D) matrices
    return reinterpret_cast<std::uintptr_t>(t.data) % 8 == 0 && t.seq_stride % 4 == 0 && t.head_stride % 4 == 0 &&
           (p.batch == 1 || t.batch_stride == p.seq_len * t.seq_stride);
  };
  return accumulators && p.head_dim % 4 == 0 && p.head_dim / 2 <= kMaxSummedPairs && quads_aligned(p.dq) &&
         quads_aligned(p.dk) && quads_aligned(p.dv);
}

// Writes dq, dk, dv (p's targets) from their fp32 accumulators, dq and dk through
// p.dq_rotary and p.dk_rotary when set, and adds the column sums of [dq | dk | dv] to
// p.gradient_column_sums. Needs gradients_summed_in_conversion.
template <class Element>
void convert_gradients_summing(const DilatedAttentionParams& p, const float* dq, const float* dk, const float* dv,
                               cudaStream_t stream) {
  GradientSums g;
  g.rows = p.batch * p.seq_len;
  g.seq_len = p.seq_len;
  g.head_dim = static_cast<int>(p.head_dim);
  const float* accumulators[3] = {dq, dk, dv};
  const RowTensor* targets[3] = {&p.dq, &p.dk, &p.dv};
  const RotaryParams* rotations[3] = {p.dq_rotary, p.dk_rotary, nullptr};
  const std::int64_t heads[3] = {p.heads, p.kv_heads, p.kv_heads};
  for (int i = 0; i < 3; ++i) {
    SummedGradient& s = g.gradients[i];
    s.accumulator = accumulators[i];
    s.target = targets[i]->data;
    s.row_stride = targets[i]->seq_stride;
    s.head_stride = targets[i]->head_stride;
    s.heads = static_cast<int>(heads[i]);
    g.first_quad[i + 1] = g.first_quad[i] + static_cast<int>(heads[i] * p.head_dim / 4);
    if (rotations[i]) {
      const int m = g.map_count++;
      g.maps[m] = transposed_gradient_map(*rotations[i], p.head_dim);
      fill_rotary_pair_constants(g.maps[m], g.theta[m], g.log2_zeta[m]);
      s.map = m;
    }
  }
  const std::int64_t chunks = (g.rows + kSummedChunkRows - 1) / kSummedChunkRows, columns = g.first_quad[3] * 4;
  if (chunks == 0 || columns == 0) return;
  const Tensor partial = Tensor::empty({chunks * columns}, DType::f32, current_device());
  g.partial = partial.data<float>();
  const int widest = std::max(g.first_quad[1], g.first_quad[2] - g.first_quad[1]);  // dq's or dk's (= dv's) quads
  const int threads = std::min(1024, (widest + 31) / 32 * 32);
  const std::size_t shared = g.map_count > 0 ? sizeof(float2) * kSummedChunkRows * (p.head_dim / 2) : 0;
  cuda_model::launch_model(convert_gradients_summing_kernel<Element>, dim3(static_cast<unsigned>(3 * chunks)),
                           dim3(threads), shared, stream, g);
  LONGNET_CHECK(cudaGetLastError());
  cuda_model::accumulate_chunk_totals<float, 1>(
      partial.data<float>(), chunks, columns,
      cuda_model::ColumnTargets<float, 1>{{static_cast<float*>(p.gradient_column_sums)}}, stream);
}

// The column sums alone, of gradients already written (the path for what
// convert_gradients_summing does not take): a pass over each of dq, dk, dv.
template <class Element>
void add_gradient_column_sums(const DilatedAttentionParams& p, cudaStream_t stream) {
  using C = cuda_model::Compute<Element>;
  C* sums = static_cast<C*>(p.gradient_column_sums);
  const std::int64_t heads[3] = {p.heads, p.kv_heads, p.kv_heads};
  const RowTensor* gradients[3] = {&p.dq, &p.dk, &p.dv};
  for (int i = 0; i < 3; ++i) {
    const std::int64_t columns = heads[i] * p.head_dim;
    cuda_model::accumulate_column_sums(static_cast<const Element*>(gradients[i]->data), p.batch * p.seq_len, columns,
                                       gradients[i]->seq_stride, sums, stream);
    sums += columns;
  }
}

}  // namespace longnet::kernels::cuda
