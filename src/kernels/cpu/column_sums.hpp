// Deterministic column sums on the CPU: double partial sums over fixed chunks of
// kReductionChunk rows, the chunks added in order, so the result does not depend on the
// thread count. A Linear's bias gradient and the attention's gradient column sums (a fused
// qkv projection's bias gradient) take the same order, hence the same bits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"

namespace longnet::kernels::cpu {

// out[c] += sum_r matrix[r * row_stride + c] over a (rows, columns) matrix.
template <class T>
void add_column_sums(const T* matrix, std::int64_t rows, std::int64_t columns, std::int64_t row_stride, T* out) {
  if (rows <= 0 || columns <= 0) return;
  const std::int64_t chunks = (rows + kReductionChunk - 1) / kReductionChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks * columns), 0.0);
  parallel_for(chunks, grain_for(kReductionChunk * columns), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t chunk = begin; chunk < end; ++chunk) {
      double* sum = partial.data() + chunk * columns;
      const std::int64_t row_end = std::min(rows, (chunk + 1) * kReductionChunk);
      for (std::int64_t r = chunk * kReductionChunk; r < row_end; ++r) {
        const T* row = matrix + r * row_stride;
        for (std::int64_t c = 0; c < columns; ++c) sum[c] += row[c];
      }
    }
  });
  for (std::int64_t c = 0; c < columns; ++c) {
    double total = 0;
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk)
      total += partial[static_cast<std::size_t>(chunk * columns + c)];
    out[c] += static_cast<T>(total);
  }
}

}  // namespace longnet::kernels::cpu
