// What `longnet bench attention` measures for one attention at one sequence length N:
// the median wall-clock time of a forward and of a forward + backward (random inputs
// (B, N, H, D) and (B, N, Hk, D), random output gradient), the peak memory of each (from
// the device's memory pool: its high-water mark above what was in use before the inputs
// were made), and the work by DESIGN 4's rule (forward = 4 * D * attended pairs,
// backward = 2.5 x forward). Also the search for the longest N that fits in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/dtype.hpp"

namespace longnet::cli {

struct AttentionBenchSetup {
  std::string name;  // "dilated" or "dense": what the report calls it
  DilatedAttentionConfig config;
  std::int64_t batch = 1, heads = 8, kv_heads = 8, head_dim = 64;
  DType dtype = DType::f32;
  Device device;
  int warmup = 1;
  int repeat = 3;
  bool backward = true;  // also time forward + backward
};

struct AttentionBenchResult {
  std::string name;
  std::int64_t seq_len = 0;
  double forward_flops = 0;        // DESIGN 4; forward + backward is 3.5x this
  double forward_ms = 0;           // medians
  double forward_backward_ms = 0;  // NaN when not measured
  double peak_forward_bytes = 0;
  double peak_forward_backward_bytes = 0;  // NaN when not measured
  std::string failure;                     // "out of memory: ..." when the run did not fit (times are NaN then)
};

// Runs `setup` at sequence length `seq_len`. An out-of-memory Error is reported in
// `failure`; any other Error propagates.
AttentionBenchResult run_attention_bench(const AttentionBenchSetup& setup, std::int64_t seq_len);

// Whether an Error is a memory pool's "out of ... memory" (or CUDA's "out of memory").
bool is_out_of_memory(const Error& error);

struct LongestSequenceSearch {
  bool with_backward = false;                        // the pass that must fit: forward, or forward + backward
  std::int64_t start = 8192;                         // first N tried; then doubling, then bisection
  std::int64_t limit = 0;                            // largest N tried
  std::int64_t granularity = 1024;                   // the answer is a multiple of this
  std::optional<double> memory_limit;                // bytes; a run whose peak exceeds it does not fit
  std::function<void(const std::string&)> progress;  // optional: one line per attempt
};

struct LongestSequence {
  std::int64_t seq_len = 0;    // 0: not even `start` fits
  double peak_bytes = 0;       // at seq_len
  bool reached_limit = false;  // the limit fits: the true longest may be larger
  int attempts = 0;
};

// The longest N (a multiple of the granularity) whose pass fits: doubling from `start`
// until a run fails, then bisection between the last fit and the first failure.
LongestSequence find_longest_sequence(const AttentionBenchSetup& setup, const LongestSequenceSearch& search);

}  // namespace longnet::cli
