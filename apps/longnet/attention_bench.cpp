// Measurements of `longnet bench attention` (see attention_bench.hpp).
#include "attention_bench.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "longnet/core/memory_pool.hpp"
#include "longnet/core/tensor.hpp"
#include "measure.hpp"

namespace longnet::cli {
namespace {

constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();

struct Inputs {
  Tensor q, k, v;
};

Inputs make_inputs(const AttentionBenchSetup& s, std::int64_t seq_len) {
  const Shape q_shape{s.batch, seq_len, s.heads, s.head_dim};
  const Shape kv_shape{s.batch, seq_len, s.kv_heads, s.head_dim};
  return {Tensor::randn(q_shape, 1, s.dtype, s.device), Tensor::randn(kv_shape, 2, s.dtype, s.device),
          Tensor::randn(kv_shape, 3, s.dtype, s.device)};
}

Tensor make_output_gradient(const AttentionBenchSetup& s, std::int64_t seq_len) {
  return Tensor::randn({s.batch, seq_len, s.heads, s.head_dim}, 4, s.dtype, s.device);
}

// Runs `work` warmup + repeat times and returns the median of the timed runs.
double median_ms(const AttentionBenchSetup& s, const std::function<void()>& work) {
  std::vector<double> times;
  for (int run = 0; run < s.warmup + s.repeat; ++run) {
    const double ms = time_ms(s.device, work);
    if (run >= s.warmup) times.push_back(ms);
  }
  return median(times);
}

// Peak bytes in use above `baseline` since the pool's last reset_stats().
double peak_above(const MemoryPool& pool, std::size_t baseline) {
  return static_cast<double>(pool.stats().peak_in_use) - static_cast<double>(baseline);
}

}  // namespace

bool is_out_of_memory(const Error& error) {
  const std::string message = error.what();
  return message.find("out of memory") != std::string::npos ||
         (message.find("out of ") != std::string::npos && message.find(" memory") != std::string::npos);
}

AttentionBenchResult run_attention_bench(const AttentionBenchSetup& s, std::int64_t seq_len) {
  require(s.repeat >= 1, "--repeat = ", s.repeat, ": must be >= 1");
  require(s.warmup >= 0, "--warmup = ", s.warmup, ": must be >= 0");
  AttentionBenchResult result;
  result.name = s.name;
  result.seq_len = seq_len;
  result.forward_flops = dilated_attention_forward_flops(s.config, s.batch, seq_len, s.heads, s.head_dim);
  result.forward_backward_ms = result.peak_forward_backward_bytes = kNotMeasured;
  MemoryPool& pool = memory_pool(s.device);
  try {
    wait_for(s.device);
    const std::size_t baseline = pool.stats().in_use;
    pool.reset_stats();
    const Inputs in = make_inputs(s, seq_len);
    result.forward_ms = median_ms(s, [&] { (void)dilated_attention_forward(s.config, in.q, in.k, in.v); });
    result.peak_forward_bytes = peak_above(pool, baseline);
    if (s.backward) {
      const Tensor dout = make_output_gradient(s, seq_len);
      pool.reset_stats();
      result.forward_backward_ms = median_ms(s, [&] {
        const AttentionOutput out = dilated_attention_forward(s.config, in.q, in.k, in.v);
        (void)dilated_attention_backward(s.config, in.q, in.k, in.v, out, dout);
      });
      result.peak_forward_backward_bytes = peak_above(pool, baseline);
    }
  } catch (const Error& error) {
    if (!is_out_of_memory(error)) throw;
    result.failure = error.what();
    result.forward_ms = result.forward_backward_ms = kNotMeasured;
    result.peak_forward_bytes = result.peak_forward_backward_bytes = kNotMeasured;
    pool.release_cached();
  }
  return result;
}

LongestSequence find_longest_sequence(const AttentionBenchSetup& s, const LongestSequenceSearch& search) {
  const std::int64_t g = search.granularity;
  require(g >= 1, "granularity = ", g, ": must be >= 1");
  require(search.start >= g, "start = ", search.start, ": must be >= the granularity ", g);
  const std::int64_t limit = search.limit / g * g;
  require(limit >= search.start, "limit = ", search.limit, ": must be >= the first length tried, ", search.start);
  MemoryPool& pool = memory_pool(s.device);
  LongestSequence answer;

  // Whether one pass at n fits; `peak` receives its peak memory.
  auto fits = [&](std::int64_t n, double& peak) {
    ++answer.attempts;
    if (search.progress) search.progress(str("trying N = ", n, " (attempt ", answer.attempts, ")"));
    try {
      wait_for(s.device);
      const std::size_t baseline = pool.stats().in_use;
      pool.reset_stats();
      const Inputs in = make_inputs(s, n);
      const AttentionOutput out = dilated_attention_forward(s.config, in.q, in.k, in.v);
      if (search.with_backward) {
        (void)dilated_attention_backward(s.config, in.q, in.k, in.v, out, make_output_gradient(s, n));
      }
      wait_for(s.device);
      peak = peak_above(pool, baseline);
    } catch (const Error& error) {
      if (!is_out_of_memory(error)) throw;
      pool.release_cached();
      return false;
    }
    return !search.memory_limit || peak <= *search.memory_limit;
  };

  std::int64_t fit = 0, fail = 0;  // largest known fit, smallest known failure (0: none)
  double peak = 0;
  for (std::int64_t n = search.start / g * g;;) {
    if (!fits(n, peak)) {
      fail = n;
      break;
    }
    fit = n;
    answer.peak_bytes = peak;
    if (n >= limit) {
      answer.reached_limit = true;
      break;
    }
    n = std::min(2 * n, limit);
  }
  while (fail != 0 && fail - fit > g) {
    const std::int64_t middle = (fit + (fail - fit) / 2) / g * g;
    if (middle <= fit) break;
    if (fits(middle, peak)) {
      fit = middle;
      answer.peak_bytes = peak;
    } else {
      fail = middle;
    }
  }
  answer.seq_len = fit;
  return answer;
}

}  // namespace longnet::cli
