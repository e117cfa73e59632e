// Loss and greedy accuracy of a LongNetLM on held-out batches (evaluation.hpp).
#include "longnet/model/evaluation.hpp"

#include <cmath>

namespace longnet::model {

Evaluation& Evaluation::operator+=(const Evaluation& other) {
  loss_sum += other.loss_sum;
  tokens += other.tokens;
  correct += other.correct;
  sequences += other.sequences;
  sequences_correct += other.sequences_correct;
  return *this;
}

Evaluation greedy_hits(const Tensor& logits, const Tensor& targets) {
  require(logits.defined() && logits.dim() == 3 && is_floating(logits.dtype()),
          "greedy_hits: logits must be a floating (batch, seq_len, vocab) tensor");
  require(targets.defined() && (targets.dtype() == DType::i32 || targets.dtype() == DType::i64) && targets.dim() == 2 &&
              targets.size(0) == logits.size(0) && targets.size(1) == logits.size(1),
          "greedy_hits: targets must be int32 or int64 of shape (", logits.size(0), ", ", logits.size(1), ")");
  const std::int64_t batch = logits.size(0), positions = logits.size(1), vocab = logits.size(2);
  // On the host in double: every float dtype widens exactly, so the argmax is the logits'.
  const Tensor scores = logits.to(Device::cpu(), DType::f64).contiguous();
  const Tensor ids = targets.to(Device::cpu(), DType::i64).contiguous();
  const double* s = scores.data<double>();
  const std::int64_t* t = ids.data<std::int64_t>();
  Evaluation out;
  for (std::int64_t b = 0; b < batch; ++b) {
    std::int64_t scored = 0, right = 0;
    for (std::int64_t n = 0; n < positions; ++n) {
      const std::int64_t target = t[b * positions + n];
      if (target == kIgnoreIndex) continue;
      require(target >= 0 && target < vocab, "greedy_hits: targets[", b, ", ", n, "] = ", target, ": must be in [0, ",
              vocab, ") or ", kIgnoreIndex);
      const double* row = s + (b * positions + n) * vocab;
      std::int64_t best = -1;
      for (std::int64_t v = 0; v < vocab; ++v) {
        if (std::isnan(row[v])) continue;
        if (best < 0 || row[v] > row[best]) best = v;
      }
      ++scored;
      right += best == target;
    }
    out.tokens += scored;
    out.correct += right;
    if (scored > 0) {
      ++out.sequences;
      out.sequences_correct += right == scored;
    }
  }
  return out;
}

Evaluation evaluate(LongNetLM& model, const BatchSource& data, std::int64_t batches) {
  require(batches >= 1, "evaluation batches = ", batches, ": must be >= 1");
  Evaluation total;
  TokenLoss loss;
  for (std::int64_t i = 0; i < batches; ++i) {
    const Batch batch = data.validation_batch(i);
    const Tensor logits = model.forward(batch.inputs, nn::ForwardContext{});
    Evaluation e = greedy_hits(logits, batch.targets);
    const LossOutput mean = loss.forward(logits, batch.targets).get();
    e.loss_sum = mean.loss * static_cast<double>(mean.tokens);
    total += e;
  }
  return total;
}

}  // namespace longnet::model
