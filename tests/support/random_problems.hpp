// Seeded random dilated-attention problems for tests: shapes, patterns, modes and the
// matching DilatedAttentionConfig and input tensors.
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "longnet/attention/dilated_attention.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {

struct ProblemLimits {
  std::int64_t max_batch = 2;
  std::int64_t max_seq_len = 600;
  std::int64_t max_heads = 8;
  std::int64_t max_head_dim = 80;
  std::int64_t max_patterns = 5;
  std::int64_t max_rate = 16;
};

inline DilatedProblem random_problem(std::uint64_t seed, const ProblemLimits& limits = {}) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  DilatedProblem p;
  p.batch = uniform(1, limits.max_batch);
  // Favour small N but reach the limit.
  p.seq_len = uniform(0, 3) == 0 ? uniform(1, 16) : uniform(1, limits.max_seq_len);
  p.mode = uniform(0, 1) ? kernels::DilatedMode::longnet : kernels::DilatedMode::head_groups;
  const std::int64_t patterns = uniform(1, limits.max_patterns);
  p.heads = uniform(p.mode == kernels::DilatedMode::head_groups ? patterns : 1, std::max(limits.max_heads, patterns));
  std::vector<std::int64_t> divisors;
  for (std::int64_t d = 1; d <= p.heads; ++d) {
    if (p.heads % d == 0) divisors.push_back(d);
  }
  p.kv_heads = divisors[static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(divisors.size()) - 1))];
  p.head_dim = uniform(0, 2) == 0 ? uniform(1, 8) : uniform(1, limits.max_head_dim);
  for (std::int64_t i = 0; i < patterns; ++i) {
    const std::int64_t w = uniform(1, 2 * p.seq_len + 2);
    const std::int64_t r = uniform(1, std::min<std::int64_t>(w, limits.max_rate));
    p.patterns.push_back({w, r});
  }
  p.causal = uniform(0, 1) == 1;
  // Any scale, around the usual 1/sqrt(D) (scores of unit variance) times 0.2 to 2.5.
  p.scale = std::uniform_real_distribution<double>(0.2, 2.5)(rng) / std::sqrt(static_cast<double>(p.head_dim));
  return p;
}

inline DilatedAttentionConfig config_of(const DilatedProblem& p) {
  DilatedAttentionConfig c;
  for (const auto& pattern : p.patterns) {
    c.segment_lengths.push_back(pattern.segment_length);
    c.dilation_rates.push_back(pattern.dilation_rate);
  }
  c.mode = p.mode;
  c.causal = p.causal;
  c.scale = p.scale;
  return c;
}

inline std::string describe(const DilatedProblem& p) {
  std::string s = str("B=", p.batch, " N=", p.seq_len, " H=", p.heads, " Hk=", p.kv_heads, " D=", p.head_dim,
                      " mode=", p.mode == kernels::DilatedMode::longnet ? "longnet" : "head_groups",
                      p.causal ? " causal" : "", " scale=", p.scale, " patterns=");
  for (const auto& pattern : p.patterns) s += str("(", pattern.segment_length, ",", pattern.dilation_rate, ")");
  return s;
}

struct ProblemTensors {
  Tensor q, k, v, dout;
};

inline ProblemTensors random_tensors(const DilatedProblem& p, std::uint64_t seed, DType dtype = DType::f32,
                                     Device device = Device::cpu()) {
  return {Tensor::randn({p.batch, p.seq_len, p.heads, p.head_dim}, seed * 4 + 0, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.kv_heads, p.head_dim}, seed * 4 + 1, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.kv_heads, p.head_dim}, seed * 4 + 2, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.heads, p.head_dim}, seed * 4 + 3, dtype, device)};
}

}  // namespace longnet::testing
