// Token embedding: out[i, :] = table[tokens[i], :] * scale.
// tokens: (count) int32, every id in [0, vocab) (the nn layer validates them); table,
// dtable (vocab, dim) contiguous in accumulation_dtype(dtype) (precision.hpp: the f32
// master table under bf16 activations); out, dout (count, dim) contiguous in `dtype`.
// Backward: dtable[tokens[i], :] += scale * dout[i, :] (accumulates, a scatter-add;
// deterministic: on the CPU each thread owns a range of columns and visits tokens in
// order; on CUDA, which needs `order` and `run_starts`, each token's rows are summed in
// sorted order in pieces of at most 64 sorted positions, and the pieces added in order).
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

struct EmbeddingParams {
  std::int64_t count = 0;
  std::int64_t vocab = 0;
  std::int64_t dim = 0;
  double scale = 1.0;
  DType dtype = DType::f32;  // of out and dout; table and dtable in accumulation_dtype(dtype)
  const std::int32_t* tokens = nullptr;
  const void* table = nullptr;
  void* out = nullptr;         // forward
  const void* dout = nullptr;  // backward
  void* dtable = nullptr;      // backward (accumulated)
  // CUDA backward: the row indices 0..count-1 stably sorted by token, and the start of each
  // run of equal tokens in that order (runs + 1 entries, the last = count).
  const std::int32_t* order = nullptr;
  const std::int64_t* run_starts = nullptr;
  std::int64_t runs = 0;
};

// The `order` and `run_starts` of host token ids (for the CUDA backward).
void embedding_sort_rows(const std::int32_t* tokens, std::int64_t count, std::vector<std::int32_t>& order,
                         std::vector<std::int64_t>& run_starts);

void embedding_forward_cpu(const EmbeddingParams& p);
void embedding_backward_cpu(const EmbeddingParams& p);
void embedding_forward_cuda(const EmbeddingParams& p);
void embedding_backward_cuda(const EmbeddingParams& p);

}  // namespace longnet::kernels
