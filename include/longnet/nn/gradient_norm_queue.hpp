// The parameter gradients' sum of squares (the global norm's square, for clipping) queued
// while the backward runs. A step's norm reads every gradient once (85M f32 values in issue
// 5's model: ~0.14 ms of an H100's memory bandwidth) and, queued after the backward, holds
// the optimizer back by that much; but a layer's gradients are final as soon as its own
// backward is done. While a GradientNormQueue is open on this thread, stack_backward hands
// it each layer after that layer's backward (layer_done), and it queues that layer's
// partial sums where the layer's parameter gradients are written (the GradientStream's side
// stream, beside the next layer's backward). finish() queues the rest (the embedding, the
// final norm, the head) and adds all the partials in the parameters' order: the same bits
// as gradient_sum_of_squares over the same parameters, with the queue open or not.
//
// Only on CUDA: on the CPU nothing is queued early (finish() takes every gradient). Open it
// only for a backward after which nothing else changes the gradients (the last micro-step
// of a step, no all-reduce after it).
#pragma once

#include <cstddef>
#include <unordered_map>
#include <vector>

#include "longnet/core/tensor.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

// The switch (the Trainer opens a queue for a step's last backward when it is on): set
// through set_gradient_norm_in_backward(), default from LONGNET_NORM_IN_BACKWARD (1 on;
// unset or anything else off).
bool gradient_norm_in_backward();
void set_gradient_norm_in_backward(bool enabled);

class GradientNormQueue {
 public:
  // `parameters` fixes the order of the sum (the optimizer's); all of one dtype and device.
  explicit GradientNormQueue(std::vector<ParameterPtr> parameters);
  ~GradientNormQueue();
  GradientNormQueue(const GradientNormQueue&) = delete;
  GradientNormQueue& operator=(const GradientNormQueue&) = delete;

  // The open queue of this thread, or null.
  static GradientNormQueue* active();

  // `module`'s parameter gradients are final: their partial sums are queued (on the
  // GradientStream's side stream when one is active, else on the current stream). Each
  // parameter is taken once; those not in the queue's list are ignored. A parameter seen
  // again in a later module is shared, so its gradient was not final at the first: finish()
  // sums it again, after the backward.
  void layer_done(const Module& module);
  // The sum of squares (f64, one element, on the parameters' device), not waited for.
  // The queue closes; call once.
  Tensor finish();

 private:
  void queue_partials(const std::vector<std::size_t>& indices);

  std::vector<ParameterPtr> parameters_;
  std::unordered_map<const Parameter*, std::size_t> index_;
  // Per parameter: waiting for finish(), queued by a layer_done, or seen in two modules
  // (summed again by finish()).
  enum class State : unsigned char { waiting, queued, shared };
  std::vector<State> state_;
  Tensor partials_;  // CUDA: kSumOfSquaresPartialsPerTensor a parameter; undefined on the CPU
  bool open_ = false;
};

}  // namespace longnet::nn
