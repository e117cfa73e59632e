// Distributed training over real MPI processes (CTest runs it under mpirun with 2 and 3
// processes): the Trainer with data and with sequence parallelism against the
// single-process Trainer over the same global batches — losses, gradient norms (so the
// clip sees the global norm), validation losses, the final parameters and the last step's
// gradients; f64 to 1e-11 (losses 1e-12), f32 to 1e-5 (losses) and 1e-4 (parameters and
// gradients) relative — on a tiny LongNetLM (xPos and RoPE, GQA, segments that span
// ranks, uneven shares, ranks whose share has no scored token, gradient accumulation) and
// a tiny encoder-decoder LongNet; every rank holds the same parameters and optimizer state
// afterwards; a resumed distributed run equals an uninterrupted one bitwise; and bad
// configurations (batch smaller than the world, sequence too short for the layout, a bad
// token in one rank's share, ranks configured differently) give the same Error on every
// rank instead of a hang.
//
// Every rank runs every collective; assertions come after them, so a failing check never
// leaves a rank waiting (CTest's timeout is the last guard).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "longnet/dist/communicator.hpp"
#include "longnet/model/longnet.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/trainer.hpp"
#include "model/model_test_support.hpp"
#include "mpi_test_support.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

// Random token batches as functions of (step, micro-step): targets are ignored (-100)
// where `scored` says not, so ranks' shares count different numbers of tokens (or none).
class RandomBatches final : public BatchSource {
 public:
  enum class Scored { all, some, last_positions };
  RandomBatches(std::int64_t batch, std::int64_t seq_len, std::int64_t vocab, Scored scored, bool with_source = false)
      : batch_(batch), seq_len_(seq_len), vocab_(vocab), scored_(scored), with_source_(with_source) {}

  Batch train_batch(std::int64_t step, std::int64_t micro_step) const override {
    return make(1000 + 10 * static_cast<std::uint64_t>(step) + static_cast<std::uint64_t>(micro_step));
  }
  Batch validation_batch(std::int64_t index) const override { return make(5000 + static_cast<std::uint64_t>(index)); }
  std::int64_t tokens_per_batch() const override { return batch_ * seq_len_; }

 private:
  Batch make(std::uint64_t seed) const {
    Batch b{random_tokens(batch_, seq_len_, vocab_, seed), random_tokens(batch_, seq_len_, vocab_, seed + 7), Tensor()};
    if (with_source_) b.source = random_tokens(batch_, seq_len_, vocab_, seed + 13);
    auto* targets = b.targets.data<std::int32_t>();
    for (std::int64_t i = 0; i < batch_; ++i) {
      for (std::int64_t n = 0; n < seq_len_; ++n) {
        const bool keep = scored_ == Scored::all || (scored_ == Scored::some && (n * 7 + i * 3) % 5 != 0) ||
                          (scored_ == Scored::last_positions && n >= seq_len_ - 2);
        if (!keep) targets[i * seq_len_ + n] = kIgnoreIndex;
      }
    }
    return b;
  }
  std::int64_t batch_, seq_len_, vocab_;
  Scored scored_;
  bool with_source_;
};

LongNetLMConfig test_config(DType dtype, nn::PositionalEncoding positional = nn::PositionalEncoding::xpos) {
  LongNetLMConfig c = tiny_lm_config(dtype);
  c.d_model = 16;
  c.heads = 4;
  c.kv_heads = 2;
  c.ffn_dim = 24;
  c.segment_lengths = {3, 6, 16};  // the last spans every rank's slice
  c.dilation_rates = {1, 2, 4};
  c.positional = positional;
  return c;
}

TrainingConfig training_config() {
  TrainingConfig t;
  t.steps = 3;
  t.gradient_accumulation = 2;
  t.lr = 1e-2;
  t.min_lr = 1e-3;
  t.warmup_steps = 1;
  t.grad_clip = 0.5;  // below the tiny model's gradient norms: the clip is active
  return t;
}

struct TrainingRun {
  std::vector<StepResult> steps;
  double validation = 0;
  std::vector<Tensor> parameters;
  std::vector<Tensor> gradients;  // of the last step, summed over ranks
  std::vector<std::string> names;
};

template <class Model, class Config>
TrainingRun train(const Config& config, const BatchSource& data, const Distribution& distribution, int steps = 3) {
  Model model(config, Device::cpu(), 5);
  TrainingConfig t = training_config();
  t.steps = steps;
  Trainer trainer(model, data, t, distribution);
  TrainingRun run;
  for (int i = 0; i < steps; ++i) run.steps.push_back(trainer.step());
  run.validation = trainer.evaluate(2);
  trainer.verify_replicas();  // throws on every rank if any rank's state differs
  for (const auto& p : model.parameters()) {
    run.parameters.push_back(p->value.clone());
    run.gradients.push_back(p->grad.clone());
    run.names.push_back(p->name);
  }
  return run;
}

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// The distributed run against the single-process one: the largest relative difference of
// losses, gradient norms and the validation loss, and of any parameter or its gradient of
// the last step (relative L2).
struct Difference {
  double losses = 0, parameters = 0;
  std::string detail;
};
Difference compare(const TrainingRun& distributed, const TrainingRun& single) {
  Difference d;
  for (std::size_t i = 0; i < single.steps.size(); ++i) {
    d.losses = std::max({d.losses, relative(distributed.steps[i].loss, single.steps[i].loss),
                         relative(distributed.steps[i].grad_norm, single.steps[i].grad_norm)});
    EXPECT_EQ(distributed.steps[i].tokens, single.steps[i].tokens);
    EXPECT_GT(single.steps[i].grad_norm, training_config().grad_clip);  // the clip was active
  }
  d.losses = std::max(d.losses, relative(distributed.validation, single.validation));
  std::string worst;
  for (std::size_t i = 0; i < single.parameters.size(); ++i) {
    // The cross-attention's key bias adds the same q.b to every score of a row (no
    // positional encoding there): its gradient is exactly 0 but computed as rounding noise,
    // which AdamW normalises into steps of +-lr. Nothing to compare.
    if (single.names[i].ends_with("cross_attn.k_proj.bias")) continue;
    const double e = std::max(relative_l2_error(distributed.parameters[i], single.parameters[i], 0.0),
                              relative_l2_error(distributed.gradients[i], single.gradients[i], 0.0));
    if (e > d.parameters) worst = single.names[i];
    d.parameters = std::max(d.parameters, e);
  }
  d.detail =
      str("losses ", d.losses, ", parameters ", d.parameters, " (", worst, "; first loss ", single.steps[0].loss, ")");
  return d;
}

struct TrainingCase {
  const char* name;
  Parallelism parallelism;
  SequenceOrder order;
  std::int64_t batch, seq_len;
  RandomBatches::Scored scored;
  nn::PositionalEncoding positional;
};

std::vector<TrainingCase> cases() {
  using enum RandomBatches::Scored;
  return {
      // 5 sequences: uneven shares over 2 and 3 ranks.
      {"data", Parallelism::data, SequenceOrder::contiguous, 5, 13, some, nn::PositionalEncoding::xpos},
      {"data, rope, all scored", Parallelism::data, SequenceOrder::contiguous, 6, 9, all, nn::PositionalEncoding::rope},
      // 13 positions: uneven slices; segments of 6 and 16 cross them.
      {"sequence contiguous", Parallelism::sequence, SequenceOrder::contiguous, 2, 13, some,
       nn::PositionalEncoding::xpos},
      {"sequence zigzag", Parallelism::sequence, SequenceOrder::zigzag, 2, 14, some, nn::PositionalEncoding::xpos},
      // Only the last positions scored: the first ranks' shares count no token.
      {"sequence, last positions scored, rope", Parallelism::sequence, SequenceOrder::contiguous, 3, 11, last_positions,
       nn::PositionalEncoding::rope},
  };
}

void check_cases(DType dtype, double loss_tolerance, double parameter_tolerance) {
  for (const TrainingCase& c : cases()) {
    const RandomBatches data(c.batch, c.seq_len, 11, c.scored);
    const LongNetLMConfig config = test_config(dtype, c.positional);
    const TrainingRun single = train<LongNetLM>(config, data, {});
    const TrainingRun distributed = train<LongNetLM>(config, data, {world(), c.parallelism, c.order});
    const Difference d = compare(distributed, single);
    EXPECT_LE(d.losses, loss_tolerance) << c.name << ": " << d.detail;
    EXPECT_LE(d.parameters, parameter_tolerance) << c.name << ": " << d.detail;
  }
}

TEST(DistributedTraining, Float64EqualsSingleProcess) { check_cases(DType::f64, 1e-12, 1e-11); }

// Parameters to 1e-4: AdamW divides each gradient by its own running RMS, which turns the
// f32 rounding of small gradients into relative differences a few times 1e-5.
TEST(DistributedTraining, Float32EqualsSingleProcess) { check_cases(DType::f32, 1e-5, 1e-4); }

TEST(DistributedTraining, EncoderDecoderEqualsSingleProcess) {
  LongNetConfig config;
  static_cast<LongNetLMConfig&>(config) = test_config(DType::f64);
  config.layers = 1;
  config.encoder_layers = 1;
  const RandomBatches data(3, 12, 11, RandomBatches::Scored::some, /*with_source=*/true);
  const TrainingRun single = train<LongNet>(config, data, {});
  for (Parallelism parallelism : {Parallelism::data, Parallelism::sequence}) {
    const TrainingRun distributed = train<LongNet>(config, data, {world(), parallelism, SequenceOrder::contiguous});
    const Difference d = compare(distributed, single);
    EXPECT_LE(d.losses, 1e-12) << to_string(parallelism) << ": " << d.detail;
    EXPECT_LE(d.parameters, 1e-11) << to_string(parallelism) << ": " << d.detail;
  }
}

// A path every rank agrees on (rank 0's process id).
std::filesystem::path shared_temp_dir(const std::string& name) {
  const Tensor id = Tensor::full({1}, static_cast<double>(getpid()), DType::i64);
  world()->broadcast(id, 0);
  return std::filesystem::temp_directory_path() /
         str("longnet_dist_training_", name, "_", static_cast<std::int64_t>(id.item()));
}

TEST(DistributedTraining, ResumeContinuesExactly) {
  const LongNetLMConfig config = test_config(DType::f32);
  const RandomBatches data(4, 13, 11, RandomBatches::Scored::some);
  const std::filesystem::path dir = shared_temp_dir("resume");
  if (world()->rank() == 0) std::filesystem::create_directories(dir);
  world()->barrier();
  for (Parallelism parallelism : {Parallelism::data, Parallelism::sequence}) {
    const Distribution distribution{world(), parallelism, SequenceOrder::zigzag};
    TrainingConfig t = training_config();
    t.steps = 4;
    LongNetLM whole(config, Device::cpu(), 5);
    Trainer uninterrupted(whole, data, t, distribution);
    std::vector<double> expected;
    for (int i = 0; i < 4; ++i) expected.push_back(uninterrupted.step().loss);

    const std::filesystem::path checkpoint = dir / str(to_string(parallelism), ".safetensors");
    {
      LongNetLM first_half(config, Device::cpu(), 5);
      Trainer trainer(first_half, data, t, distribution);
      trainer.step();
      trainer.step();
      trainer.save_checkpoint(checkpoint);
    }
    LongNetLM second_half(config, Device::cpu(), 7);  // other initial values: all come from the checkpoint
    Trainer resumed(second_half, data, t, distribution);
    resumed.resume(checkpoint);
    EXPECT_EQ(resumed.steps_done(), 2);
    std::vector<double> losses;
    for (int i = 2; i < 4; ++i) losses.push_back(resumed.step().loss);
    EXPECT_EQ(losses[0], expected[2]) << to_string(parallelism);
    EXPECT_EQ(losses[1], expected[3]) << to_string(parallelism);
    const auto a = whole.parameters(), b = second_half.parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i]->value.to_vector<float>(), b[i]->value.to_vector<float>()) << a[i]->name;
    }
  }
  world()->barrier();
  if (world()->rank() == 0) std::filesystem::remove_all(dir);
}

// Runs `body`, which must throw an Error on every rank; returns its message.
template <class Body>
std::string error_on_every_rank(Body body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "rank " << world()->rank() << " got no error";
  return std::string();
}

// Every rank reports `message`; and the world still works afterwards.
void expect_error_everywhere(const std::string& message, const std::string& fragment) {
  EXPECT_NE(message.find(fragment), std::string::npos) << "rank " << world()->rank() << ": " << message;
  const Tensor same = Tensor::full({1}, static_cast<double>(fingerprint(message) & 0x7FFFFFFF), DType::i64);
  const Tensor most = same.clone();
  world()->all_reduce(most, ReduceOp::max);
  EXPECT_EQ(most.item(), same.item()) << "ranks report different errors: " << message;
  EXPECT_NO_THROW(run_collectively(*world(), [] {}));
}

TEST(DistributedTraining, BadConfigurationsAreTheSameErrorOnEveryRank) {
  const int P = world()->size();
  const LongNetLMConfig config = test_config(DType::f32);
  auto step_with = [&](const BatchSource& data, Parallelism parallelism, SequenceOrder order) {
    return error_on_every_rank([&] {
      LongNetLM model(config, Device::cpu(), 5);
      Trainer trainer(model, data, training_config(), {world(), parallelism, order});
      trainer.step();
    });
  };
  // Fewer sequences than processes.
  const RandomBatches small_batch(P - 1, 12, 11, RandomBatches::Scored::all);
  expect_error_everywhere(step_with(small_batch, Parallelism::data, SequenceOrder::contiguous),
                          str("data parallelism over ", P, " processes: batch_size = ", P - 1));
  // Fewer positions than the layouts need.
  const RandomBatches short_sequences(2, 2 * P - 1, 11, RandomBatches::Scored::all);
  expect_error_everywhere(step_with(short_sequences, Parallelism::sequence, SequenceOrder::zigzag),
                          str("seq_len = ", 2 * P - 1, " with world_size = ", P));
  const RandomBatches shorter(2, P - 1, 11, RandomBatches::Scored::all);
  expect_error_everywhere(step_with(shorter, Parallelism::sequence, SequenceOrder::contiguous),
                          str("seq_len = ", P - 1, " with world_size = ", P));
  const std::string message = step_with(shorter, Parallelism::sequence, SequenceOrder::contiguous);
  EXPECT_EQ(message.rfind("sequence parallelism over", 0), 0u) << "an agreed error is not prefixed: " << message;
}

// A token out of the vocabulary in the last rank's share only: that rank fails alone, and
// every rank reports it by rank.
TEST(DistributedTraining, AFailureInOneRanksShareIsAnErrorOnEveryRank) {
  const int P = world()->size();
  const LongNetLMConfig config = test_config(DType::f32);
  Batch bad{random_tokens(P, 8, 11, 1), random_tokens(P, 8, 11, 2), Tensor()};
  bad.targets.data<std::int32_t>()[(P - 1) * 8 + 3] = 99;
  const FixedBatches data(bad);
  for (Parallelism parallelism : {Parallelism::data, Parallelism::sequence}) {
    const std::string message = error_on_every_rank([&] {
      LongNetLM model(config, Device::cpu(), 5);
      Trainer trainer(model, data, training_config(), {world(), parallelism, SequenceOrder::contiguous});
      trainer.step();
    });
    expect_error_everywhere(message, "= 99: must be in [0, 11)");
    if (parallelism == Parallelism::data) {
      EXPECT_EQ(message.rfind(str("rank ", P - 1, ": "), 0), 0u) << message;
    }
  }
}

TEST(DistributedTraining, RanksConfiguredDifferentlyAreAnErrorOnEveryRank) {
  const LongNetLMConfig config = test_config(DType::f32);
  const RandomBatches data(4, 8, 11, RandomBatches::Scored::all);
  LongNetLM model(config, Device::cpu(), 5);
  TrainingConfig t = training_config();
  if (world()->rank() == 1) t.lr *= 2;
  expect_error_everywhere(
      error_on_every_rank([&] {
        Trainer trainer(model, data, t, {world(), Parallelism::data});
      }),
      "the training setup (model and training configuration, parallelism, batch shape): rank 1 differs from rank 0");
  // Parameters that drifted apart on one rank.
  Trainer trainer(model, data, training_config(), {world(), Parallelism::data});
  if (world()->rank() == 1) model.parameters().front()->value.data<float>()[0] += 1e-3f;
  expect_error_everywhere(error_on_every_rank([&] { trainer.verify_replicas(); }),
                          "the parameters and optimizer state: rank 1 differs from rank 0");
}

}  // namespace
}  // namespace longnet::testing
