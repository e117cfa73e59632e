// A counter-based random generator for kernels: every random number is a pure function of
// (key, counter), so a dropout mask can be regenerated in backward, on any device, in any
// thread order, and a resumed run draws the same numbers as an uninterrupted one.
// key = counter_key(seed, step, stream) names one use (a training step's dropout layer);
// counter is the element index.
#pragma once

#include <cstdint>

#include "longnet/kernels/host_device.hpp"

namespace longnet::kernels {

// SplitMix64's finaliser: a bijection of 64-bit words with full avalanche.
LONGNET_HOST_DEVICE inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The key of one use of randomness: distinct (seed, step, stream) give unrelated streams.
LONGNET_HOST_DEVICE inline std::uint64_t counter_key(std::uint64_t seed, std::uint64_t step, std::uint64_t stream) {
  return mix64(mix64(mix64(seed) ^ step) ^ (stream * 0xD1B54A32D192ED03ull));
}

// 64 random bits for element `counter` of the stream `key`.
LONGNET_HOST_DEVICE inline std::uint64_t counter_bits(std::uint64_t key, std::uint64_t counter) {
  return mix64(key ^ mix64(counter));
}

// Uniform in [0, 1) with 24 random bits: exactly representable in float and double, so
// CPU and CUDA compare the same numbers against the same threshold.
LONGNET_HOST_DEVICE inline float counter_uniform(std::uint64_t key, std::uint64_t counter) {
  return static_cast<float>(counter_bits(key, counter) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace longnet::kernels
