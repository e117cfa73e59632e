// A step's zero fill of the weight matrices' gradients, deferred to their first writer.
// zero_grad() writes every gradient (340 MB of f32 in issue 5's model, ~0.13 ms of an H100
// at the step's start) only for the backward's weight-gradient GEMMs to add into the
// zeros; a GEMM that stores (beta 0) needs neither the fill nor the read.
//
// While a DeferredGradientZero is open on this thread, the gradients it was given (the
// matrices': Linear weights and the embedding table) count as zero without being written:
//  - Linear::backward asks take() for its weight's gradient (whole parameters, or a span of
//    adjacent ones: q, k and v packed); if every byte of it is deferred, its GEMM stores;
//  - any other writer (the embedding's backward adding into a table the LM head may share)
//    calls materialize() first, which zero-fills the deferred parameters it overlaps;
//  - close() (and the destructor) zero-fills what no writer took, so no stale value outlives
//    the scope (an unused layer's gradient is zero, as after zero_grad()).
// The other gradients (vectors: biases, norms) are zero-filled at open, in one launch.
// Same bits as zero_grad() then the backward (x + 0 = x; a stored -0 reads as +0).
// A backward that throws after take() and before its GEMM is queued leaves that gradient's
// old values: the step has failed, and the next step's scope defers the gradient again.
//
// Open it for the first backward after the gradients were last read (the Trainer: a step's
// first micro-step), on the thread that queues that backward.
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/core/tensor.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

// The switch (the Trainer defers a step's zero fill when it is on): set through
// set_deferred_gradient_zero(), default from LONGNET_DEFERRED_ZERO (1 on; unset or
// anything else off).
bool deferred_gradient_zero_enabled();
void set_deferred_gradient_zero(bool enabled);

class DeferredGradientZero {
 public:
  // Zero-fills the vectors' gradients now and defers the matrices'.
  explicit DeferredGradientZero(const std::vector<ParameterPtr>& parameters);
  ~DeferredGradientZero();
  DeferredGradientZero(const DeferredGradientZero&) = delete;
  DeferredGradientZero& operator=(const DeferredGradientZero&) = delete;

  // The open scope of this thread, or null.
  static DeferredGradientZero* active();

  // True when every byte of `grad` (contiguous) is a deferred gradient's: they are no longer
  // deferred, and the caller must store (not add) all of `grad`. Otherwise the deferred
  // gradients it overlaps are zero-filled (on the current stream) and false is returned.
  bool take(const Tensor& grad);
  // Zero-fills (on the current stream) the deferred gradients `grad` overlaps, before a
  // writer that adds into it.
  void materialize(const Tensor& grad);
  // Whether any byte of `grad` is still deferred (its values are not yet the gradient's).
  bool deferred(const Tensor& grad) const;
  // Zero-fills what is still deferred and closes the scope.
  void close();

 private:
  struct Deferred {
    std::uintptr_t begin, end;
    Tensor grad;
  };
  // Zero-fills and forgets the deferred entries overlapping [begin, end).
  void fill_overlapping(std::uintptr_t begin, std::uintptr_t end);

  std::vector<Deferred> deferred_;  // sorted by begin, disjoint
  bool open_ = false;
};

}  // namespace longnet::nn
