// Gradient-norm helpers on the CPU (gradient_norm.hpp). The sum of squares is taken over
// fixed chunks and the chunks are added in order: the same bits whatever the thread count.
#include <vector>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/gradient_norm.hpp"

namespace longnet::kernels {
namespace {

// sum_i x[i]^2 over `count` contiguous elements.
double sum_of_squares(const void* x, std::int64_t count, DType dtype) {
  double total = 0;
  cpu::dispatch_float(dtype, "sum_of_squares", [&](auto tag) {
    using T = decltype(tag);
    const T* data = static_cast<const T*>(x);
    constexpr std::int64_t kChunk = 16384;
    const std::int64_t chunks = (count + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    parallel_for(chunks, 2, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t c = begin; c < end; ++c) {
        double sum = 0;
        const std::int64_t stop = std::min(count, (c + 1) * kChunk);
        for (std::int64_t i = c * kChunk; i < stop; ++i) sum += static_cast<double>(data[i]) * data[i];
        partial[static_cast<std::size_t>(c)] = sum;
      }
    });
    for (double s : partial) total += s;
  });
  return total;
}

}  // namespace

void sum_of_squares_many_into_cpu(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                  double* total) {
  double sum = 0;
  for (std::size_t t = 0; t < tensors; ++t) sum += sum_of_squares(x[t], counts[t], dtype);
  *total = sum;
}

void scale_cpu(void* x, std::int64_t count, DType dtype, double factor) {
  cpu::dispatch_float(dtype, "scale", [&](auto tag) {
    using T = decltype(tag);
    T* data = static_cast<T*>(x);
    const T f = static_cast<T>(factor);
    parallel_for(count, cpu::grain_for(1), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) data[i] *= f;
    });
  });
}

}  // namespace longnet::kernels
