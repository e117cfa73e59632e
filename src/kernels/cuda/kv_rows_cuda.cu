// The exchange buffers of sequence parallelism on CUDA (kernels/dilated_attention_tasks.hpp):
// packing the rows a rank sends into a contiguous (rows, B, D) buffer, and adding the
// gradients that come back for them. One thread per element; the runs (a few per peer
// and kv head) are uploaded with a prefix of their buffer rows so a thread finds its run
// by binary search.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "kernels/cuda/attention_driver.cuh"
#include "kernels/cuda/simt_attention.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet::kernels {
namespace {

struct DeviceRun {
  std::int64_t buffer_row, first_row, row_step, count, kv_head;
};

// Element i of the buffer: (buffer row, batch, column) and the tensor row it mirrors.
struct RunElement {
  std::int64_t buffer_offset;
  const DeviceRun* run;
  std::int64_t j, b, d;
};

__device__ __forceinline__ bool run_element(const DeviceRun* runs, std::int64_t num_runs, std::int64_t rows,
                                            std::int64_t batch, std::int64_t head_dim, std::int64_t i,
                                            RunElement& out) {
  const std::int64_t row = i / (batch * head_dim);
  if (row >= rows) return false;
  // The last run whose buffer_row <= row (runs are sorted by buffer_row).
  std::int64_t lo = 0, hi = num_runs - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (runs[mid].buffer_row <= row) lo = mid; else hi = mid - 1;
  }
  const DeviceRun* run = runs + lo;
  const std::int64_t j = row - run->buffer_row;
  if (j < 0 || j >= run->count) return false;  // a row no run covers
  out = {i, run, j, (i / head_dim) % batch, i % head_dim};
  return true;
}

template <class Element>
__global__ void pack_kernel(cuda::DeviceRows local, Element* buffer, const DeviceRun* runs, std::int64_t num_runs,
                            std::int64_t rows, std::int64_t batch, std::int64_t head_dim) {
  const std::int64_t total = rows * batch * head_dim;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    RunElement e;
    if (!run_element(runs, num_runs, rows, batch, head_dim, i, e)) continue;
    buffer[i] = local.row<Element>(e.b, e.run->first_row + e.j * e.run->row_step, e.run->kv_head)[e.d];
  }
}

template <class T>
__global__ void scatter_add_kernel(cuda::DeviceRows local, const T* buffer, const DeviceRun* runs,
                                   std::int64_t num_runs, std::int64_t rows, std::int64_t batch,
                                   std::int64_t head_dim) {
  const std::int64_t total = rows * batch * head_dim;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    RunElement e;
    if (!run_element(runs, num_runs, rows, batch, head_dim, i, e)) continue;
    atomicAdd(local.row<T>(e.b, e.run->first_row + e.j * e.run->row_step, e.run->kv_head) + e.d, buffer[i]);
  }
}

Tensor upload_runs(const KvRowsParams& p) {
  std::vector<std::int64_t> words(static_cast<std::size_t>(p.num_runs) * 5);
  if (p.num_runs > 0) std::memcpy(words.data(), p.runs, words.size() * sizeof(std::int64_t));
  static_assert(sizeof(KvRowRunParams) == 5 * sizeof(std::int64_t) && sizeof(DeviceRun) == sizeof(KvRowRunParams));
  for (std::int64_t r = 1; r < p.num_runs; ++r) {
    require(p.runs[r].buffer_row >= p.runs[r - 1].buffer_row, "exchanged row runs must be sorted by buffer row");
  }
  return Tensor::from_vector(words, {static_cast<std::int64_t>(words.size())}).to(cuda::current_device());
}

template <class Element>
void pack(const KvRowsParams& p, const Tensor& runs, cudaStream_t stream) {
  const std::int64_t total = p.buffer_rows * p.batch * p.head_dim;
  pack_kernel<Element><<<cuda::grid_for(total, 256), 256, 0, stream>>>(
      cuda::device_rows(p.local), static_cast<Element*>(p.buffer), static_cast<const DeviceRun*>(runs.data()),
      p.num_runs, p.buffer_rows, p.batch, p.head_dim);
}

}  // namespace

void pack_kv_rows_cuda(const KvRowsParams& p) {
  if (p.num_runs == 0 || p.buffer_rows == 0) return;
  const Tensor runs = upload_runs(p);
  const cudaStream_t stream = cuda::current_cuda_stream();
  switch (p.dtype) {
    case DType::bf16: pack<__nv_bfloat16>(p, runs, stream); break;
    case DType::f16: pack<__half>(p, runs, stream); break;
    case DType::f32: pack<float>(p, runs, stream); break;
    case DType::f64: pack<double>(p, runs, stream); break;
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
  const std::int64_t total = p.buffer_rows * p.batch * p.head_dim;
  const auto* device_runs = static_cast<const DeviceRun*>(runs.data());
  if (p.dtype == DType::f32) {
    scatter_add_kernel<float><<<cuda::grid_for(total, 256), 256, 0, stream>>>(
        cuda::device_rows(p.local), static_cast<const float*>(p.buffer), device_runs, p.num_runs, p.buffer_rows,
        p.batch, p.head_dim);
  } else {
    scatter_add_kernel<double><<<cuda::grid_for(total, 256), 256, 0, stream>>>(
        cuda::device_rows(p.local), static_cast<const double*>(p.buffer), device_runs, p.num_runs, p.buffer_rows,
        p.batch, p.head_dim);
  }
  LONGNET_CHECK(cudaGetLastError());
}

}  // namespace longnet::kernels
