// Elementwise strided copy with dtype conversion, described by raw pointers so that the
// host loop (tensor_copy.cpp) and the CUDA kernel (cuda/tensor_copy.cu) share it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::detail {

constexpr int kMaxCopyRank = 8;

struct StridedCopy {
  void* dst = nullptr;
  const void* src = nullptr;  // nullptr for a fill
  DType dst_dtype = DType::f32;
  DType src_dtype = DType::f32;
  int rank = 0;
  std::int64_t shape[kMaxCopyRank] = {};
  std::int64_t dst_strides[kMaxCopyRank] = {};
  std::int64_t src_strides[kMaxCopyRank] = {};
  double fill_value = 0.0;  // used when src == nullptr
};

// A run of bytes to set to zero (zero_tensors).
struct ZeroRange {
  void* data = nullptr;
  std::uint64_t bytes = 0;
};

#ifdef LONGNET_WITH_CUDA
// Runs on the device of the pointers, on `stream` (a cudaStream_t).
void cuda_strided_copy(const StridedCopy& copy, void* stream);
// Zeroes every range (all on the current device) in ceil(count / 64) launches.
void cuda_zero_ranges(const ZeroRange* ranges, std::size_t count, void* stream);
#endif

}  // namespace longnet::detail
