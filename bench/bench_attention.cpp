// Dilated attention on the CPU at D = 64 (forward; forward + backward), in GFLOP/s by
// DESIGN 4's rule (forward = 4 * D * attended pairs, backward = 2.5 x forward), next to
// OpenBLAS sgemm measured in the same program: the yardstick of issue 3's CPU target
// (forward >= 40% of sgemm's rate, backward >= 30%, at N >= 16K).
//
// Configuration (BENCHMARKS.md, scaled to a CPU): batch 1, H = 8, D = 64, patterns
// w = [2048, 4096, 8192], r = [1, 2, 4], LongNet mode, non-causal, f32; N = range(0).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdint>
#include <vector>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/tensor.hpp"

namespace {

constexpr std::int64_t kHeads = 8;
constexpr std::int64_t kHeadDim = 64;

longnet::DilatedAttentionConfig benchmark_config() {
  longnet::DilatedAttentionConfig config;
  config.segment_lengths = {2048, 4096, 8192};
  config.dilation_rates = {1, 2, 4};
  return config;
}

struct Inputs {
  longnet::Tensor q, k, v, dout;
  explicit Inputs(std::int64_t n)
      : q(longnet::Tensor::randn({1, n, kHeads, kHeadDim}, 1)),
        k(longnet::Tensor::randn({1, n, kHeads, kHeadDim}, 2)),
        v(longnet::Tensor::randn({1, n, kHeads, kHeadDim}, 3)),
        dout(longnet::Tensor::randn({1, n, kHeads, kHeadDim}, 4)) {}
};

void set_rate(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}

void BM_DilatedForward(benchmark::State& state) {
  const longnet::DilatedAttentionConfig config = benchmark_config();
  const Inputs in(state.range(0));
  for (auto _ : state) {
    const longnet::AttentionOutput out = longnet::dilated_attention_forward(config, in.q, in.k, in.v);
    benchmark::DoNotOptimize(out.out.data());
  }
  set_rate(state, longnet::dilated_attention_forward_flops(config, 1, state.range(0), kHeads, kHeadDim));
}
BENCHMARK(BM_DilatedForward)->Arg(4096)->Arg(16384)->Arg(32768)->Unit(benchmark::kMillisecond)->UseRealTime();

// The backward alone (the forward it needs runs outside the timed region).
void BM_DilatedBackward(benchmark::State& state) {
  const longnet::DilatedAttentionConfig config = benchmark_config();
  const Inputs in(state.range(0));
  const longnet::AttentionOutput out = longnet::dilated_attention_forward(config, in.q, in.k, in.v);
  for (auto _ : state) {
    const longnet::AttentionGradients grads =
        longnet::dilated_attention_backward(config, in.q, in.k, in.v, out, in.dout);
    benchmark::DoNotOptimize(grads.dq.data());
  }
  set_rate(state, 2.5 * longnet::dilated_attention_forward_flops(config, 1, state.range(0), kHeads, kHeadDim));
}
BENCHMARK(BM_DilatedBackward)->Arg(4096)->Arg(16384)->Arg(32768)->Unit(benchmark::kMillisecond)->UseRealTime();

// C (n x n) = A (n x n) B (n x n) on all cores: OpenBLAS's best case on this machine.
void BM_Sgemm(benchmark::State& state) {
  const auto n = static_cast<int>(state.range(0));
  const std::vector<float> a = longnet::Tensor::randn({n, n}, 5).to_vector<float>();
  const std::vector<float> b = longnet::Tensor::randn({n, n}, 6).to_vector<float>();
  std::vector<float> c(static_cast<std::size_t>(n) * static_cast<std::size_t>(n));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_rate(state, 2.0 * n * static_cast<double>(n) * n);
}
BENCHMARK(BM_Sgemm)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
