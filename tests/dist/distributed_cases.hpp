// Seeded random sequence-parallel problems for the dist tests: a random dilated-attention
// problem (tests/support/random_problems.hpp) split over P ranks with uneven contiguous
// slices (random cut points) or the zigzag layout, plus the helpers that compare a
// distributed result, put back together, with the single-process one.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "longnet/dist/sequence_layout.hpp"
#include "support/random_problems.hpp"

namespace longnet::testing {

struct DistributedCase {
  DilatedProblem problem;
  SequenceOrder order = SequenceOrder::contiguous;
  std::vector<std::int64_t> lengths;  // contiguous: each rank's slice

  SequenceLayout layout() const {
    return order == SequenceOrder::zigzag ? SequenceLayout::zigzag(problem.seq_len, static_cast<int>(lengths.size()))
                                          : SequenceLayout::contiguous(lengths);
  }
};

// Small shapes (the tests run 4 processes on 2 cores), N >= 2P, patterns whose segments
// span anything from part of one slice to all of them.
inline DistributedCase random_distributed_case(std::uint64_t seed, int world_size, std::int64_t max_seq_len = 160) {
  ProblemLimits limits;
  limits.max_seq_len = max_seq_len;
  limits.max_head_dim = 24;
  limits.max_heads = 6;
  limits.max_patterns = 4;
  DistributedCase c;
  c.problem = random_problem(seed, limits);
  std::mt19937_64 rng(seed * 7919 + static_cast<std::uint64_t>(world_size));
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  const std::int64_t P = world_size;
  if (c.problem.seq_len < 2 * P) c.problem.seq_len = uniform(2 * P, 2 * P + 40);
  const std::int64_t N = c.problem.seq_len;
  c.order = uniform(0, 3) == 0 ? SequenceOrder::zigzag : SequenceOrder::contiguous;
  // Uneven slices: P - 1 distinct cut points in [1, N - 1].
  std::vector<std::int64_t> cuts;
  while (static_cast<std::int64_t>(cuts.size()) < P - 1) {
    const std::int64_t cut = uniform(1, N - 1);
    if (std::find(cuts.begin(), cuts.end(), cut) == cuts.end()) cuts.push_back(cut);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.insert(cuts.begin(), 0);
  cuts.push_back(N);
  for (std::int64_t r = 0; r < P; ++r) c.lengths.push_back(cuts[r + 1] - cuts[r]);
  if (c.order == SequenceOrder::zigzag) c.lengths = SequenceLayout::zigzag(N, world_size).local_lengths();
  return c;
}

// A random case the tensor-core kernels take (head_dim a multiple of 8), with sequences
// long enough for several 64-row tiles per rank.
inline DistributedCase cuda_distributed_case(std::uint64_t seed, int world_size) {
  DistributedCase c = random_distributed_case(seed, world_size, 900);
  const std::int64_t dims[] = {8, 16, 32, 64, 64, 128};
  c.problem.head_dim = dims[seed % 6];
  return c;
}

inline std::string describe(const DistributedCase& c) {
  std::string slices;
  for (std::int64_t n : c.lengths) slices += str(slices.empty() ? "" : ",", n);
  return str(describe(c.problem), " order=", to_string(c.order), " slices=", slices);
}

}  // namespace longnet::testing
