// Exact (erf) GELU on the CPU, forward and backward (gelu.hpp).
#include <cmath>
#include <numbers>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/gelu.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void forward(const GeluParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const T inv_sqrt2 = static_cast<T>(1.0 / std::numbers::sqrt2);
  parallel_for(p.count, cpu::grain_for(16), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * inv_sqrt2));
  });
}

template <class T>
void backward(const GeluParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* dout = static_cast<const T*>(p.dout);
  T* dx = static_cast<T*>(p.dx);
  const T inv_sqrt2 = static_cast<T>(1.0 / std::numbers::sqrt2);
  const T inv_sqrt_2pi = static_cast<T>(1.0 / std::sqrt(2.0 * std::numbers::pi));
  parallel_for(p.count, cpu::grain_for(16), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const T cdf = T(0.5) * (T(1) + std::erf(x[i] * inv_sqrt2));
      const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x[i] * x[i]);
      dx[i] = dout[i] * (cdf + x[i] * pdf);
    }
  });
}

}  // namespace

void gelu_forward_cpu(const GeluParams& p) {
  cpu::dispatch_float(p.dtype, "gelu_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void gelu_backward_cpu(const GeluParams& p) {
  cpu::dispatch_float(p.dtype, "gelu_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
