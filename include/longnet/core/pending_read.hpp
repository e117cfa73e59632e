// A tensor's values read to the host without waiting for the work queued after the read.
// Tensor::to(cpu) waits for everything on the stream; a training step queued one ahead
// (model::Trainer::step(true)) reads the previous step's loss while the next step is
// queued behind it, and such a read waited for that next step too, so the host queued
// the step after from an idle device (0.6-0.9 ms of idle device a step on an H100:
// docs/benchmarks.md, nineteenth session). A PendingRead queues the copy at once, into
// page-locked host memory, with an event behind it; get() waits for that event only.
#pragma once

#include <memory>

#include "longnet/core/tensor.hpp"

namespace longnet {

class PendingRead {
 public:
  PendingRead() = default;  // undefined: get() throws
  // Queues the copy of `source` (any device, dtype and layout) on the current stream of its
  // device; a CPU source is copied at once.
  explicit PendingRead(const Tensor& source);
  bool defined() const { return state_ != nullptr; }
  // The values as a contiguous CPU tensor of the source's dtype and shape; the first call
  // waits for the work queued before the read (not after it).
  const Tensor& get() const;
  double item() const;  // get()'s one element, as a double

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace longnet
