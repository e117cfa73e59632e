// Token embedding on the CPU (embedding.hpp). Backward is a scatter-add made race-free and
// deterministic by giving each thread a range of columns: it visits all tokens in order.
#include <algorithm>
#include <numeric>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/embedding.hpp"

namespace longnet::kernels {
namespace {

template <class T>
void forward(const EmbeddingParams& p) {
  const T* table = static_cast<const T*>(p.table);
  T* out = static_cast<T*>(p.out);
  const T scale = static_cast<T>(p.scale);
  parallel_for(p.count, cpu::grain_for(p.dim), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const T* row = table + static_cast<std::int64_t>(p.tokens[i]) * p.dim;
      T* o = out + i * p.dim;
      for (std::int64_t c = 0; c < p.dim; ++c) o[c] = row[c] * scale;
    }
  });
}

template <class T>
void backward(const EmbeddingParams& p) {
  const T* dout = static_cast<const T*>(p.dout);
  T* dtable = static_cast<T*>(p.dtable);
  const T scale = static_cast<T>(p.scale);
  constexpr std::int64_t kColumns = 16;
  const std::int64_t column_blocks = (p.dim + kColumns - 1) / kColumns;
  parallel_for(column_blocks, cpu::grain_for(kColumns * p.count), [&](std::int64_t begin, std::int64_t end) {
    const std::int64_t c0 = begin * kColumns, c1 = std::min(p.dim, end * kColumns);
    for (std::int64_t i = 0; i < p.count; ++i) {
      T* row = dtable + static_cast<std::int64_t>(p.tokens[i]) * p.dim;
      const T* g = dout + i * p.dim;
      for (std::int64_t c = c0; c < c1; ++c) row[c] += g[c] * scale;
    }
  });
}

}  // namespace

void embedding_sort_rows(const std::int32_t* tokens, std::int64_t count, std::vector<std::int32_t>& order,
                         std::vector<std::int64_t>& run_starts) {
  order.resize(static_cast<std::size_t>(count));
  const auto [low, high] = std::minmax_element(tokens, tokens + count);
  const std::int64_t span = count == 0 ? 0 : static_cast<std::int64_t>(*high) - *low + 1;
  if (span <= 4 * count + 65536) {
    // A counting sort, O(count + span): it runs on the host at the start of every CUDA
    // training step while the device waits (std::stable_sort of 32K rows took ~1.5 ms).
    std::vector<std::int64_t> start(static_cast<std::size_t>(span) + 1, 0);
    for (std::int64_t i = 0; i < count; ++i) ++start[static_cast<std::size_t>(tokens[i] - *low) + 1];
    for (std::size_t id = 1; id <= static_cast<std::size_t>(span); ++id) start[id] += start[id - 1];
    for (std::int64_t i = 0; i < count; ++i) {
      order[static_cast<std::size_t>(start[static_cast<std::size_t>(tokens[i] - *low)]++)] = static_cast<std::int32_t>(i);
    }
  } else {  // few ids over a wide range
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return tokens[a] < tokens[b]; });
  }
  // Both sorts are stable: equal ids keep their row order. A run starts where the id changes.
  run_starts.clear();
  for (std::int64_t i = 0; i < count; ++i) {
    if (i == 0 || tokens[order[static_cast<std::size_t>(i)]] != tokens[order[static_cast<std::size_t>(i - 1)]]) {
      run_starts.push_back(i);
    }
  }
  run_starts.push_back(count);
}

void embedding_forward_cpu(const EmbeddingParams& p) {
  cpu::dispatch_float(p.dtype, "embedding_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void embedding_backward_cpu(const EmbeddingParams& p) {
  cpu::dispatch_float(p.dtype, "embedding_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
