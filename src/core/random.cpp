// Seeded random tensors from a counter-based generator: element i of a tensor made with
// seed s is a pure function of (s, i), so every device and run sees the same values.
#include <cmath>
#include <numbers>

#include "core/dtype_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet {
namespace {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from 53 random bits.
double unit(std::uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

// Each value is computed in double and rounded once into a host tensor of the float dtype
// asked for (the rounding Tensor::to would apply to an f64 tensor), then copied to the
// device: no f64 buffer of 8 bytes an element, which for the inputs of a 16M-token
// attention benchmark was 8x the device tensor in host memory plus a conversion pass.
template <class Generate>
Tensor generate(const Shape& shape, DType dtype, Device device, Generate&& value_at) {
  Tensor host = Tensor::empty(shape, is_floating(dtype) ? dtype : DType::f64);
  detail::dispatch_dtype(host.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* out = host.data<T>();
    parallel_for(host.numel(), 4096, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) out[i] = T(value_at(static_cast<std::uint64_t>(i)));
    });
  });
  return host.to(device, dtype);
}

}  // namespace

Tensor Tensor::randn(const Shape& shape, std::uint64_t seed, DType dtype, Device device) {
  const std::uint64_t key = mix(seed ^ 0x5EEDull);
  return generate(shape, dtype, device, [key](std::uint64_t i) {
    // Box-Muller on two independent uniforms derived from (key, i).
    const double u1 = unit(mix(key + 2 * i));
    const double u2 = unit(mix(key + 2 * i + 1));
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  });
}

Tensor Tensor::uniform(const Shape& shape, std::uint64_t seed, double lo, double hi, DType dtype, Device device) {
  require(lo < hi, "Tensor::uniform: lo = ", lo, " must be < hi = ", hi);
  const std::uint64_t key = mix(seed ^ 0x0C0FFEEull);
  return generate(shape, dtype, device, [=](std::uint64_t i) { return lo + (hi - lo) * unit(mix(key + i)); });
}

}  // namespace longnet
