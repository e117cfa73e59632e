// The interface the training loop drives: a model that computes a mean token loss from a
// batch and backpropagates it. LongNetLM and LongNet implement it.
#pragma once

#include <string>

#include "longnet/core/pending_read.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::model {

// Token ids as int32 CPU tensors (B, N). `source` is the encoder's input (encoder-decoder
// models); targets may hold the ignore index -100.
struct Batch {
  Tensor inputs;
  Tensor targets;
  Tensor source;
};

struct LossOutput {
  double loss = 0;          // mean over counted targets
  std::int64_t tokens = 0;  // targets counted (not ignored)
};

// A mean token loss as a forward leaves it: the count of targets is known at once, the
// summed loss (one double on the model's device) is copied to the host as the forward
// left it (a PendingRead) and value() waits for that copy only — on CUDA for the work
// queued before the loss, not for what was queued after it. A training step reads it
// after it has queued its backward and update, and the next step behind it (Trainer::
// step(true)), so the device never waits for the host.
class PendingLoss {
 public:
  PendingLoss() = default;
  // loss_sum: an f64 tensor of one element (any device); tokens: the targets counted.
  PendingLoss(Tensor loss_sum, std::int64_t tokens);
  std::int64_t tokens() const { return tokens_; }
  double value() const;  // the mean: loss_sum / tokens (0 without tokens)
  LossOutput get() const { return {value(), tokens_}; }

 private:
  PendingRead loss_sum_;
  std::int64_t tokens_ = 0;
};

inline constexpr std::int32_t kIgnoreIndex = -100;

class LanguageModel : public nn::Module {
 public:
  // Forward and loss, queued; saves what backward needs.
  virtual PendingLoss queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) = 0;
  // The same, with the loss read at once.
  LossOutput forward_loss(const Batch& batch, const nn::ForwardContext& context) {
    return queue_forward_loss(batch, context).get();
  }
  // Accumulates the gradients of loss_scale * (the last forward_loss's mean loss).
  virtual void backward(double loss_scale = 1.0) = 0;
  virtual std::string config_json() const = 0;
  virtual Device device() const = 0;
};

}  // namespace longnet::model
