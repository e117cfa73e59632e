// Token embedding: out[i, :] = table[tokens[i], :] * scale.
// tokens: (count) int32, every id in [0, vocab) (the nn layer validates them); table
// (vocab, dim) contiguous; out, dout (count, dim) contiguous.
// Backward: dtable[tokens[i], :] += scale * dout[i, :] (accumulates, a scatter-add;
// deterministic on the CPU: each thread owns a range of columns and visits tokens in order).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

struct EmbeddingParams {
  std::int64_t count = 0;
  std::int64_t vocab = 0;
  std::int64_t dim = 0;
  double scale = 1.0;
  DType dtype = DType::f32;  // of table, out and the gradients
  const std::int32_t* tokens = nullptr;
  const void* table = nullptr;
  void* out = nullptr;         // forward
  const void* dout = nullptr;  // backward
  void* dtable = nullptr;      // backward (accumulated)
};

void embedding_forward_cpu(const EmbeddingParams& p);
void embedding_backward_cpu(const EmbeddingParams& p);
void embedding_forward_cuda(const EmbeddingParams& p);
void embedding_backward_cuda(const EmbeddingParams& p);

}  // namespace longnet::kernels
