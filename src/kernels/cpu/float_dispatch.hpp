// Runs a templated CPU kernel body for the dtype of its parameters: float or double.
// The model kernels on the CPU compute in the storage precision (f32, or f64 for exact
// gradient checks); half precision is a CUDA matter.
#pragma once

#include <cstdint>
#include <string_view>

#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"

namespace longnet::kernels::cpu {

template <class Body>
void dispatch_float(DType dtype, std::string_view kernel, Body&& body) {
  if (dtype == DType::f32) {
    body(float{});
  } else if (dtype == DType::f64) {
    body(double{});
  } else {
    throw Error(str(kernel, " on the CPU: dtype = ", dtype_name(dtype), ": must be f32 or f64"));
  }
}

// The grain of a parallel loop whose items cost about `work_per_item` element operations:
// enough items per chunk that a parallel region pays for itself (on a loaded machine an
// OpenMP region for a few hundred elements costs more than the work).
inline std::int64_t grain_for(std::int64_t work_per_item) {
  constexpr std::int64_t kWorkPerChunk = 32768;
  return work_per_item >= kWorkPerChunk ? 1 : kWorkPerChunk / (work_per_item > 0 ? work_per_item : 1);
}

// Rows per reduction chunk: partial sums are taken over fixed chunks of rows and added in
// chunk order, so results do not depend on how many threads run.
inline constexpr std::int64_t kReductionChunk = 64;

}  // namespace longnet::kernels::cpu
