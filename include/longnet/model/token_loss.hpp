// The token loss the language models share: mean softmax cross-entropy of logits
// (B, N, vocab) against targets (B, N) (ignore index -100), saving what backward needs.
#pragma once

#include "longnet/model/language_model.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::model {

class TokenLoss {
 public:
  // targets: int32/int64 (B, N) on any device, each in [0, vocab) or kIgnoreIndex. The
  // loss is left where the logits are (PendingLoss).
  PendingLoss forward(const Tensor& logits, const Tensor& targets);
  // dlogits (B, N, vocab) of loss_scale * (the mean loss of the last forward).
  Tensor backward(double loss_scale) const;

 private:
  Shape shape_;
  Tensor logits_, targets_;
  nn::CrossEntropyResult result_;
};

}  // namespace longnet::model
