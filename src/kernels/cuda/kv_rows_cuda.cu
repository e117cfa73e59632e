// The exchange buffers of sequence parallelism on CUDA (kernels/dilated_attention_tasks.hpp):
// packing the rows a rank sends into a contiguous (rows, B, D) buffer, and adding the
// gradients that come back for them. A warp per buffer row and batch element; the runs
// (a few per peer and kv head), sorted by buffer row, are uploaded so a warp finds its
// run by binary search.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/attention_driver.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet::kernels {
namespace {

// The run holding buffer row `row`: the last one whose buffer_row <= row (runs are sorted
// by buffer_row); nullptr for a row no run covers.
__device__ __forceinline__ const KvRowRunParams* run_of(const KvRowRunParams* runs, std::int64_t num_runs,
                                                        std::int64_t row) {
  std::int64_t lo = 0, hi = num_runs - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (runs[mid].buffer_row <= row) lo = mid; else hi = mid - 1;
  }
  const KvRowRunParams* run = runs + lo;
  const std::int64_t j = row - run->buffer_row;
  return j >= 0 && j < run->count ? run : nullptr;
}

// A warp per (buffer row, batch element): its run found once, the row's D elements by
// the lanes. add: local += buffer (atomically: a row can be sent to several peers); else
// buffer = local.
template <class T, bool kAdd>
__global__ void kv_rows_kernel(cuda::DeviceRows local, T* buffer, const KvRowRunParams* runs, std::int64_t num_runs,
                               std::int64_t rows, std::int64_t batch, int head_dim) {
  const int lane = threadIdx.x % 32;
  for (std::int64_t item = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
       item < rows * batch; item += static_cast<std::int64_t>(gridDim.x) * blockDim.x / 32) {
    const std::int64_t row = item / batch, b = item % batch;
    const KvRowRunParams* run = run_of(runs, num_runs, row);
    if (run == nullptr) continue;
    T* local_row =
        local.row<T>(b, run->first_row + (row - run->buffer_row) * run->row_step, static_cast<int>(run->kv_head));
    T* buffer_row = buffer + item * head_dim;
    for (int d = lane; d < head_dim; d += 32) {
      if constexpr (kAdd) {
        atomicAdd(local_row + d, buffer_row[d]);
      } else {
        buffer_row[d] = local_row[d];
      }
    }
  }
}

Tensor upload_runs(const KvRowsParams& p) {
  for (std::int64_t r = 1; r < p.num_runs; ++r) {
    require(p.runs[r].buffer_row >= p.runs[r - 1].buffer_row, "exchanged row runs must be sorted by buffer row");
  }
  return cuda::upload_words(p.runs, p.num_runs);
}

template <class T, bool kAdd>
void launch(const KvRowsParams& p, const Tensor& runs, cudaStream_t stream) {
  kv_rows_kernel<T, kAdd><<<cuda::grid_for(p.buffer_rows * p.batch * 32, 256), 256, 0, stream>>>(
      cuda::device_rows(p.local), static_cast<T*>(p.buffer), static_cast<const KvRowRunParams*>(runs.data()),
      p.num_runs, p.buffer_rows, p.batch, static_cast<int>(p.head_dim));
}

}  // namespace

void pack_kv_rows_cuda(const KvRowsParams& p) {
  if (p.num_runs == 0 || p.buffer_rows == 0) return;
  const Tensor runs = upload_runs(p);
  const cudaStream_t stream = cuda::current_cuda_stream();
  switch (p.dtype) {
    case DType::bf16: launch<__nv_bfloat16, false>(p, runs, stream); break;
    case DType::f16: launch<__half, false>(p, runs, stream); break;
    case DType::f32: launch<float, false>(p, runs, stream); break;
    case DType::f64: launch<double, false>(p, runs, stream); break;
    default: throw Error(str("packing exchanged rows on CUDA: dtype ", dtype_name(p.dtype), " is not a float dtype"));
  }
  LONGNET_CHECK(cudaGetLastError());
}

void scatter_add_kv_rows_cuda(const KvRowsParams& p) {
  if (p.num_runs == 0 || p.buffer_rows == 0) return;
  require(p.dtype == DType::f32 || p.dtype == DType::f64, "adding returned rows on CUDA: dtype ", dtype_name(p.dtype),
          " must be the accumulation dtype f32 or f64");
  const Tensor runs = upload_runs(p);
  const cudaStream_t stream = cuda::current_cuda_stream();
  if (p.dtype == DType::f32) {
    launch<float, true>(p, runs, stream);
  } else {
    launch<double, true>(p, runs, stream);
  }
  LONGNET_CHECK(cudaGetLastError());
}

}  // namespace longnet::kernels
