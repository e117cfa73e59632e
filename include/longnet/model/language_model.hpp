// The interface the training loop drives: a model that computes a mean token loss from a
// batch and backpropagates it. LongNetLM and LongNet implement it.
#pragma once

#include <string>

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

inline constexpr std::int32_t kIgnoreIndex = -100;

class LanguageModel : public nn::Module {
 public:
  // Forward and loss; saves what backward needs.
  virtual LossOutput forward_loss(const Batch& batch, const nn::ForwardContext& context) = 0;
  // Accumulates the gradients of loss_scale * (the last forward_loss's mean loss).
  virtual void backward(double loss_scale = 1.0) = 0;
  virtual std::string config_json() const = 0;
  virtual Device device() const = 0;
};

}  // namespace longnet::model
