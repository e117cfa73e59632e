// Softmax cross-entropy over a vocabulary, fused (the probabilities are never stored):
//   lse[r]  = log sum_v exp(logits[r, v])
//   loss[r] = lse[r] - logits[r, targets[r]]         (0 when targets[r] == ignore_index)
// backward, for the loss L = grad_scale * sum_r loss[r] (grad_scale = 1 / valid rows for
// a mean):
//   dlogits[r, v] = grad_scale * (exp(logits[r, v] - lse[r]) - [v == targets[r]])
// (0 for ignored rows). logits and dlogits: (rows, vocab) with a row stride; targets (rows)
// int32, each in [0, vocab) or == ignore_index (the caller validates); loss and lse
// (rows) in accumulation_dtype(dtype) (precision.hpp), the softmax computed in that
// precision whatever the logits' dtype (bf16 on CUDA). dlogits is written and may alias
// logits.
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::kernels {

struct CrossEntropyParams {
  std::int64_t rows = 0;
  std::int64_t vocab = 0;
  std::int32_t ignore_index = -100;
  DType dtype = DType::f32;  // of logits and dlogits
  const void* logits = nullptr;
  std::int64_t logits_row_stride = 0;
  const std::int32_t* targets = nullptr;
  void* loss = nullptr;  // forward: written
  void* lse = nullptr;   // forward: written; backward: read
  // forward, optional: sum_r loss[r] in double, written in the loss's memory (on CUDA left
  // on the device). The order is fixed: rows in order on the CPU; on CUDA contiguous runs
  // of rows in order, then a fixed tree.
  double* loss_sum = nullptr;
  double grad_scale = 1.0;
  void* dlogits = nullptr;  // backward: written
  std::int64_t dlogits_row_stride = 0;
};

void cross_entropy_forward_cpu(const CrossEntropyParams& p);
void cross_entropy_backward_cpu(const CrossEntropyParams& p);
void cross_entropy_forward_cuda(const CrossEntropyParams& p);
void cross_entropy_backward_cuda(const CrossEntropyParams& p);

}  // namespace longnet::kernels
