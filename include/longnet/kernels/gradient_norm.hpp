// Helpers of gradient-norm clipping: the sum of squares of a tensor's elements (summed in
// double, in a fixed order independent of the thread count, so a run is reproducible) and
// in-place scaling. The global norm is sqrt of the sum over all parameters' gradients.
#pragma once

#include <cstddef>
#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

// sum_t sum_i x[t][i]^2 over `tensors` tensors (x[t], counts[t] contiguous elements each,
// all of one float dtype), summed in double in a fixed order, written to *total (a double
// in the tensors' memory: host memory for the CPU, device memory for CUDA) without waiting
// for it: a training step queues the norm and the clipped update that reads it there
// (adamw.hpp), and reads the norm itself at its end.
void sum_of_squares_many_into_cpu(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                  double* total);
void sum_of_squares_many_into_cuda(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                   double* total);

// The CUDA sum in its two parts, so that the partials of tensors whose values are final can
// be queued early (a backward's parameter gradients, layer by layer, beside the rest of the
// backward): tensor t's partials are partials[t * kSumOfSquaresPartialsPerTensor + b], each
// the same bits however the tensors are grouped into calls; the total adds `count` partials
// in order. Both together are sum_of_squares_many_into_cuda, bit for bit.
inline constexpr std::int64_t kSumOfSquaresPartialsPerTensor = 64;
void sum_of_squares_partials_cuda(const void* const* x, const std::int64_t* counts, std::size_t tensors, DType dtype,
                                  double* partials);
void ordered_sum_cuda(const double* partials, std::int64_t count, double* total);

// x[i] *= factor.
void scale_cpu(void* x, std::int64_t count, DType dtype, double factor);
void scale_cuda(void* x, std::int64_t count, DType dtype, double factor);

}  // namespace longnet::kernels
