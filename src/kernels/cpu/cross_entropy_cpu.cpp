// Fused softmax cross-entropy on the CPU (cross_entropy.hpp): one pass for the row
// maximum, one for the log-sum-exp (accumulated in double), and backward recomputes the
// probabilities from the saved lse instead of storing them.
#include <cmath>
#include <limits>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/cross_entropy.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void forward(const CrossEntropyParams& p) {
  const T* logits = static_cast<const T*>(p.logits);
  T* loss = static_cast<T*>(p.loss);
  T* lse = static_cast<T*>(p.lse);
  parallel_for(p.rows, cpu::grain_for(8 * p.vocab), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * p.logits_row_stride;
      double max = -std::numeric_limits<double>::infinity();
      for (std::int64_t v = 0; v < p.vocab; ++v) max = std::max<double>(max, row[v]);
      double sum = 0;
      for (std::int64_t v = 0; v < p.vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
      const double row_lse = max + std::log(sum);
      lse[r] = static_cast<T>(row_lse);
      const std::int32_t target = p.targets[r];
      loss[r] = target == p.ignore_index ? T(0) : static_cast<T>(row_lse - row[target]);
    }
  });
  if (p.loss_sum == nullptr) return;
  double sum = 0;  // in row order
  for (std::int64_t r = 0; r < p.rows; ++r) sum += static_cast<double>(loss[r]);
  *p.loss_sum = sum;
}

template <class T>
void backward(const CrossEntropyParams& p) {
  const T* logits = static_cast<const T*>(p.logits);
  const T* lse = static_cast<const T*>(p.lse);
  T* dlogits = static_cast<T*>(p.dlogits);
  parallel_for(p.rows, cpu::grain_for(8 * p.vocab), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * p.logits_row_stride;
      T* drow = dlogits + r * p.dlogits_row_stride;
      const std::int32_t target = p.targets[r];
      if (target == p.ignore_index) {
        for (std::int64_t v = 0; v < p.vocab; ++v) drow[v] = T(0);
        continue;
      }
      const T scale = static_cast<T>(p.grad_scale);
      for (std::int64_t v = 0; v < p.vocab; ++v) {
        const T probability = std::exp(row[v] - lse[r]);
        drow[v] = scale * (probability - (v == target ? T(1) : T(0)));
      }
    }
  });
}

}  // namespace

void cross_entropy_forward_cpu(const CrossEntropyParams& p) {
  cpu::dispatch_float(p.dtype, "cross_entropy_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void cross_entropy_backward_cpu(const CrossEntropyParams& p) {
  cpu::dispatch_float(p.dtype, "cross_entropy_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
