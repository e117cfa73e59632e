// One query position against the bounded KV cache on CUDA (dilated_decode.hpp): one warp
// per (batch, head); each lane owns head_dim / 32 elements of q and of the output; the
// scores are warp sums, the softmax is online, accumulated in double (also for bf16
// caches, whose elements are read exactly into double).
#include <cmath>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/dilated_decode.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr int kMaxPatterns = 16;
constexpr int kMaxPerLane = 8;  // head_dim <= 256

template <class T>
struct DevicePattern {
  std::int64_t segment_length, dilation_rate, capacity;
  const T* keys;
  const T* values;
};

template <class T>
struct DecodeArgs {
  std::int64_t batch, heads, kv_heads, head_dim, position;
  DilatedMode mode;
  double scale, xpos_scale_base, output_scale;
  int patterns;
  DevicePattern<T> pattern[kMaxPatterns];
  const T* q;
  T* out;
};

template <class T>
__global__ void decode_kernel(DecodeArgs<T> a) {
  const std::int64_t warp = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= a.batch * a.heads) return;
  const std::int64_t b = warp / a.heads, h = warp % a.heads, g = h / (a.heads / a.kv_heads);
  const std::int64_t D = a.head_dim;
  const T* q = a.q + (b * a.heads + h) * D;
  double q_local[kMaxPerLane], rate[kMaxPerLane], acc[kMaxPerLane];
  for (int e = 0; e < kMaxPerLane; ++e) {
    const std::int64_t d = lane + 32 * e;
    q_local[e] = d < D ? static_cast<double>(to_compute(q[d])) : 0.0;
    acc[e] = 0.0;
    rate[e] = 0.0;
    if (a.xpos_scale_base > 0 && d < D) {  // log(zeta_j) / scale_base of pair j = d / 2
      rate[e] = log(xpos_zeta(d / 2, D)) / a.xpos_scale_base;
    }
  }
  double max_score = -INFINITY, sum = 0.0;
  for (int i = 0; i < a.patterns; ++i) {
    const DevicePattern<T>& p = a.pattern[i];
    const std::int64_t offset = pattern_offset(a.mode, i, a.patterns, p.dilation_rate, h, a.heads);
    const std::int64_t t = a.position % p.segment_length;
    if (offset < 0 || t % p.dilation_rate != offset) continue;
    const std::int64_t keys = t / p.dilation_rate + 1;
    const std::int64_t row_stride = a.batch * a.kv_heads * D;
    const std::int64_t base = decode_cache_slot(a.mode, offset) * p.capacity * row_stride + (b * a.kv_heads + g) * D;
    for (std::int64_t j = 0; j < keys; ++j) {
      const T* k = p.keys + base + j * row_stride;
      const T* v = p.values + base + j * row_stride;
      const double distance = static_cast<double>(p.dilation_rate * (keys - 1 - j));
      double dot = 0;
      for (int e = 0; e < kMaxPerLane; ++e) {
        const std::int64_t d = lane + 32 * e;
        if (d < D)
          dot += (a.xpos_scale_base > 0 ? exp(distance * rate[e]) : 1.0) * q_local[e] *
                 static_cast<double>(to_compute(k[d]));
      }
      const double score = warp_sum(dot) * a.scale;
      if (score > max_score) {
        const double rescale = exp(max_score - score);
        sum *= rescale;
        for (int e = 0; e < kMaxPerLane; ++e) acc[e] *= rescale;
        max_score = score;
      }
      const double weight = exp(score - max_score);
      sum += weight;
      for (int e = 0; e < kMaxPerLane; ++e) {
        const std::int64_t d = lane + 32 * e;
        if (d < D) acc[e] += weight * static_cast<double>(to_compute(v[d]));
      }
    }
  }
  T* out = a.out + (b * a.heads + h) * D;
  for (int e = 0; e < kMaxPerLane; ++e) {
    const std::int64_t d = lane + 32 * e;
    if (d < D) out[d] = from_compute<T>(static_cast<Compute<T>>(sum > 0 ? acc[e] / sum * a.output_scale : 0.0));
  }
}

}  // namespace

void dilated_decode_cuda(const DilatedDecodeParams& p) {
  require(p.head_dim <= 32 * kMaxPerLane, "dilated_decode on CUDA: head_dim = ", p.head_dim, ": at most ",
          32 * kMaxPerLane);
  require(static_cast<int>(p.patterns.size()) <= kMaxPatterns, "dilated_decode on CUDA: ", p.patterns.size(),
          " patterns: at most ", kMaxPatterns);
  if (p.batch * p.heads == 0) return;
  dispatch_activation(p.dtype, "dilated_decode", [&](auto tag) {
    using T = decltype(tag);
    DecodeArgs<T> a{};
    a.batch = p.batch;
    a.heads = p.heads;
    a.kv_heads = p.kv_heads;
    a.head_dim = p.head_dim;
    a.position = p.position;
    a.mode = p.mode;
    a.scale = p.scale;
    a.xpos_scale_base = p.xpos_scale_base;
    a.output_scale = p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(p.patterns.size()) : 1.0;
    a.patterns = static_cast<int>(p.patterns.size());
    for (std::size_t i = 0; i < p.patterns.size(); ++i) {
      const DecodePatternCache& c = p.patterns[i];
      a.pattern[i] = {c.pattern.segment_length, c.pattern.dilation_rate, c.capacity, static_cast<const T*>(c.keys),
                      static_cast<const T*>(c.values)};
    }
    a.q = static_cast<const T*>(p.q);
    a.out = static_cast<T*>(p.out);
    const std::int64_t threads = p.batch * p.heads * 32;
    decode_kernel<T>
        <<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0, current_cuda_stream()>>>(a);
  });
  check_launch();
}

}  // namespace longnet::kernels
