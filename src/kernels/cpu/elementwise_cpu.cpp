// out = a + alpha * b on the CPU (elementwise.hpp).
#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/elementwise.hpp"

namespace longnet::kernels {

void add_cpu(const AddParams& p) {
  cpu::dispatch_float(p.dtype, "add", [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    T* out = static_cast<T*>(p.out);
    const T alpha = static_cast<T>(p.alpha);
    parallel_for(p.count, cpu::grain_for(1), [&](std::int64_t begin, std::int64_t end) {
      if (p.alpha == 1.0) {
        for (std::int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
      } else {
        for (std::int64_t i = begin; i < end; ++i) out[i] = a[i] + alpha * b[i];
      }
    });
  });
}

}  // namespace longnet::kernels
