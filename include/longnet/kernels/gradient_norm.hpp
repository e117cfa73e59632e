// Helpers of gradient-norm clipping: the sum of squares of a tensor's elements (summed in
// double, in a fixed order independent of the thread count, so a run is reproducible) and
// in-place scaling. The global norm is sqrt of the sum over all parameters' gradients.
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

// sum_i x[i]^2 over `count` contiguous elements of a float dtype.
double sum_of_squares_cpu(const void* x, std::int64_t count, DType dtype);
double sum_of_squares_cuda(const void* x, std::int64_t count, DType dtype);

// x[i] *= factor.
void scale_cpu(void* x, std::int64_t count, DType dtype, double factor);
void scale_cuda(void* x, std::int64_t count, DType dtype, double factor);

}  // namespace longnet::kernels
