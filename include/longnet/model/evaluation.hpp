// Evaluating a LongNetLM on held-out batches: the mean token loss over the scored targets
// (those not kIgnoreIndex) and the model's greedy accuracy — of each scored target (the
// next byte, for text), and of whole sequences, all of whose scored targets must be right
// (the passkey task scores only the key's digits: a sequence right is a key retrieved).
// No dropout; nothing is changed but the activations the forward saves.
#pragma once

#include <cstdint>

#include "longnet/model/data.hpp"
#include "longnet/model/longnet_lm.hpp"

namespace longnet::model {

struct Evaluation {
  double loss_sum = 0;                 // summed over scored targets (nats)
  std::int64_t tokens = 0;             // scored targets
  std::int64_t correct = 0;            // scored targets whose largest logit is the target's
  std::int64_t sequences = 0;          // sequences with at least one scored target
  std::int64_t sequences_correct = 0;  // of those, the ones with every scored target right

  double loss() const { return tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0; }
  double token_accuracy() const {
    return tokens > 0 ? static_cast<double>(correct) / static_cast<double>(tokens) : 0.0;
  }
  double sequence_accuracy() const {
    return sequences > 0 ? static_cast<double>(sequences_correct) / static_cast<double>(sequences) : 0.0;
  }
  Evaluation& operator+=(const Evaluation& other);
};

// The greedy counts of logits (B, N, vocab) (any device and float dtype) against targets
// (B, N) int32/int64 (kIgnoreIndex: not scored); the loss fields stay 0. A row's
// prediction is its first largest logit; a NaN logit is never the largest.
Evaluation greedy_hits(const Tensor& logits, const Tensor& targets);

// Loss and greedy counts of `model` on data's validation batches 0 .. batches-1 (the loss
// is Trainer::evaluate's, summed over the batches' scored targets).
Evaluation evaluate(LongNetLM& model, const BatchSource& data, std::int64_t batches);

}  // namespace longnet::model
