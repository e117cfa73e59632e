// Shared pieces of the CUDA model kernels (layer norm, GELU, embedding, cross-entropy,
// dropout, AdamW, gradient norm, rotary, linear, add, dilated decode): the current device
// and stream, grid sizes for grid-stride loops, dtype dispatch (f32, f64, and bf16 for
// activations, which compute in f32: Compute<T>; f16 likewise where the attention
// gradients need it), 16-byte packed loads for the
// bandwidth-bound elementwise kernels, warp/block sums and two-pass column sums. Every
// reduction here runs in a fixed order (no atomics), so results are reproducible run to
// run, as on the CPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "core/status_cuda.hpp"
#include "kernels/cuda/sm90_pipeline.cuh"
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

// Programmatic dependent launch for the model's own kernels (sm_90): a kernel launched by
// launch_model may have its CTAs placed while the launch before it finishes, hiding the
// ~1.7 us between launches (the timeline of a training step on 2026-12-04 counted 0.59 ms a
// step of such gaps before the model's ~350 launches). Every kernel that launch_model
// launches begins with begin_dependent_kernel(). Opt-in until measured on a GPU:
// LONGNET_MODEL_PDL=1 in the environment.
using cuda::begin_dependent_kernel;

inline bool model_launch_overlap() {
  static const bool requested = [] {
    const char* value = std::getenv("LONGNET_MODEL_PDL");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return requested && cuda_device_info(current_device()).compute_major >= 9;
}

template <class Kernel, class... Args>
void launch_model(Kernel kernel, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream, Args... args) {
  cuda::launch_after_previous(kernel, grid, block, shared_bytes, stream, model_launch_overlap(), args...);
}

// A product and a sum nvcc may not fuse into an FMA. It contracts a * b + c across
// statements, and not always the same way at every call site or in every instantiation of
// a kernel: AdamW's packed and scalar loops could round differently, and the LayerNorm
// backward with dx's column sums wrote dx a rounding apart from the one without (f32 rows
// of a block team, H100). Arithmetic that must give the same bits on every path spells
// each FMA out (fma) and rounds the rest with these.
template <class T>
__device__ __forceinline__ T mul_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
}
template <class T>
__device__ __forceinline__ T add_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    return __fadd_rn(a, b);
  } else {
    return __dadd_rn(a, b);
  }
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

// Activations: f32 and f64 as on the CPU, and bf16 (mixed precision) on CUDA only.
template <class Body>
void dispatch_activation(DType dtype, const char* kernel, Body&& body) {
  if (dtype == DType::f32) {
    body(float{});
  } else if (dtype == DType::f64) {
    body(double{});
  } else if (dtype == DType::bf16) {
    body(__nv_bfloat16{});
  } else {
    throw Error(str(kernel, " on CUDA: dtype = ", dtype_name(dtype), ": must be f32, f64 or bf16"));
  }
}

// The arithmetic type of an element type: bf16 computes in float (one rounding per
// result, on the store), f32 and f64 in themselves.
template <class T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<__nv_bfloat16> {
  using type = float;
};
template <>  // f16 (the attention gradients' column sums): as bf16
struct ComputeType<__half> {
  using type = float;
};
template <class T>
using Compute = typename ComputeType<T>::type;

template <class T>
__device__ __forceinline__ Compute<T> to_compute(T value) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(value);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half2float(value);
  } else {
    return value;
  }
}

template <class T>
__device__ __forceinline__ T from_compute(Compute<T> value) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(value);
  } else {
    return value;
  }
}

// A 16-byte pack of elements (8 bf16, 4 floats, 2 doubles): elementwise kernels move
// whole packs when every pointer is 16-byte aligned (pool allocations are 256-byte
// aligned), which bf16's 2-byte loads need to reach the memory bandwidth.
template <class T>
constexpr int kPack = static_cast<int>(16 / sizeof(T));

template <class T>
struct alignas(16) Pack {
  T v[kPack<T>];
};

template <class T>
__device__ __forceinline__ Pack<T> load_pack(const T* base, std::int64_t pack) {
  return reinterpret_cast<const Pack<T>*>(base)[pack];
}

template <class T>
__device__ __forceinline__ void store_pack(T* base, std::int64_t pack, const Pack<T>& value) {
  reinterpret_cast<Pack<T>*>(base)[pack] = value;
}

template <class... Pointers>
bool aligned16(const Pointers*... pointers) {
  return ((reinterpret_cast<std::uintptr_t>(pointers) % 16 == 0) && ...);
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

// One block of kOrderedSumThreads adds x[0..count) into *total in double, in an order that
// depends on count alone: each thread a contiguous run in order, then block_sum. The
// scalars of a training step (the loss sum, the gradient norm's partials) are finished this
// way on the device, where the host reads them only at the step's end.
constexpr int kOrderedSumThreads = 1024;
template <class T>
__global__ void __launch_bounds__(kOrderedSumThreads)
    ordered_sum_kernel(const T* x, std::int64_t count, double* total) {
  begin_dependent_kernel();
  __shared__ double shared[32];
  const std::int64_t per_thread = (count + blockDim.x - 1) / blockDim.x;
  const std::int64_t begin = threadIdx.x * per_thread, end = min(count, begin + per_thread);
  double sum = 0;
  for (std::int64_t i = begin; i < end; ++i) sum += static_cast<double>(x[i]);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) *total = sum;
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

// Deterministic column sums, two passes and no atomics. Pass 1 (the caller's kernel, or
// accumulate_column_sums below) sums fixed chunks of consecutive rows in row order into
// partial[k][chunk][c]; pass 2 (accumulate_chunk_totals) adds each column's chunks in a
// fixed order: thread j of 32 sums chunks j, j + 32, j + 64, ... in order, then the 32
// sums are added in order j = 0..31. The order depends only on the number of chunks,
// never on the device or the grid. K sums at once (LayerNorm's dweight and dbias); a
// null out[k] skips that sum.
template <class T, int K>
struct ColumnTargets {
  T* out[K];
};

constexpr int kTotalGroups = 32;

// Block (32 columns) x (kTotalGroups groups of chunks), grid (column tiles, K).
// Bytes: K * chunks * columns * sizeof(T) read once, spread over columns * K * 32 threads.
template <class T, int K>
__global__ void __launch_bounds__(32 * kTotalGroups)
    column_chunk_totals_kernel(const T* partial, std::int64_t chunks, std::int64_t columns,
                               ColumnTargets<T, K> targets) {
  begin_dependent_kernel();
  __shared__ T sums[kTotalGroups][33];  // 33: no bank conflicts when read by column
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(32) + threadIdx.x;
  const int k = static_cast<int>(blockIdx.y);
  T sum = 0;
  if (c < columns) {
    const T* column = partial + k * chunks * columns + c;
    // kBatch loads in flight before their adds (in the same order): one memory round trip
    // for up to 32 kBatch chunks, where a loop of dependent-looking adds took several.
    constexpr int kBatch = 16;
    for (std::int64_t first = threadIdx.y; first < chunks; first += kBatch * kTotalGroups) {
      T values[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const std::int64_t chunk = first + u * kTotalGroups;
        values[u] = chunk < chunks ? column[chunk * columns] : T(0);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (first + u * kTotalGroups < chunks) sum += values[u];
      }
    }
  }
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < columns && targets.out[k]) {
    T total = 0;
    for (int j = 0; j < kTotalGroups; ++j) total += sums[j][threadIdx.x];
    targets.out[k][c] += total;
  }
}

template <class T, int K>
void accumulate_chunk_totals(const T* partial, std::int64_t chunks, std::int64_t columns, ColumnTargets<T, K> targets,
                             cudaStream_t stream) {
  if (chunks == 0 || columns == 0) return;
  const dim3 grid(static_cast<unsigned>((columns + 31) / 32), K);
  launch_model(column_chunk_totals_kernel<T, K>, grid, dim3(32, kTotalGroups), 0, stream, partial, chunks, columns,
               targets);
  check_launch();
}

// Pass 1 for a plain matrix: thread (chunk, g) sums P consecutive columns (one 16-byte
// pack when kVector) over the chunk's kMatrixRowsPerChunk rows, in row order.
// Bytes: rows * columns * sizeof(T) read once, columns * chunks * sizeof(Compute<T>)
// written (1/16 of the rows' bytes for f32 sums of bf16 rows read in 32-row chunks; 64-row
// chunks gave a 32768 x 768 bf16 matrix 192 blocks, too few loads in flight for HBM).
constexpr std::int64_t kMatrixRowsPerChunk = 32;

template <class T, bool kVector>
__global__ void matrix_chunk_sums_kernel(const T* matrix, std::int64_t rows, std::int64_t columns,
                                         std::int64_t row_stride, Compute<T>* partial) {
  begin_dependent_kernel();
  constexpr int P = kVector ? kPack<T> : 1;
  const std::int64_t groups = columns / P, chunks = (rows + kMatrixRowsPerChunk - 1) / kMatrixRowsPerChunk;
  LONGNET_GRID_STRIDE(i, chunks * groups) {
    const std::int64_t chunk = i / groups, g = i % groups;
    const std::int64_t end = min(rows, (chunk + 1) * kMatrixRowsPerChunk);
    Compute<T> sum[P] = {};
#pragma unroll 16
    for (std::int64_t r = chunk * kMatrixRowsPerChunk; r < end; ++r) {
      if constexpr (kVector) {
        const Pack<T> pack = load_pack(matrix + r * row_stride, g);
        for (int e = 0; e < P; ++e) sum[e] += to_compute(pack.v[e]);
      } else {
        sum[0] += to_compute(matrix[r * row_stride + g]);
      }
    }
    for (int e = 0; e < P; ++e) partial[chunk * columns + g * P + e] = sum[e];
  }
}

// out[c] += sum_r matrix[r * row_stride + c] over a (rows, columns) matrix, in Compute<T>.
template <class T>
void accumulate_column_sums(const T* matrix, std::int64_t rows, std::int64_t columns, std::int64_t row_stride,
                            Compute<T>* out, cudaStream_t stream) {
  using C = Compute<T>;
  if (rows == 0 || columns == 0) return;
  const std::int64_t chunks = (rows + kMatrixRowsPerChunk - 1) / kMatrixRowsPerChunk;
  const Tensor partial = Tensor::empty({chunks * columns}, dtype_of<C>::value, Device::cuda(current_device()));
  const bool vector = columns % kPack<T> == 0 && row_stride % kPack<T> == 0 && aligned16(matrix);
  if (vector) {
    launch_model(matrix_chunk_sums_kernel<T, true>, grid_for(chunks * columns / kPack<T>), kThreads, 0, stream, matrix,
                 rows, columns, row_stride, partial.data<C>());
  } else {
    launch_model(matrix_chunk_sums_kernel<T, false>, grid_for(chunks * columns), kThreads, 0, stream, matrix, rows,
                 columns, row_stride, partial.data<C>());
  }
  check_launch();
  accumulate_chunk_totals<C, 1>(partial.data<C>(), chunks, columns, ColumnTargets<C, 1>{{out}}, stream);
}

// An elementwise map out[i] = op(in_0[i], ..., in_{K-1}[i], i) over `count` contiguous
// elements, computed in Compute<T>. Op is a device functor
// `Compute<T> operator()(const Compute<T>* inputs, std::int64_t index) const`.
// Whole 16-byte packs when every pointer is aligned (the first threads then take the
// tail), single elements otherwise. `out` may alias an input.
template <class T, int K>
struct MapArgs {
  const T* in[K];
  T* out;
};

template <class T, int K, bool kVector, class Op>
__global__ void map_kernel(std::int64_t count, MapArgs<T, K> a, Op op) {
  begin_dependent_kernel();
  constexpr int P = kVector ? kPack<T> : 1;
  const std::int64_t groups = count / P;
  LONGNET_GRID_STRIDE(g, groups) {
    Compute<T> values[P][K];
    for (int k = 0; k < K; ++k) {
      if constexpr (kVector) {
        const Pack<T> pack = load_pack(a.in[k], g);
        for (int e = 0; e < P; ++e) values[e][k] = to_compute(pack.v[e]);
      } else {
        values[0][k] = to_compute(a.in[k][g]);
      }
    }
    if constexpr (kVector) {
      Pack<T> result;
      for (int e = 0; e < P; ++e) result.v[e] = from_compute<T>(op(values[e], g * P + e));
      store_pack(a.out, g, result);
    } else {
      a.out[g] = from_compute<T>(op(values[0], g));
    }
  }
  if constexpr (kVector) {
    const std::int64_t i = groups * P + blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (i < count) {
      Compute<T> values[K];
      for (int k = 0; k < K; ++k) values[k] = to_compute(a.in[k][i]);
      a.out[i] = from_compute<T>(op(values, i));
    }
  }
}

template <class T, int K, class Op>
void launch_map(std::int64_t count, const MapArgs<T, K>& a, const Op& op) {
  if (count == 0) return;
  bool vector = aligned16(a.out);
  for (int k = 0; k < K; ++k) vector = vector && aligned16(a.in[k]);
  const cudaStream_t stream = current_cuda_stream();
  if (vector) {
    launch_model(map_kernel<T, K, true, Op>, grid_for(std::max<std::int64_t>(count / kPack<T>, 1)), kThreads, 0, stream,
                 count, a, op);
  } else {
    launch_model(map_kernel<T, K, false, Op>, grid_for(count), kThreads, 0, stream, count, a, op);
  }
  check_launch();
}

}  // namespace longnet::kernels::cuda_model
