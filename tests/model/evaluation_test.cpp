// Evaluation of a LongNetLM (model/evaluation.hpp): greedy hits counted by hand on small
// logits (ignored targets, ties to the first, NaN logits, sequences with and without scored
// targets, int64 targets), bad input, and the loss of evaluate() equal to Trainer::evaluate's.
#include "longnet/model/evaluation.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "longnet/model/trainer.hpp"
#include "model/model_test_support.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

TEST(Evaluation, GreedyHitsCountTokensAndWholeSequences) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Batch 3, 2 positions, vocab 3.
  const Tensor logits = Tensor::from_vector<double>(
      {
          0.1, 0.9, 0.0,  // argmax 1
          2.0, 2.0, 1.0,  // a tie: the first, 0
          nan, 0.5, 0.7,  // NaN is never the largest: 2
          0.3, 0.2, 0.1,  // 0
          5.0, 1.0, 1.0,  // 0 (not scored)
          1.0, 3.0, 2.0,  // 1 (not scored)
      },
      {3, 2, 3});
  const Tensor targets = Tensor::from_vector<std::int32_t>({1, 0, 2, 1, kIgnoreIndex, kIgnoreIndex}, {3, 2});
  const Evaluation e = greedy_hits(logits, targets);
  EXPECT_EQ(e.tokens, 4);
  EXPECT_EQ(e.correct, 3);            // all but the last scored target of sequence 1
  EXPECT_EQ(e.sequences, 2);          // sequence 2 scores nothing
  EXPECT_EQ(e.sequences_correct, 1);  // sequence 0
  EXPECT_DOUBLE_EQ(e.token_accuracy(), 0.75);
  EXPECT_DOUBLE_EQ(e.sequence_accuracy(), 0.5);
  EXPECT_EQ(e.loss_sum, 0.0);
  // int64 targets and f32 logits count alike.
  const Evaluation wide = greedy_hits(logits.to(DType::f32), targets.to(DType::i64));
  EXPECT_EQ(wide.correct, e.correct);
  EXPECT_EQ(wide.sequences_correct, e.sequences_correct);
  Evaluation sum = e;
  sum += wide;
  EXPECT_EQ(sum.tokens, 8);
  EXPECT_EQ(sum.sequences_correct, 2);
  EXPECT_EQ(Evaluation{}.loss(), 0.0);
  EXPECT_EQ(Evaluation{}.token_accuracy(), 0.0);
}

TEST(Evaluation, BadInputNamesTheProblem) {
  const Tensor logits = Tensor::zeros({1, 2, 3}, DType::f32);
  const auto message_of = [&](const Tensor& l, const Tensor& t) {
    try {
      greedy_hits(l, t);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message_of(logits, Tensor::from_vector<std::int32_t>({0, 3}, {1, 2})).find("targets[0, 1] = 3"),
            std::string::npos);
  EXPECT_NE(message_of(logits, Tensor::zeros({1, 2}, DType::f32)).find("int32 or int64"), std::string::npos);
  EXPECT_NE(message_of(logits, Tensor::from_vector<std::int32_t>({0}, {1, 1})).find("shape (1, 2)"), std::string::npos);
  EXPECT_NE(
      message_of(Tensor::zeros({2, 3}, DType::f32), Tensor::from_vector<std::int32_t>({0, 1}, {1, 2})).find("logits"),
      std::string::npos);
  LongNetLM model(tiny_lm_config(), Device::cpu(), 1);
  const FixedBatches data({random_tokens(1, 9, 11, 1), random_tokens(1, 9, 11, 2), Tensor()});
  EXPECT_THROW(evaluate(model, data, 0), Error);
}

// evaluate()'s loss is the trainer's validation loss, bit for bit, and its counts are the
// greedy hits of the model's logits on the same batches.
TEST(Evaluation, LossEqualsTheTrainersAndCountsItsLogits) {
  LongNetLM model(tiny_lm_config(DType::f32), Device::cpu(), 2);
  std::vector<std::int32_t> text;
  for (int i = 0; i < 400; ++i) text.push_back((i * 7 + i / 5) % 11);
  const LanguageModelingData data(text, 0.2, 2, 9, 3);
  TrainingConfig config;
  config.steps = 3;
  Trainer trainer(model, data, config);
  trainer.step();
  const Evaluation e = evaluate(model, data, 3);
  EXPECT_EQ(e.loss(), trainer.evaluate(3));
  Evaluation expected;
  for (std::int64_t i = 0; i < 3; ++i) {
    const Batch batch = data.validation_batch(i);
    expected += greedy_hits(model.forward(batch.inputs, nn::ForwardContext{}), batch.targets);
  }
  EXPECT_EQ(e.tokens, 3 * 2 * 9);
  EXPECT_EQ(e.correct, expected.correct);
  EXPECT_EQ(e.sequences, 6);
  EXPECT_EQ(e.sequences_correct, expected.sequences_correct);
}

}  // namespace
}  // namespace longnet::testing
