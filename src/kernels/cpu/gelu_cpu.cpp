// Exact (erf) GELU on the CPU, forward and backward (gelu.hpp).
#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/gelu.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void forward(const GeluParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  parallel_for(p.count, cpu::grain_for(16), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = gelu_value(x[i]);
  });
}

template <class T>
void backward(const GeluParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* dout = static_cast<const T*>(p.dout);
  T* dx = static_cast<T*>(p.dx);
  parallel_for(p.count, cpu::grain_for(16), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) dx[i] = dout[i] * gelu_derivative(x[i]);
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
