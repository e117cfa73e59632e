// The training loop (trainer.hpp).
#include "longnet/model/trainer.hpp"

#include <cmath>
#include <optional>
#include <sstream>
#include <vector>

#include "longnet/kernels/counter_rng.hpp"
#include "longnet/model/checkpoint.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/gradient_norm_queue.hpp"

namespace longnet::model {

void TrainingConfig::validate() const {
  require(steps >= 1, "steps = ", steps, ": must be >= 1");
  require(gradient_accumulation >= 1, "gradient_accumulation = ", gradient_accumulation, ": must be >= 1");
  require(std::isfinite(grad_clip), "grad_clip = ", grad_clip, ": must be finite");
  schedule().validate();
  adamw.validate();
}

namespace {

const TrainingConfig& validated(const TrainingConfig& config) {
  config.validate();
  return config;
}

const Distribution& validated(const Distribution& distribution) {
  distribution.validate();
  return distribution;
}

// Everything that must be equal on every rank of a distributed run, as text (doubles
// exactly, in hexadecimal).
std::string training_setup(const LanguageModel& model, const BatchSource& data, const TrainingConfig& c,
                           const Distribution& d) {
  std::ostringstream out;
  out << std::hexfloat << model.config_json() << "|" << c.steps << "," << c.gradient_accumulation << "," << c.lr << ","
      << c.min_lr << "," << c.warmup_steps << "," << c.grad_clip << "," << c.adamw.beta1 << "," << c.adamw.beta2 << ","
      << c.adamw.eps << "," << c.adamw.weight_decay << "," << c.seed << "," << c.deterministic << "|"
      << to_string(d.parallelism) << "," << to_string(d.order) << "|" << data.tokens_per_batch();
  return out.str();
}

void resume_from(const std::filesystem::path& path, const LanguageModel& model, AdamW& optimizer) {
  const CheckpointInfo info = read_checkpoint_info(path);
  require(info.config_json == model.config_json(), path.string(),
          ": the checkpoint's model configuration differs from this model's (", info.config_json, " vs ",
          model.config_json(), ")");
  // The optimizer state validates everything before it changes anything, and so does
  // load_parameters, whose file read_checkpoint_info has just validated.
  load_optimizer_state(path, optimizer, info.step);
  load_parameters(path, model);
}

}  // namespace

Trainer::Trainer(LanguageModel& model, const BatchSource& data, TrainingConfig config, Distribution distribution)
    : model_(model),
      data_(data),
      config_(validated(config)),
      distribution_(validated(distribution)),
      optimizer_(model.parameters(), config.adamw) {
  if (!distribution_.distributed()) return;
  Communicator& comm = *distribution_.comm;
  run_collectively(comm, [&] {
    require(model.device() == comm.device(), to_string(distribution_.parallelism), " parallelism: the model is on ",
            to_string(model.device()), " but the ", comm.name(), " communicator works on ", to_string(comm.device()),
            " (distributed training runs on the CPU for now)");
  });
  require_equal_on_every_rank(comm, fingerprint(training_setup(model_, data_, config_, distribution_)),
                              "the training setup (model and training configuration, parallelism, batch shape)");
  verify_replicas();
}

nn::ForwardContext Trainer::training_context(std::int64_t step, std::int64_t micro_step) const {
  // Each rank its own dropout masks (rank 0 keeps the single-process ones).
  const int rank = distribution_.rank();
  const std::uint64_t seed =
      rank == 0 ? config_.seed : config_.seed ^ kernels::mix64(0xD15700ull + static_cast<std::uint64_t>(rank));
  return {
      .training = true, .seed = seed, .step = step, .micro_step = micro_step, .deterministic = config_.deterministic};
}

PendingLoss Trainer::forward_backward(const Batch& global, nn::ForwardContext context, double loss_scale) {
  if (!distribution_.distributed()) {
    PendingLoss loss = model_.queue_forward_loss(global, context);
    model_.backward(loss_scale);  // needs only the count of targets: queued behind the forward
    return loss;
  }
  Communicator& comm = *distribution_.comm;
  BatchShare share;
  LossOutput mine;
  run_collectively(comm, [&] {
    share = share_batch(global, distribution_);
    context.sequence = share.sequence.get();
    mine = model_.forward_loss(share.batch, context);
  });
  // The global loss sum and count; each rank's gradients then carry 1 / the global count.
  const Tensor totals = Tensor::from_vector<double>(
      {mine.loss * static_cast<double>(mine.tokens), static_cast<double>(mine.tokens)}, {2});
  comm.host().all_reduce(totals, ReduceOp::sum);  // host numbers: the host side of an NCCL communicator
  const std::vector<double> sums = totals.to_vector<double>();
  const auto tokens = static_cast<std::int64_t>(sums[1]);
  const double share_of_loss = tokens > 0 ? static_cast<double>(mine.tokens) / static_cast<double>(tokens) : 0.0;
  run_collectively(comm, [&] { model_.backward(loss_scale * share_of_loss); });
  return {Tensor::from_vector<double>({sums[0]}, {1}), tokens};
}

Batch Trainer::batch_for(std::int64_t step, std::int64_t micro_step) {
  if (prefetched_.step == step && prefetched_.micro_step == micro_step) {
    Prefetched taken = std::move(prefetched_);
    prefetched_ = {};
    return std::move(taken.batch);
  }
  return data_.train_batch(step, micro_step);
}

void Trainer::prefetch_after(std::int64_t step, std::int64_t micro_step) {
  std::int64_t next_step = step, next_micro = micro_step + 1;
  if (next_micro == config_.gradient_accumulation) next_step += 1, next_micro = 0;
  if (next_step >= config_.steps) return;
  try {
    prefetched_ = {next_step, next_micro, data_.train_batch(next_step, next_micro)};
  } catch (const std::exception&) {
    prefetched_ = {};  // that step asks again, and reports the error then
  }
}

StepResult Trainer::step(bool queue_next) {
  QueuedStep current = ahead_ ? std::move(*ahead_) : queue_step(nullptr);
  ahead_.reset();
  // Distributed steps wait for the host inside (the loss totals): nothing to gain there.
  if (queue_next && current.step + 1 < config_.steps && !distribution_.distributed()) {
    try {
      ahead_ = queue_step(&current.norm_squared);
    } catch (...) {  // e.g. the next batch failed: this step stands (or diverged); then that error
      finish(current);
      throw;
    }
  }
  return finish(current);
}

Trainer::QueuedStep Trainer::queue_step(const Tensor* previous_norm_squared) {
  QueuedStep queued;
  queued.step = optimizer_.steps();
  // The weight matrices' zero fill may be left to the first backward's GEMMs, which then
  // store instead of adding (nn::DeferredGradientZero: the same bits); not when the
  // gradients are all-reduced (sharded layers write them their own way).
  std::optional<nn::DeferredGradientZero> deferred_zero;
  if (!distribution_.distributed() && nn::deferred_gradient_zero_enabled()) {
    deferred_zero.emplace(model_.parameters());
  } else {
    model_.zero_grad();
  }
  // Nothing here waits for the device: the losses and the gradient norm stay there, and
  // the update reads the norm there.
  const std::int64_t micro_steps = config_.gradient_accumulation;
  // The last backward may queue the gradient norm layer by layer (nn::GradientNormQueue:
  // the same bits, less of it after the backward); not when an all-reduce follows it.
  std::optional<nn::GradientNormQueue> norms;
  for (std::int64_t micro = 0; micro < micro_steps; ++micro) {
    if (micro + 1 == micro_steps && !distribution_.distributed() && nn::gradient_norm_in_backward()) {
      norms.emplace(optimizer_.parameters());
    }
    queued.losses.push_back(forward_backward(batch_for(queued.step, micro), training_context(queued.step, micro),
                                             1.0 / static_cast<double>(micro_steps)));
    if (deferred_zero) deferred_zero->close();  // what the backward did not write is zero
    prefetch_after(queued.step, micro);
  }
  if (distribution_.distributed()) all_reduce_gradients(*distribution_.comm, optimizer_.parameters());
  // Of the summed gradients when distributed: the same global norm on every rank.
  queued.norm_squared = norms ? norms->finish() : gradient_sum_of_squares(optimizer_.parameters());
  queued.norm_read = PendingRead(queued.norm_squared);
  // now + 0 x previous: the same bits where the previous norm is finite, NaN where it is not
  // (0 x inf = NaN), and the update skips a step whose clip sum is not finite.
  const Tensor clip_sum =
      previous_norm_squared ? nn::add(queued.norm_squared, *previous_norm_squared, 0.0) : queued.norm_squared;
  queued.lr = config_.schedule().at(queued.step);
  optimizer_.step(queued.lr, GradientClip{clip_sum, config_.grad_clip});
  return queued;
}

StepResult Trainer::finish(const QueuedStep& queued) {
  StepResult result;
  result.step = queued.step;
  result.lr = queued.lr;
  const auto micro_steps = static_cast<double>(queued.losses.size());
  for (const PendingLoss& loss : queued.losses) {  // the first read waits for the step
    result.loss += loss.value() / micro_steps;
    result.tokens += loss.tokens();
  }
  result.grad_norm = std::sqrt(queued.norm_read.item());
  if (!std::isfinite(result.grad_norm)) {
    // The update changed nothing (GradientClip), nor did that of a step queued behind it.
    if (ahead_) {
      optimizer_.forget_skipped_step();
      ahead_.reset();
    }
    optimizer_.forget_skipped_step();
    throw Error(str("step ", result.step, ": the gradient norm is ", result.grad_norm, " (loss ", result.loss,
                    "): training diverged; lower the learning rate"));
  }
  return result;
}

void Trainer::require_nothing_queued_ahead(const char* what) const {
  require(!ahead_, "Trainer::", what, ": step ", ahead_ ? ahead_->step : 0,
          " is queued ahead (step(true)); finish it with step() first");
}

double Trainer::evaluate(std::int64_t batches) const {
  require_nothing_queued_ahead("evaluate");
  require(batches >= 1, "evaluation batches = ", batches, ": must be >= 1");
  double loss_sum = 0;
  std::int64_t tokens = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    const Batch global = data_.validation_batch(i);
    LossOutput loss;
    if (!distribution_.distributed()) {
      loss = model_.forward_loss(global, nn::ForwardContext{});
    } else {
      run_collectively(*distribution_.comm, [&] {
        const BatchShare share = share_batch(global, distribution_);
        loss = model_.forward_loss(share.batch, nn::ForwardContext{.sequence = share.sequence.get()});
      });
    }
    loss_sum += loss.loss * static_cast<double>(loss.tokens);
    tokens += loss.tokens;
  }
  if (distribution_.distributed()) {
    const Tensor totals = Tensor::from_vector<double>({loss_sum, static_cast<double>(tokens)}, {2});
    distribution_.comm->host().all_reduce(totals, ReduceOp::sum);
    const std::vector<double> sums = totals.to_vector<double>();
    return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
  }
  return tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
}

void Trainer::save_checkpoint(const std::filesystem::path& path) const {
  require_nothing_queued_ahead("save_checkpoint");
  auto save = [&] {
    model::save_checkpoint(path, model_, &optimizer_, optimizer_.steps(),
                           {{"training_seed", std::to_string(config_.seed)}});
  };
  if (!distribution_.distributed()) return save();
  verify_replicas();
  run_collectively(*distribution_.comm, [&] {
    if (distribution_.rank() == 0) save();
  });
}

void Trainer::resume(const std::filesystem::path& path) {
  require_nothing_queued_ahead("resume");
  if (!distribution_.distributed()) return resume_from(path, model_, optimizer_);
  Communicator& comm = *distribution_.comm;
  run_collectively(comm, [&] {
    if (comm.rank() == 0) resume_from(path, model_, optimizer_);
  });
  // Rank 0's parameters, optimizer state and step to every rank.
  for (const nn::ParameterPtr& p : optimizer_.parameters()) comm.broadcast(p->value, 0);
  const NamedTensors state = optimizer_.state();  // views of the optimizer's own tensors
  for (const auto& [name, tensor] : state) comm.broadcast(tensor, 0);
  const Tensor steps = Tensor::full({1}, static_cast<double>(optimizer_.steps()), DType::i64);
  comm.host().broadcast(steps, 0);
  run_collectively(comm, [&] {
    optimizer_.set_state(state, static_cast<std::int64_t>(steps.item()), "rank 0's optimizer state");
    model_.refresh_compute_copies();
  });
  verify_replicas();
}

void Trainer::verify_replicas() const {
  if (!distribution_.distributed()) return;
  std::vector<Tensor> tensors;
  for (const nn::ParameterPtr& p : optimizer_.parameters()) tensors.push_back(p->value);
  for (const auto& [name, tensor] : optimizer_.state()) tensors.push_back(tensor);
  tensors.push_back(Tensor::full({1}, static_cast<double>(optimizer_.steps()), DType::i64));
  require_equal_on_every_rank(*distribution_.comm, fingerprint(tensors), "the parameters and optimizer state");
}

}  // namespace longnet::model
