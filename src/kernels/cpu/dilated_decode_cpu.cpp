// One query position of causal dilated attention against the bounded KV cache
// (dilated_decode.hpp), on the CPU: per (batch, head) an online softmax over the keys of
// every pattern for which the position is active, accumulated in double.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/dilated_decode.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void decode(const DilatedDecodeParams& p) {
  const std::int64_t D = p.head_dim, H = p.heads, Hk = p.kv_heads;
  const std::int64_t group = H / Hk;
  const auto G = static_cast<std::int64_t>(p.patterns.size());
  const std::int64_t pairs = D / 2;
  // log zeta_j / scale_base, so the factor of pair j at distance d is exp(d * rate_j).
  std::vector<double> xpos_rate(static_cast<std::size_t>(pairs), 0.0);
  if (p.xpos_scale_base > 0) {
    for (std::int64_t j = 0; j < pairs; ++j) {
      xpos_rate[static_cast<std::size_t>(j)] = std::log(xpos_factor(j, D, 1.0, p.xpos_scale_base));
    }
  }
  const double output_scale = p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(G) : 1.0;
  std::int64_t rows_per_head = 0;  // an upper bound of the keys one (batch, head) reads
  for (const DecodePatternCache& cache : p.patterns) rows_per_head += cache.capacity;
  parallel_for(p.batch * H, cpu::grain_for(D * rows_per_head), [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> acc(static_cast<std::size_t>(D));
    for (std::int64_t bh = begin; bh < end; ++bh) {
      const std::int64_t b = bh / H, h = bh % H, g = h / group;
      const T* q = static_cast<const T*>(p.q) + (b * H + h) * D;
      std::fill(acc.begin(), acc.end(), 0.0);
      double max = -std::numeric_limits<double>::infinity(), sum = 0;
      for (std::int64_t i = 0; i < G; ++i) {
        const DecodePatternCache& cache = p.patterns[static_cast<std::size_t>(i)];
        const std::int64_t w = cache.pattern.segment_length, r = cache.pattern.dilation_rate;
        const std::int64_t o = pattern_offset(p.mode, i, G, r, h, H);
        const std::int64_t t = p.position % w;
        if (o < 0 || t % r != o) continue;
        const std::int64_t slot = decode_cache_slot(p.mode, o);
        const std::int64_t keys = t / r + 1;
        const std::int64_t row_stride = p.batch * Hk * D;
        const std::int64_t base = slot * cache.capacity * row_stride + (b * Hk + g) * D;
        for (std::int64_t j = 0; j < keys; ++j) {
          const T* k = static_cast<const T*>(cache.keys) + base + j * row_stride;
          const T* v = static_cast<const T*>(cache.values) + base + j * row_stride;
          double dot = 0;
          if (p.xpos_scale_base > 0) {
            const double distance = static_cast<double>(r * (keys - 1 - j));
            for (std::int64_t pair = 0; pair < pairs; ++pair) {
              const double f = std::exp(distance * xpos_rate[static_cast<std::size_t>(pair)]);
              dot += f * (static_cast<double>(q[2 * pair]) * k[2 * pair] +
                          static_cast<double>(q[2 * pair + 1]) * k[2 * pair + 1]);
            }
          } else {
            for (std::int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
          }
          const double score = dot * p.scale;
          if (score > max) {
            const double rescale = std::exp(max - score);  // 0 for the first key
            sum *= rescale;
            for (double& a : acc) a *= rescale;
            max = score;
          }
          const double weight = std::exp(score - max);
          sum += weight;
          for (std::int64_t d = 0; d < D; ++d) acc[static_cast<std::size_t>(d)] += weight * v[d];
        }
      }
      T* out = static_cast<T*>(p.out) + (b * H + h) * D;
      for (std::int64_t d = 0; d < D; ++d) {
        out[d] = sum > 0 ? static_cast<T>(acc[static_cast<std::size_t>(d)] / sum * output_scale) : T(0);
      }
    }
  });
}

}  // namespace

void dilated_decode_cpu(const DilatedDecodeParams& p) {
  cpu::dispatch_float(p.dtype, "dilated_decode", [&](auto tag) { decode<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
