// The CUDA timing harnesses' clock: the median of `repeat` CUDA-event timings of body()
// on `stream` (default: the legacy stream, where the library's kernels run unless told
// otherwise), after `warmup` untimed calls.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

namespace longnet::bench {

template <class F>
double median_ms(int repeat, F&& body, int warmup = 0, cudaStream_t stream = nullptr) {
  for (int w = 0; w < warmup; ++w) body();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int r = 0; r < repeat; ++r) {
    cudaEventRecord(start, stream);
    body();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace longnet::bench
