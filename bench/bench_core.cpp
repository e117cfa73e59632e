// Tensor copies and dtype conversions on the host (bytes moved per second).
#include <benchmark/benchmark.h>

#include "longnet/core/tensor.hpp"

namespace {

void BM_ConvertF32ToBF16(benchmark::State& state) {
  const longnet::Tensor src = longnet::Tensor::randn({state.range(0)}, 1);
  longnet::Tensor dst = longnet::Tensor::empty({state.range(0)}, longnet::DType::bf16);
  for (auto _ : state) {
    dst.copy_from(src);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 6);
}
BENCHMARK(BM_ConvertF32ToBF16)->Arg(1 << 16)->Arg(1 << 22);

void BM_StridedCopy(benchmark::State& state) {
  const longnet::Tensor src = longnet::Tensor::randn({512, state.range(0)}, 1).transpose(0, 1);
  longnet::Tensor dst = longnet::Tensor::empty(src.shape(), longnet::DType::f32);
  for (auto _ : state) {
    dst.copy_from(src);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * 512 * state.range(0) * 8);
}
BENCHMARK(BM_StridedCopy)->Arg(512)->Arg(4096);

}  // namespace

BENCHMARK_MAIN();
