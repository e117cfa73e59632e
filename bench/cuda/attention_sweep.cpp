// Times dilated and dense attention on a CUDA device in the configuration of
// BENCHMARKS.md (bf16, batch 1, H = 8, D = 64, w = [2048, 4096, 8192], r = [1, 2, 4]):
// forward and forward+backward medians with CUDA events after warm-up, TFLOP/s by
// DESIGN 4's rule (backward = 2.5 x forward), peak memory from the pool's statistics.
// Usage: cuda_attention_sweep [--mode head_groups|longnet|dense] [--causal] [--deterministic]
//                             [--seq 8192,32768,...] [--repeat R] [--no-backward] [--json FILE]
//                             [--max-seq] (longest N that fits, forward and forward+backward)
//                             [--heads H] [--head-dim D] [--segments w,...] [--dilations r,...]
// Issue 5's training attention: --mode longnet --causal --seq 32768 --heads 12
//   --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/cuda/cuda_timing.hpp"
#include "longnet/longnet.hpp"

namespace {

using namespace longnet;
using bench::median_ms;

struct Options {
  std::string mode = "head_groups";
  bool causal = false, deterministic = false, backward = true;
  std::vector<std::int64_t> seq = {8192, 32768, 131072, 524288, 1048576};
  int repeat = 10;
  std::int64_t heads = 8, head_dim = 64;
  // BENCHMARKS.md's patterns unless --segments / --dilations (e.g. issue 5's training ones).
  std::vector<std::int64_t> segments = {2048, 4096, 8192}, dilations = {1, 2, 4};
  std::string json;
  bool max_seq = false;
};

// Random-looking inputs of any size without generating them on the host: one 2^16-row
// random block copied along the sequence on the device.
Tensor device_random(const Shape& shape, std::uint64_t seed, Device device) {
  Tensor out = Tensor::empty(shape, DType::bf16, device);
  const std::int64_t block = std::min<std::int64_t>(shape[1], 1 << 16);
  const Tensor source = Tensor::randn({shape[0], block, shape[2], shape[3]}, seed, DType::bf16, device);
  for (std::int64_t start = 0; start < shape[1]; start += block) {
    const std::int64_t end = std::min(shape[1], start + block);
    out.slice(1, start, end).copy_from(source.slice(1, 0, end - start));
  }
  return out;
}

// Whether one forward (and backward) at N fits, and its peak memory in GiB.
bool fits(const DilatedAttentionConfig& config, std::int64_t N, const Options& o, bool backward, double& peak) {
  const Device gpu = Device::cuda(0);
  MemoryPool& pool = memory_pool(gpu);
  try {
    pool.reset_stats();
    const Shape shape{1, N, o.heads, o.head_dim};
    Tensor q = device_random(shape, 1, gpu), k = device_random(shape, 2, gpu), v = device_random(shape, 3, gpu);
    AttentionOutput f = dilated_attention_forward(config, q, k, v);
    if (backward) {
      Tensor dout = device_random(shape, 4, gpu);
      (void)dilated_attention_backward(config, q, k, v, f, dout);
    }
    synchronize_device(0);
    peak = static_cast<double>(pool.stats().peak_in_use) / (1u << 30);
    return true;
  } catch (const Error& e) {
    synchronize_device(0);
    return false;
  }
}

// Doubling from 1M, then bisection to 256K tokens.
void find_max_seq(const DilatedAttentionConfig& config, const Options& o, bool backward) {
  std::int64_t good = 0, bad = 0;
  double peak = 0, good_peak = 0;
  for (std::int64_t n = 1 << 20;; n *= 2) {
    if (fits(config, n, o, backward, peak)) {
      good = n;
      good_peak = peak;
    } else {
      bad = n;
      break;
    }
    memory_pool(Device::cuda(0)).release_cached();
  }
  while (bad - good > (1 << 18)) {
    const std::int64_t mid = (good + bad) / 2 / (1 << 18) * (1 << 18);
    memory_pool(Device::cuda(0)).release_cached();
    if (fits(config, mid, o, backward, peak)) {
      good = mid;
      good_peak = peak;
    } else {
      bad = mid;
    }
  }
  memory_pool(Device::cuda(0)).release_cached();
  std::printf("longest N %s: %lld tokens (peak %.2f GiB; %lld does not fit)\n",
              backward ? "forward+backward" : "forward", static_cast<long long>(good), good_peak,
              static_cast<long long>(bad));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const CLI::Range kPositive(std::int64_t{1}, std::int64_t{1} << 40, "POSITIVE");
  CLI::App app{"Dilated attention on the GPU at BENCHMARKS.md's configurations: ms, TFLOP/s, peak memory"};
  app.add_option("--mode", o.mode, "head_groups, longnet or dense");
  app.add_flag("--causal", o.causal, "causal masking");
  app.add_flag("--deterministic", o.deterministic, "the bitwise-repeatable backward");
  app.add_flag("--no-backward", [&](std::int64_t) { o.backward = false; }, "forward only");
  app.add_option("--seq", o.seq, "sequence lengths, comma-separated")->delimiter(',')->check(kPositive);
  app.add_option("--repeat", o.repeat, "CUDA-event timings a median is taken of")->check(kPositive);
  app.add_option("--heads", o.heads, "query heads")->check(kPositive);
  app.add_option("--head-dim", o.head_dim, "head dimension")->check(kPositive);
  app.add_option("--segments", o.segments, "segment lengths w, comma-separated")->delimiter(',');
  app.add_option("--dilations", o.dilations, "dilation rates r, comma-separated")->delimiter(',');
  app.add_option("--json", o.json, "also write the table as JSON here");
  app.add_flag("--max-seq", o.max_seq, "the longest N that fits, forward and forward+backward");
  CLI11_PARSE(app, argc, argv);
  try {
    DilatedAttentionConfig config;
    if (o.mode == "dense") {
      config = DilatedAttentionConfig::dense(o.causal);
    } else {
      config.segment_lengths = o.segments;
      config.dilation_rates = o.dilations;
      config.mode = parse_dilated_mode(o.mode);
      config.causal = o.causal;
    }
    config.deterministic = o.deterministic;
    const Device gpu = Device::cuda(0);
    if (o.max_seq) {
      find_max_seq(config, o, false);
      if (o.backward) find_max_seq(config, o, true);
      return 0;
    }
    std::ostringstream json;
    json << "[";
    std::printf("%-10s %10s %12s %10s %14s %12s %12s\n", "N", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TF/s",
                "peak fwd GiB", "peak f+b GiB");
    for (std::size_t n = 0; n < o.seq.size(); ++n) {
      const std::int64_t N = o.seq[n];
      const Shape shape{1, N, o.heads, o.head_dim};
      MemoryPool& pool = memory_pool(gpu);
      Tensor q = device_random(shape, 1, gpu);
      Tensor k = device_random(shape, 2, gpu);
      Tensor v = device_random(shape, 3, gpu);
      const double flops = dilated_attention_forward_flops(config, 1, N, o.heads, o.head_dim);
      for (int w = 0; w < 2; ++w) (void)dilated_attention_forward(config, q, k, v);
      synchronize_device(0);
      pool.reset_stats();
      const std::size_t base = pool.stats().in_use;
      const double fwd = median_ms(o.repeat, [&] { (void)dilated_attention_forward(config, q, k, v); });
      const double peak_fwd = static_cast<double>(pool.stats().peak_in_use) / (1u << 30);
      double both = 0, peak_both = 0;
      if (o.backward) {
        Tensor dout = device_random(shape, 4, gpu);
        auto step = [&] {
          const AttentionOutput f = dilated_attention_forward(config, q, k, v);
          (void)dilated_attention_backward(config, q, k, v, f, dout);
        };
        step();
        synchronize_device(0);
        pool.reset_stats();
        both = median_ms(o.repeat, step);
        peak_both = static_cast<double>(pool.stats().peak_in_use) / (1u << 30);
      }
      (void)base;
      std::printf("%-10lld %10.3f %12.1f %10.3f %14.1f %12.2f %12.2f\n", static_cast<long long>(N), fwd,
                  flops / fwd / 1e9, both, both > 0 ? 3.5 * flops / both / 1e9 : 0.0, peak_fwd, peak_both);
      std::fflush(stdout);
      json << (n ? "," : "") << "{\"N\":" << N << ",\"forward_ms\":" << fwd
           << ",\"forward_tflops\":" << flops / fwd / 1e9 << ",\"forward_backward_ms\":" << both
           << ",\"forward_backward_tflops\":" << (both > 0 ? 3.5 * flops / both / 1e9 : 0.0)
           << ",\"peak_forward_gib\":" << peak_fwd << ",\"peak_forward_backward_gib\":" << peak_both << "}";
    }
    json << "]\n";
    if (!o.json.empty()) write_text_atomically(o.json, json.str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
