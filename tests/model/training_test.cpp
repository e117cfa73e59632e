// The training pieces: a tiny model overfits one batch; resuming from a checkpoint
// continues the run exactly (bitwise equal losses and parameters, with dropout and
// gradient accumulation); accumulation of equal micro-batches equals one batch; the
// learning-rate schedule; clipping; configuration validation and JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "longnet/model/checkpoint.hpp"
#include "longnet/model/longnet.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/trainer.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/gradient_norm_queue.hpp"
#include "model/model_test_support.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

LongNetLMConfig small_f32_config() {
  LongNetLMConfig c = tiny_lm_config(DType::f32);
  c.vocab_size = 16;
  c.d_model = 32;
  c.heads = 4;
  c.kv_heads = 2;
  c.ffn_dim = 64;
  c.segment_lengths = {4, 8, 16};
  c.dilation_rates = {1, 2, 4};
  return c;
}

TEST(Training, TinyModelOverfitsOneBatch) {
  LongNetLM model(small_f32_config(), Device::cpu(), 1);
  const FixedBatches data({random_tokens(2, 16, 16, 1), random_tokens(2, 16, 16, 2), Tensor()});
  TrainingConfig config;
  config.steps = 150;
  config.lr = 1e-2;
  config.min_lr = 1e-3;
  config.warmup_steps = 10;
  config.adamw.weight_decay = 0.0;
  Trainer trainer(model, data, config);
  double first = 0, last = 0;
  for (std::int64_t i = 0; i < config.steps; ++i) {
    const StepResult r = trainer.step();
    if (i == 0) first = r.loss;
    last = r.loss;
  }
  EXPECT_GT(first, 2.0);  // about log(16) = 2.77 at the start
  EXPECT_LT(last, 0.05);  // memorised
  EXPECT_LT(trainer.evaluate(1), 0.05);
}

std::filesystem::path temp_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() /
      ("longnet_model_test_" + name + "_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<std::int32_t> corpus() {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the quick brown fox " + std::to_string(i * 7919 % 1000) + " jumps. ";
  std::vector<std::int32_t> tokens = byte_tokens(text);
  for (std::int32_t& t : tokens) t %= 16;
  return tokens;
}

TEST(Training, ResumeContinuesTheRunExactly) {
  LongNetLMConfig model_config = small_f32_config();
  model_config.dropout = 0.1;
  model_config.activation_dropout = 0.05;
  const LanguageModelingData data(corpus(), 0.1, 3, 16, 9);
  TrainingConfig config;
  config.steps = 6;
  config.gradient_accumulation = 2;
  config.warmup_steps = 2;
  config.seed = 9;

  LongNetLM uninterrupted(model_config, Device::cpu(), 1);
  Trainer a(uninterrupted, data, config);
  std::vector<double> expected;
  for (int i = 0; i < 6; ++i) expected.push_back(a.step().loss);

  const auto dir = temp_dir("resume");
  const auto path = dir / "checkpoint.safetensors";
  {
    LongNetLM first_half(model_config, Device::cpu(), 1);
    Trainer b(first_half, data, config);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(b.step().loss, expected[static_cast<std::size_t>(i)]);
    b.save_checkpoint(path);
  }
  LongNetLM resumed(model_config, Device::cpu(), 777);  // another initialisation: the checkpoint must replace it
  Trainer c(resumed, data, config);
  c.resume(path);
  EXPECT_EQ(c.steps_done(), 3);
  for (int i = 3; i < 6; ++i) {
    const StepResult r = c.step();
    EXPECT_EQ(r.step, i);
    EXPECT_EQ(r.loss, expected[static_cast<std::size_t>(i)]) << "step " << i;
  }
  const auto pa = uninterrupted.parameters(), pc = resumed.parameters();
  ASSERT_EQ(pa.size(), pc.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i]->value.to_vector<float>(), pc[i]->value.to_vector<float>()) << pa[i]->name;
  }
  // A model of another configuration cannot resume from it.
  LongNetLMConfig other = model_config;
  other.ffn_dim = 32;
  LongNetLM different(other, Device::cpu(), 1);
  Trainer d(different, data, config);
  EXPECT_THROW(d.resume(path), Error);
  std::filesystem::remove_all(dir);
}

// The Trainer makes the next micro-step's batch while the device runs this one's backward:
// every (step, micro-step) of the run is asked for exactly once (the prefetched batch is
// the one used), none beyond the configured steps, and the losses are those of batches
// asked for at their own step (ResumeContinuesTheRunExactly: a resumed trainer starts
// without a prefetched batch).
TEST(Training, BatchesAreMadeOnceEachAndNonePastTheLastStep) {
  class Recording final : public BatchSource {
   public:
    explicit Recording(const BatchSource& inner) : inner_(inner) {}
    Batch train_batch(std::int64_t step, std::int64_t micro_step) const override {
      asked.emplace_back(step, micro_step);
      return inner_.train_batch(step, micro_step);
    }
    Batch validation_batch(std::int64_t index) const override { return inner_.validation_batch(index); }
    std::int64_t tokens_per_batch() const override { return inner_.tokens_per_batch(); }
    mutable std::vector<std::pair<std::int64_t, std::int64_t>> asked;

   private:
    const BatchSource& inner_;
  };
  const LanguageModelingData inner(corpus(), 0.1, 2, 16, 5);
  const Recording data(inner);
  TrainingConfig config;
  config.steps = 3;
  config.gradient_accumulation = 2;
  LongNetLM model(small_f32_config(), Device::cpu(), 1);
  Trainer trainer(model, data, config);
  for (std::int64_t i = 0; i < config.steps; ++i) trainer.step();
  const std::vector<std::pair<std::int64_t, std::int64_t>> expected{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}};
  EXPECT_EQ(data.asked, expected);
}

// A target outside the vocabulary (and not the ignore index) is an error naming its
// position and value, as int32 and as int64 (checked before narrowing: 2^40 is reported
// as it is, not saturated); the model is left able to take a good batch.
TEST(Training, BadTargetsAreErrorsNamingTheirPositionAndValue) {
  LongNetLM model(small_f32_config(), Device::cpu(), 1);
  const Tensor inputs = random_tokens(1, 16, 16, 3);
  const auto batch_of = [&](const Tensor& targets) {
    Batch batch;
    batch.inputs = inputs;
    batch.targets = targets;
    return batch;
  };
  const auto message_of = [&](const Tensor& targets) {
    try {
      model.forward_loss(batch_of(targets), nn::ForwardContext{});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor bad32 = random_tokens(1, 16, 16, 4);
  bad32.data<std::int32_t>()[5] = 16;
  EXPECT_NE(message_of(bad32).find("targets[5] = 16: must be in [0, 16)"), std::string::npos) << message_of(bad32);
  Tensor bad64 = random_tokens(1, 16, 16, 4).to(DType::i64);
  bad64.data<std::int64_t>()[7] = std::int64_t{1} << 40;
  EXPECT_NE(message_of(bad64).find("targets[7] = 1099511627776: must be in [0, 16)"), std::string::npos)
      << message_of(bad64);
  EXPECT_GT(model.forward_loss(batch_of(random_tokens(1, 16, 16, 4)), nn::ForwardContext{}).loss, 0.0);
}

TEST(Training, AccumulatingEqualMicroBatchesEqualsOneBatch) {
  const LongNetLMConfig model_config = tiny_lm_config(DType::f64);
  const FixedBatches data({random_tokens(2, 9, 11, 1), random_tokens(2, 9, 11, 2), Tensor()});
  TrainingConfig config;
  config.steps = 2;
  LongNetLM one(model_config, Device::cpu(), 3), three(model_config, Device::cpu(), 3);
  Trainer t1(one, data, config);
  config.gradient_accumulation = 3;
  Trainer t3(three, data, config);
  const StepResult r1 = t1.step(), r3 = t3.step();
  EXPECT_NEAR(r1.loss, r3.loss, 1e-14);
  EXPECT_NEAR(r1.grad_norm, r3.grad_norm, 1e-12);
  EXPECT_EQ(r3.tokens, 3 * r1.tokens);
  const auto p1 = one.parameters(), p3 = three.parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) {
    const auto a = p1[i]->value.to_vector<double>(), b = p3[i]->value.to_vector<double>();
    for (std::size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-12) << p1[i]->name;
  }
}

TEST(Training, WarmupCosineSchedule) {
  const LearningRateSchedule s{.max_lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);
  EXPECT_NEAR(s.at(9), 0.55, 1e-12);  // half-way down the cosine
  EXPECT_NEAR(s.at(14), 0.1, 1e-12);
  EXPECT_NEAR(s.at(100), 0.1, 1e-12);
  EXPECT_THROW((LearningRateSchedule{.max_lr = 1.0, .min_lr = 2.0}.validate()), Error);
}

TEST(Training, GradientClipping) {
  EXPECT_EQ(clip_factor(0.5, 1.0), 1.0);
  EXPECT_NEAR(clip_factor(4.0, 1.0), 0.25, 1e-6);
  EXPECT_EQ(clip_factor(4.0, 0.0), 1.0);  // disabled
  LongNetLM model(tiny_lm_config(), Device::cpu(), 1);
  model.forward_loss({random_tokens(1, 9, 11, 1), random_tokens(1, 9, 11, 2), Tensor()}, {});
  model.backward();
  double squares = 0;
  for (const auto& p : model.parameters()) {
    for (double g : p->grad.to_vector<double>()) squares += g * g;
  }
  EXPECT_NEAR(global_gradient_norm(model.parameters()), std::sqrt(squares), 1e-12);
}

// nn::GradientNormQueue on the CPU queues nothing early: finish() is the sum over every
// gradient in the queue's order; a second queue on the thread and a second finish() are
// errors naming the rule.
TEST(Training, GradientNormQueueOnTheCpuIsTheNormAfterTheBackward) {
  LongNetLM model(tiny_lm_config(), Device::cpu(), 1);
  model.forward_loss({random_tokens(1, 9, 11, 1), random_tokens(1, 9, 11, 2), Tensor()}, {});
  double queued = 0;
  {
    nn::GradientNormQueue norms(model.parameters());
    EXPECT_EQ(nn::GradientNormQueue::active(), &norms);
    EXPECT_THROW(
        {
          try {
            nn::GradientNormQueue second(model.parameters());
          } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("another queue is open"), std::string::npos) << e.what();
            throw;
          }
        },
        Error);
    model.backward();
    queued = norms.finish().item();
    EXPECT_EQ(nn::GradientNormQueue::active(), nullptr);
    EXPECT_THROW(norms.finish(), Error);
  }
  EXPECT_GT(queued, 0.0);
  EXPECT_EQ(queued, gradient_sum_of_squares(model.parameters()).item());
}

// Trainer::step queues the loss, the gradient norm and the clipped update and reads the
// loss and norm only at its end; taken apart with the reading API (forward_loss, backward,
// global_gradient_norm, clip_factor, AdamW::step(lr, factor)) a step has the same bits:
// losses, norms and parameters, with the clip active and not.
TEST(Training, AStepEqualsItsPartsTakenApart) {
  for (const double clip : {0.05, 1e9}) {
    SCOPED_TRACE(str("grad_clip ", clip));
    const FixedBatches data({random_tokens(2, 16, 16, 1), random_tokens(2, 16, 16, 2), Tensor()});
    TrainingConfig config;
    config.steps = 3;
    config.warmup_steps = 1;
    config.grad_clip = clip;
    LongNetLM queued(small_f32_config(), Device::cpu(), 1), apart(small_f32_config(), Device::cpu(), 1);
    Trainer trainer(queued, data, config);
    AdamW optimizer(apart.parameters(), config.adamw);
    for (std::int64_t step = 0; step < config.steps; ++step) {
      const StepResult r = trainer.step();
      apart.zero_grad();
      const LossOutput loss =
          apart.forward_loss(data.train_batch(step, 0), nn::ForwardContext{.training = true, .step = step});
      apart.backward(1.0);
      const double norm = global_gradient_norm(apart.parameters());
      optimizer.step(config.schedule().at(step), clip_factor(norm, config.grad_clip));
      EXPECT_EQ(r.loss, loss.loss);
      EXPECT_EQ(r.tokens, loss.tokens);
      EXPECT_EQ(r.grad_norm, norm);
      if (clip < 1) {
        EXPECT_GT(norm, clip);  // the clip was active
      }
    }
    const auto a = queued.parameters(), b = apart.parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(std::memcmp(a[i]->value.data(), b[i]->value.data(), a[i]->value.nbytes()), 0) << a[i]->name;
    }
  }
}

// A step whose gradient norm is not finite is an error saying training diverged, and it
// changes nothing: no parameter, no optimizer state, no step count (the update was queued
// before the norm was read, and skipped itself). With the weight mended, training goes on.
TEST(Training, ADivergedStepIsAnErrorAndChangesNothing) {
  LongNetLM model(small_f32_config(), Device::cpu(), 1);
  const FixedBatches data({random_tokens(2, 16, 16, 1), random_tokens(2, 16, 16, 2), Tensor()});
  TrainingConfig config;
  config.steps = 4;
  Trainer trainer(model, data, config);
  trainer.step();
  float& weight = model.parameters()[3]->value.data<float>()[0];
  const float good = weight;
  weight = std::numeric_limits<float>::quiet_NaN();
  std::vector<Tensor> before;
  for (const auto& p : model.parameters()) before.push_back(p->value.clone());
  for (const auto& [name, tensor] : trainer.optimizer().state()) before.push_back(tensor.clone());
  try {
    trainer.step();
    ADD_FAILURE() << "a NaN weight gave a step";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: the gradient norm is nan"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("training diverged"), std::string::npos) << e.what();
  }
  EXPECT_EQ(trainer.steps_done(), 1);
  std::vector<Tensor> after;
  for (const auto& p : model.parameters()) after.push_back(p->value);
  for (const auto& [name, tensor] : trainer.optimizer().state()) after.push_back(tensor);
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    ASSERT_EQ(std::memcmp(after[i].data(), before[i].data(), before[i].nbytes()), 0) << "tensor " << i;
  }
  weight = good;
  EXPECT_TRUE(std::isfinite(trainer.step().grad_norm));
  EXPECT_EQ(trainer.steps_done(), 2);
}

// Batches that differ from step to step (random tokens seeded by step and micro-step).
class StepBatches final : public BatchSource {
 public:
  Batch train_batch(std::int64_t step, std::int64_t micro_step) const override {
    return {random_tokens(2, 16, 16, static_cast<std::uint64_t>(10 + 2 * step + micro_step)),
            random_tokens(2, 16, 16, static_cast<std::uint64_t>(1000 + 2 * step + micro_step)), Tensor()};
  }
  Batch validation_batch(std::int64_t) const override { return train_batch(999, 0); }
  std::int64_t tokens_per_batch() const override { return 32; }
};

std::vector<Tensor> parameters_and_state(const LanguageModel& model, Trainer& trainer) {
  std::vector<Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p->value.clone());
  for (const auto& [name, tensor] : trainer.optimizer().state()) out.push_back(tensor.clone());
  return out;
}

void expect_same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].nbytes(), b[i].nbytes()) << "tensor " << i;
    EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), a[i].nbytes()), 0) << "tensor " << i;
  }
}

// nn::DeferredGradientZero on its own: the vectors' gradients are zeroed at open; a Linear
// over q, k and v packed takes all three and stores; a partial overlap is filled and
// refused; the embedding's backward fills its table before adding; close() zeroes what no
// writer took; a second scope on the thread is an error naming the rule.
TEST(Training, DeferredGradientZeroHandsEachMatrixToItsFirstWriter) {
  const auto garbage = [](const nn::ParameterPtr& p) { p->grad.fill(7.0); };
  nn::ParameterOptions options;
  const auto q = nn::make_parameter("q", Tensor::full({3, 4}, 1.0, DType::f64), options);
  const auto k = nn::make_parameter("k", Tensor::full({3, 4}, 1.0, DType::f64), options);
  const auto v = nn::make_parameter("v", Tensor::full({3, 4}, 1.0, DType::f64), options);
  const auto bias = nn::make_parameter("b", Tensor::full({4}, 1.0, DType::f64), options);
  const auto unused = nn::make_parameter("unused", Tensor::full({2, 4}, 1.0, DType::f64), options);
  nn::pack_parameters(std::vector<nn::ParameterPtr>{q, k, v});
  for (const auto& p : {q, k, v, bias, unused}) garbage(p);
  {
    nn::DeferredGradientZero deferred({q, k, v, bias, unused});
    EXPECT_EQ(nn::DeferredGradientZero::active(), &deferred);
    EXPECT_NE(error_of([&] { nn::DeferredGradientZero second({bias}); }).find("another scope is open"),
              std::string::npos);
    for (double g : bias->grad.to_vector<double>()) EXPECT_EQ(g, 0.0);  // a vector: zeroed at open
    EXPECT_TRUE(deferred.deferred(q->grad));
    EXPECT_FALSE(deferred.deferred(bias->grad));
    // q and k packed but not v: a partial span is filled and refused.
    const nn::ParameterPtr qk = nn::adjacent_parameter({q, k}, "qk");
    ASSERT_TRUE(qk);
    nn::DeferredGradientZero* open = nn::DeferredGradientZero::active();
    EXPECT_TRUE(open->take(nn::adjacent_parameter({q, k, v}, "qkv")->grad));  // every byte deferred
    EXPECT_FALSE(deferred.deferred(v->grad));
    EXPECT_FALSE(open->take(qk->grad));              // taken already: the caller adds
    EXPECT_EQ(q->grad.to_vector<double>()[0], 7.0);  // the taker stores; nothing filled it
  }
  EXPECT_EQ(nn::DeferredGradientZero::active(), nullptr);
  for (double g : unused->grad.to_vector<double>()) EXPECT_EQ(g, 0.0);  // zeroed at close

  // A partial overlap: the deferred parameters it touches are zero-filled and it adds.
  for (const auto& p : {q, k, v}) garbage(p);
  {
    nn::DeferredGradientZero deferred({q, k, v});
    EXPECT_FALSE(deferred.take(nn::adjacent_parameter({k, v}, "kv")->grad.slice(0, 0, 4)));
    for (double g : k->grad.to_vector<double>()) EXPECT_EQ(g, 0.0);
    for (double g : v->grad.to_vector<double>()) EXPECT_EQ(g, 0.0);
    EXPECT_EQ(q->grad.to_vector<double>()[0], 7.0);  // still deferred
    deferred.materialize(q->grad);
    for (double g : q->grad.to_vector<double>()) EXPECT_EQ(g, 0.0);
  }
}

// Batches with a source sequence, for the encoder-decoder.
class SourceBatches final : public BatchSource {
 public:
  Batch train_batch(std::int64_t step, std::int64_t micro_step) const override {
    Batch b = StepBatches().train_batch(step, micro_step);
    b.source = random_tokens(2, 16, 16, static_cast<std::uint64_t>(500 + 2 * step + micro_step));
    return b;
  }
  Batch validation_batch(std::int64_t) const override { return train_batch(999, 0); }
  std::int64_t tokens_per_batch() const override { return 32; }
};

// The Trainer with the zero fill deferred (LONGNET_DEFERRED_ZERO) and the norm queued in
// the backward (LONGNET_NORM_IN_BACKWARD) has the bits of the one without: the Linears'
// weight-gradient GEMMs store in a step's first micro-step and add in the next, with tied
// embeddings (the head's GEMM stores into the table, the embedding's backward adds) and
// without (the embedding fills its table first), for the decoder-only model and the
// encoder-decoder (one table for encoder, decoder and head); with one micro-step a step
// too, where the fill is deferred and the norm queued in the same backward.
TEST(Training, DeferredGradientZeroHasTheBitsOfTheFill) {
  TrainingConfig config;
  config.steps = 3;
  config.warmup_steps = 1;
  config.grad_clip = 0.05;
  const bool zero_was = nn::deferred_gradient_zero_enabled(), norm_was = nn::gradient_norm_in_backward();
  for (const auto& [encoder_decoder, tied, accumulation] : {std::tuple{false, false, 2},
                                                            {false, true, 2},
                                                            {true, false, 2},
                                                            {true, true, 2},
                                                            {false, false, 1},
                                                            {true, true, 1}}) {
    config.gradient_accumulation = accumulation;
    SCOPED_TRACE(str("encoder-decoder ", encoder_decoder, ", tied ", tied, ", accumulation ", accumulation));
    LongNetConfig c;
    static_cast<LongNetLMConfig&>(c) = small_f32_config();
    c.tie_embeddings = tied;
    c.encoder_layers = 1;
    const StepBatches lm_data;
    const SourceBatches source_data;
    const BatchSource& data = encoder_decoder ? static_cast<const BatchSource&>(source_data) : lm_data;
    std::vector<StepResult> results[2];
    std::vector<Tensor> state[2];
    for (int deferred = 0; deferred < 2; ++deferred) {
      nn::set_deferred_gradient_zero(deferred == 1);
      nn::set_gradient_norm_in_backward(deferred == 1);
      std::unique_ptr<LanguageModel> model;
      if (encoder_decoder) {
        model = std::make_unique<LongNet>(c, Device::cpu(), 1);
      } else {
        model = std::make_unique<LongNetLM>(c, Device::cpu(), 1);
      }
      Trainer trainer(*model, data, config);
      for (std::int64_t step = 0; step < config.steps; ++step) results[deferred].push_back(trainer.step(true));
      state[deferred] = parameters_and_state(*model, trainer);
    }
    nn::set_deferred_gradient_zero(zero_was);
    nn::set_gradient_norm_in_backward(norm_was);
    for (std::int64_t step = 0; step < config.steps; ++step) {
      EXPECT_GT(results[0][step].grad_norm, 0.0);
      EXPECT_EQ(results[1][step].loss, results[0][step].loss) << "step " << step;
      EXPECT_EQ(results[1][step].grad_norm, results[0][step].grad_norm) << "step " << step;
    }
    expect_same_bits(state[1], state[0]);
  }
}

// Steps queued one ahead (Trainer::step(true), as `longnet train` runs them) give the bits
// of steps taken one at a time: results, parameters and optimizer state. While a step is
// queued ahead, evaluate, save_checkpoint and resume refuse, naming it.
TEST(Training, StepsQueuedAheadEqualStepsOneAtATime) {
  const StepBatches data;
  TrainingConfig config;
  config.steps = 5;
  config.warmup_steps = 1;
  config.gradient_accumulation = 2;
  config.grad_clip = 0.05;  // active: the clip reads the chained sum
  LongNetLM one_model(small_f32_config(), Device::cpu(), 1), ahead_model(small_f32_config(), Device::cpu(), 1);
  Trainer one(one_model, data, config), ahead(ahead_model, data, config);
  for (std::int64_t step = 0; step < config.steps; ++step) {
    SCOPED_TRACE(str("step ", step));
    const StepResult a = one.step(), b = ahead.step(true);
    EXPECT_EQ(b.step, step);
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(a.grad_norm, b.grad_norm);
    EXPECT_EQ(a.lr, b.lr);
    EXPECT_EQ(a.tokens, b.tokens);
    const bool queued = step + 1 < config.steps;  // none past the last step
    EXPECT_EQ(ahead.step_queued_ahead(), queued);
    EXPECT_EQ(ahead.steps_done(), step + 1 + (queued ? 1 : 0));
    if (queued) {
      const std::string message = error_of([&] { ahead.evaluate(1); });
      EXPECT_NE(message.find(str("evaluate: step ", step + 1, " is queued ahead")), std::string::npos) << message;
      EXPECT_NE(error_of([&] { ahead.save_checkpoint("unused.safetensors"); }).find("queued ahead"), std::string::npos);
      EXPECT_FALSE(std::filesystem::exists("unused.safetensors"));
      EXPECT_NE(error_of([&] { ahead.resume("unused.safetensors"); }).find("queued ahead"), std::string::npos);
    }
  }
  expect_same_bits(parameters_and_state(one_model, one), parameters_and_state(ahead_model, ahead));
  EXPECT_EQ(one.evaluate(2), ahead.evaluate(2));
}

// A LongNetLM whose n-th backward (counting from 0) leaves a NaN in one gradient: a
// divergence that the following steps do not repeat.
class PoisonedBackward final : public LanguageModel {
 public:
  PoisonedBackward(LongNetLM& inner, int poisoned_call) : inner_(inner), poisoned_call_(poisoned_call) {}
  PendingLoss queue_forward_loss(const Batch& batch, const nn::ForwardContext& context) override {
    return inner_.queue_forward_loss(batch, context);
  }
  void backward(double loss_scale) override {
    inner_.backward(loss_scale);
    if (calls_++ == poisoned_call_) inner_.parameters()[3]->grad.data<float>()[0] = std::nanf("");
  }
  std::string config_json() const override { return inner_.config_json(); }
  Device device() const override { return inner_.device(); }
  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override { inner_.collect_parameters(out); }

 private:
  LongNetLM& inner_;
  int poisoned_call_;
  int calls_ = 0;
};

// Step 1 diverges while step 2, whose own gradients are finite, is queued behind it: the
// error names step 1, and neither step changed anything (step 2's update read step 1's
// norm too). Training then goes on from step 1 as a run that never diverged.
TEST(Training, ADivergenceWithAStepQueuedAheadChangesNothing) {
  const StepBatches data;
  TrainingConfig config;
  config.steps = 5;
  config.warmup_steps = 1;
  LongNetLM model(small_f32_config(), Device::cpu(), 1);
  PoisonedBackward poisoned(model, /*poisoned_call=*/1);  // step 1's backward
  Trainer trainer(poisoned, data, config);
  EXPECT_EQ(trainer.step(true).step, 0);  // step 1 is queued (on the CPU: run, its update skipped)
  const std::vector<Tensor> before = parameters_and_state(model, trainer);
  try {
    trainer.step(true);  // queues step 2, then reads step 1
    ADD_FAILURE() << "a NaN gradient gave a step";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: the gradient norm is nan"), std::string::npos) << e.what();
  }
  EXPECT_EQ(trainer.steps_done(), 1);
  EXPECT_FALSE(trainer.step_queued_ahead());
  expect_same_bits(before, parameters_and_state(model, trainer));

  LongNetLM clean_model(small_f32_config(), Device::cpu(), 1);
  Trainer clean(clean_model, data, config);
  clean.step();
  for (std::int64_t step = 1; step < config.steps; ++step) {
    const StepResult a = clean.step(), b = trainer.step(true);
    EXPECT_EQ(b.step, step);
    EXPECT_EQ(a.loss, b.loss);
  }
  expect_same_bits(parameters_and_state(clean_model, clean), parameters_and_state(model, trainer));
}

// AdamW's clip from a queued norm: a sum that is not one f64 element, or a max_norm that
// is not finite, is an error naming GradientClip, taken before anything changes; taking
// back a step that was never taken is an error too.
TEST(Training, GradientClipArgumentsAreChecked) {
  LongNetLM model(tiny_lm_config(), Device::cpu(), 1);
  AdamW optimizer(model.parameters(), {});
  const auto message_of = [&](const GradientClip& clip) {
    try {
      optimizer.step(1e-3, clip);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message_of({Tensor::zeros({2}, DType::f64), 1.0}).find("GradientClip"), std::string::npos);
  EXPECT_NE(message_of({Tensor::zeros({1}, DType::f32), 1.0}).find("f64 tensor of one element"), std::string::npos);
  EXPECT_NE(message_of({Tensor(), 1.0}).find("GradientClip"), std::string::npos);
  EXPECT_NE(message_of({Tensor::zeros({1}, DType::f64), std::nan("")}).find("max_norm = nan"), std::string::npos);
  EXPECT_EQ(optimizer.steps(), 0);
  EXPECT_THROW(optimizer.forget_skipped_step(), Error);
  EXPECT_EQ(message_of({Tensor::zeros({1}, DType::f64), 1.0}), "no error");
  EXPECT_EQ(optimizer.steps(), 1);
}

TEST(Training, ConfigurationValidationNamesTheProblem) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  LongNetLMConfig c = tiny_lm_config();
  c.heads = 3;
  EXPECT_NE(message([&] { c.validate(); }).find("d_model = 8 is not a multiple of heads = 3"), std::string::npos);
  c = tiny_lm_config();
  c.dilation_rates = {1, 7};
  EXPECT_NE(message([&] { c.validate(); }).find("dilation_rates[1] = 7"), std::string::npos);
  c = tiny_lm_config();
  c.d_model = 6;
  c.heads = 2;  // head_dim 3: rotary needs an even head_dim
  EXPECT_NE(message([&] { c.validate(); }).find("even head_dim"), std::string::npos);
  c = tiny_lm_config();
  c.dropout = 1.0;
  EXPECT_NE(message([&] { c.validate(); }).find("dropout = 1"), std::string::npos);
  TrainingConfig t;
  t.min_lr = 1.0;
  EXPECT_NE(message([&] { t.validate(); }).find("min_lr"), std::string::npos);
  EXPECT_NE(message([] { LanguageModelingData(std::vector<std::int32_t>(20, 1), 0.1, 2, 16, 0); }).find("20 tokens"),
            std::string::npos);
}

TEST(Training, ConfigurationJsonRoundTrip) {
  LongNetLMConfig c = tiny_lm_config();
  c.positional = nn::PositionalEncoding::rope;
  c.mode = DilatedMode::head_groups;
  c.tie_embeddings = true;
  const std::string json = to_json(c);
  EXPECT_EQ(to_json(lm_config_from_json(json, "test")), json);
  LongNetConfig e;
  e.encoder_layers = 3;
  EXPECT_EQ(to_json(longnet_config_from_json(to_json(e), "test")), to_json(e));
  EXPECT_THROW(lm_config_from_json(to_json(e), "test"), Error);  // another architecture
  EXPECT_THROW(lm_config_from_json("{\"heads\": \"four\"}", "test"), Error);
  EXPECT_THROW(lm_config_from_json("{\"unknown_key\": 1}", "test"), Error);
  EXPECT_THROW(lm_config_from_json("{\"layers\": 0}", "test"), Error);
  EXPECT_THROW(lm_config_from_json("[1, 2", "test"), Error);
}

TEST(Training, PatternsWithOffsetsNoHeadTakesAreNamed) {
  LongNetLMConfig c;
  c.heads = 12;
  c.segment_lengths = {2048, 4096, 8192, 16384, 32768};
  c.dilation_rates = {1, 2, 4, 6, 12};  // LongNet's: every rate divides the heads
  EXPECT_EQ(uncovered_offsets_note(c), "");
  c.heads = 4;
  c.segment_lengths = {16, 64, 256};
  c.dilation_rates = {1, 4, 16};  // 4 heads for 16 offsets
  const std::string note = uncovered_offsets_note(c);
  EXPECT_NE(note.find("pattern 2 (segment 256, dilation 16) gives heads to 4 of its 16 offsets"), std::string::npos)
      << note;
  EXPECT_EQ(note.find("pattern 1"), std::string::npos) << note;
  c.heads = 8;
  c.dilation_rates = {1, 6, 3};  // offsets floor(h / 2): 0..3 of 6; rate 3: floor(h / 3) = 0..2, all
  EXPECT_NE(uncovered_offsets_note(c).find("pattern 1 (segment 64, dilation 6) gives heads to 4 of its 6 offsets"),
            std::string::npos)
      << uncovered_offsets_note(c);
  EXPECT_EQ(uncovered_offsets_note(c).find("pattern 2"), std::string::npos);
  c.mode = DilatedMode::head_groups;  // one offset a pattern by definition
  EXPECT_EQ(uncovered_offsets_note(c), "");
}

}  // namespace
}  // namespace longnet::testing

namespace longnet::testing {
namespace {

TEST(Training, PasskeyTaskScoresOnlyTheKeyItHides) {
  const model::PasskeyData data(2, 160, 5);
  for (std::uint64_t key = 0; key < 20; ++key) {
    const auto s = data.sequence(key);
    ASSERT_EQ(s.text.size(), 161u);
    const std::string digits = s.text.substr(s.key_position, model::PasskeyData::kDigits);
    EXPECT_EQ(s.text.substr(s.needle_position, 16 + 5), "The pass key is " + digits);
    EXPECT_EQ(s.text.back(), '.');
  }
  const model::Batch batch = data.train_batch(3, 0);
  const auto targets = batch.targets.to_vector<std::int32_t>();
  const auto inputs = batch.inputs.to_vector<std::int32_t>();
  int scored = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] == model::kIgnoreIndex) continue;
    ++scored;
    EXPECT_GE(targets[i], '0');
    EXPECT_LE(targets[i], '9');
    if ((i + 1) % 160 != 0) {
      EXPECT_EQ(inputs[i + 1], targets[i]);  // the next input byte
    }
  }
  EXPECT_EQ(scored, 2 * model::PasskeyData::kDigits);
  EXPECT_NE(data.train_batch(3, 0).inputs.to_vector<std::int32_t>(),
            data.train_batch(4, 0).inputs.to_vector<std::int32_t>());
  EXPECT_THROW(model::PasskeyData(1, 30, 0), Error);
}

// Training places keys near the question more often (log(1 + distance) uniform), validation
// uniformly: the distance from the key to the question, over 2,000 sequences of 1,024 bytes.
TEST(Training, PasskeyTrainingFavoursNearKeysAndValidationIsUniform) {
  const model::PasskeyData data(1, 1024, 7);
  auto near_share = [&](model::PasskeyData::KeyPlacement placement) {
    int near = 0;
    for (std::uint64_t key = 0; key < 2000; ++key) {
      const auto s = data.sequence(key, placement);
      const std::string digits = s.text.substr(s.key_position, model::PasskeyData::kDigits);
      EXPECT_EQ(s.text.substr(s.needle_position, 16 + 5), "The pass key is " + digits);
      near += s.key_position - s.needle_position < 128 ? 1 : 0;
    }
    return near / 2000.0;
  };
  using Placement = model::PasskeyData::KeyPlacement;
  // Uniform: ~70 of the ~960 filler positions put the key within 128 bytes (~7 %);
  // log-uniform: log(70) / log(960) of them (~62 %).
  EXPECT_LT(near_share(Placement::uniform), 0.12);
  EXPECT_GT(near_share(Placement::log_uniform), 0.5);
  // The batches: training batches take the log-uniform placement, validation the uniform.
  auto batch_near_share = [](auto&& make_batch) {
    int near = 0;
    for (std::int64_t i = 0; i < 500; ++i) {
      const model::Batch batch = make_batch(i);
      const auto inputs = batch.inputs.to_vector<std::int32_t>();
      const auto targets = batch.targets.to_vector<std::int32_t>();
      const std::string text(inputs.begin(), inputs.end());
      std::size_t scored = 0;  // the first scored position: its target, input scored + 1, is the key's first digit
      while (targets[scored] == model::kIgnoreIndex) ++scored;
      near += scored + 1 - text.find("The pass key is ") < 128 ? 1 : 0;
    }
    return near / 500.0;
  };
  EXPECT_GT(batch_near_share([&](std::int64_t i) { return data.train_batch(i, 0); }), 0.5);
  EXPECT_LT(batch_near_share([&](std::int64_t i) { return data.validation_batch(i); }), 0.12);
}

}  // namespace
}  // namespace longnet::testing
