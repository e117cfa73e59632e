// Tensor operations the layers and models share, dispatched on the tensors' device to the
// kernels (CPU or CUDA). Inputs must be floating tensors of one dtype on one device.
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/core/tensor.hpp"

namespace longnet::nn {

// a + alpha * b (equal shapes) as a new contiguous tensor (one pass: no copy of a first).
Tensor add(const Tensor& a, const Tensor& b, double alpha = 1.0);
// target += alpha * b in place; target must be contiguous.
void add_into(Tensor& target, const Tensor& b, double alpha = 1.0);
// x *= factor in place; x must be contiguous.
void scale_in_place(Tensor& x, double factor);
// sum of squares of all elements (double, deterministic).
double sum_of_squares(const Tensor& x);
// The sum over tensors of one dtype on one device: on CUDA one synchronisation in all.
double sum_of_squares(const std::vector<Tensor>& tensors);
// The same sum as an f64 tensor of one element on the tensors' device, queued: on CUDA the
// host does not wait for it (a training step's clipped update reads it on the device).
Tensor queue_sum_of_squares(const std::vector<Tensor>& tensors);

// The rows view of a tensor whose last dimension is `columns`: (numel / columns, columns).
// Requires a contiguous tensor.
Tensor as_rows(const Tensor& x, std::int64_t columns);

// Requires x to be a floating tensor of `dtype` on `device`; `what` names it.
void require_floating(const Tensor& x, const char* what, DType dtype, Device device);

// Mean softmax cross-entropy of logits (rows, vocab) against targets (rows) int32 (ids in
// [0, vocab) or ignore_index), for training: forward returns the summed loss and the
// number of targets counted; backward writes dlogits for the loss
// grad_scale * summed loss.
struct CrossEntropyResult {
  // The summed loss, an f64 tensor of one element on the logits' device, left there: on
  // CUDA loss_sum.item() waits for the device (a training step reads it at its end).
  Tensor loss_sum;
  std::int64_t count = 0;  // targets that are not ignore_index
  Tensor lse;              // (rows), saved for backward
};
CrossEntropyResult cross_entropy_forward(const Tensor& logits, const Tensor& targets, std::int32_t ignore_index);
// The same, checking and counting the targets on host_targets, a contiguous int32 host
// tensor holding what `targets` holds (e.g. the copy it was uploaded from), instead of
// reading `targets` back from the device: no wait for the work queued before the loss.
CrossEntropyResult cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& host_targets,
                                         std::int32_t ignore_index);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const CrossEntropyResult& forward,
                              std::int32_t ignore_index, double grad_scale);

}  // namespace longnet::nn
