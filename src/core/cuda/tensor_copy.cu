// Device strided copy / fill with dtype conversion. Every element goes through double
// (exact for every source dtype but i64 beyond 2^53), so one kernel serves all pairs and
// float->bf16/f16 still rounds once, to nearest even, as on the host.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status_cuda.hpp"
#include "core/strided_copy.hpp"

namespace longnet::detail {
namespace {

struct Layout {
  int rank;
  std::int64_t shape[kMaxCopyRank];
  std::int64_t dst_strides[kMaxCopyRank];
  std::int64_t src_strides[kMaxCopyRank];
};

__device__ double load_as_double(const void* base, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f64:
      return static_cast<const double*>(base)[i];
    case DType::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case DType::f16:
      return __half2float(static_cast<const __half*>(base)[i]);
    case DType::i32:
      return static_cast<const std::int32_t*>(base)[i];
    case DType::i64:
      return static_cast<double>(static_cast<const std::int64_t*>(base)[i]);
    case DType::u8:
      return static_cast<const std::uint8_t*>(base)[i];
  }
  return 0.0;
}

template <class Int>
__device__ Int saturate(double v, double lo, double hi) {
  if (v != v) return 0;
  if (v <= lo) return static_cast<Int>(lo);
  if (v >= hi) return static_cast<Int>(hi);
  return static_cast<Int>(v);
}

__device__ void store_from_double(void* base, DType dtype, std::int64_t i, double v) {
  switch (dtype) {
    case DType::f32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      return;
    case DType::f64:
      static_cast<double*>(base)[i] = v;
      return;
    case DType::bf16:
      static_cast<__nv_bfloat16*>(base)[i] = __double2bfloat16(v);
      return;
    case DType::f16:
      static_cast<__half*>(base)[i] = __double2half(v);
      return;
    case DType::i32:
      static_cast<std::int32_t*>(base)[i] = saturate<std::int32_t>(v, -2147483648.0, 2147483647.0);
      return;
    case DType::i64:
      static_cast<std::int64_t*>(base)[i] = saturate<std::int64_t>(v, -9223372036854775808.0, 9223372036854774784.0);
      return;
    case DType::u8:
      static_cast<std::uint8_t*>(base)[i] = saturate<std::uint8_t>(v, 0.0, 255.0);
      return;
  }
}

__global__ void strided_copy_kernel(void* dst, DType dst_dtype, const void* src, DType src_dtype, double fill,
                                    Layout layout, std::int64_t count) {
  for (std::int64_t linear = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; linear < count;
       linear += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::int64_t rest = linear, dst_offset = 0, src_offset = 0;
    for (int d = layout.rank - 1; d >= 0; --d) {
      const std::int64_t index = rest % layout.shape[d];
      rest /= layout.shape[d];
      dst_offset += index * layout.dst_strides[d];
      src_offset += index * layout.src_strides[d];
    }
    const double value = src ? load_as_double(src, src_dtype, src_offset) : fill;
    store_from_double(dst, dst_dtype, dst_offset, value);
  }
}

constexpr int kZeroRangesPerLaunch = 64;

struct ZeroBatch {
  ZeroRange ranges[kZeroRangesPerLaunch];
};

// Range blockIdx.y; its blocks stride over it, 16-byte stores on the aligned interior and
// byte stores on the edges.
__global__ void zero_ranges_kernel(const __grid_constant__ ZeroBatch batch) {
  const ZeroRange range = batch.ranges[blockIdx.y];
  auto* bytes = static_cast<unsigned char*>(range.data);
  const auto address = reinterpret_cast<std::uintptr_t>(bytes);
  const std::uint64_t head = ((16 - address % 16) % 16) < range.bytes ? (16 - address % 16) % 16 : range.bytes;
  const std::uint64_t vectors = (range.bytes - head) / 16;
  const std::uint64_t tail_start = head + vectors * 16;
  const std::uint64_t thread = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
  const std::uint64_t threads = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  auto* body = reinterpret_cast<uint4*>(bytes + head);
  for (std::uint64_t i = thread; i < vectors; i += threads) body[i] = make_uint4(0, 0, 0, 0);
  if (thread < head) bytes[thread] = 0;
  if (thread < range.bytes - tail_start) bytes[tail_start + thread] = 0;
}

}  // namespace

void cuda_zero_ranges(const ZeroRange* ranges, std::size_t count, void* stream) {
  constexpr int threads = 256;
  for (std::size_t first = 0; first < count; first += kZeroRangesPerLaunch) {
    const std::size_t n = count - first < kZeroRangesPerLaunch ? count - first : kZeroRangesPerLaunch;
    ZeroBatch batch{};
    std::uint64_t largest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      batch.ranges[i] = ranges[first + i];
      largest = batch.ranges[i].bytes > largest ? batch.ranges[i].bytes : largest;
    }
    // Enough blocks that the largest range takes a few strides each; the rest exit early.
    const std::uint64_t wanted = (largest / 16 + 4 * threads - 1) / (4 * threads);
    const unsigned blocks = static_cast<unsigned>(wanted < 1 ? 1 : wanted > 1024 ? 1024 : wanted);
    zero_ranges_kernel<<<dim3(blocks, static_cast<unsigned>(n)), threads, 0, static_cast<cudaStream_t>(stream)>>>(
        batch);
    LONGNET_CHECK(cudaGetLastError());
  }
}

void cuda_strided_copy(const StridedCopy& copy, void* stream) {
  Layout layout{};
  layout.rank = copy.rank;
  std::int64_t count = 1;
  for (int d = 0; d < copy.rank; ++d) {
    layout.shape[d] = copy.shape[d];
    layout.dst_strides[d] = copy.dst_strides[d];
    layout.src_strides[d] = copy.src_strides[d];
    count *= copy.shape[d];
  }
  if (count == 0) return;
  const int threads = 256;
  const std::int64_t wanted = (count + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 * 16 ? wanted : 65535 * 16);
  strided_copy_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      copy.dst, copy.dst_dtype, copy.src, copy.src_dtype, copy.fill_value, layout, count);
  LONGNET_CHECK(cudaGetLastError());
}

}  // namespace longnet::detail
