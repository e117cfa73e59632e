// Counter-based inverted dropout on the CPU (dropout.hpp): the mask of element i is
// counter_uniform(key, i) >= probability, recomputed in backward.
#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/dropout.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void apply(std::int64_t count, double probability, std::uint64_t key, const T* in, T* out) {
  const T keep_scale = static_cast<T>(1.0 / (1.0 - probability));
  const float threshold = static_cast<float>(probability);
  parallel_for(count, cpu::grain_for(8), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const bool keep = counter_uniform(key, static_cast<std::uint64_t>(i)) >= threshold;
      out[i] = keep ? in[i] * keep_scale : T(0);
    }
  });
}

}  // namespace

void dropout_forward_cpu(const DropoutParams& p) {
  cpu::dispatch_float(p.dtype, "dropout_forward", [&](auto tag) {
    using T = decltype(tag);
    apply(p.count, p.probability, p.key, static_cast<const T*>(p.x), static_cast<T*>(p.out));
  });
}

void dropout_backward_cpu(const DropoutParams& p) {
  cpu::dispatch_float(p.dtype, "dropout_backward", [&](auto tag) {
    using T = decltype(tag);
    apply(p.count, p.probability, p.key, static_cast<const T*>(p.dout), static_cast<T*>(p.dx));
  });
}

}  // namespace longnet::kernels
