// The training loop as a library piece (the CLI and tests drive it): one optimizer step =
// gradient accumulation over micro-batches, global-norm clipping, AdamW with the warmup +
// cosine schedule; evaluation; checkpoints that resume the run exactly. All randomness
// (batches, dropout) is counter-based from (seed, step, micro-step) and every reduction runs
// in a fixed order, so the losses after a resume equal those of an uninterrupted run, bit
// for bit. On CUDA that needs `deterministic` (the default): the attention backward then
// runs without atomics (DilatedAttentionConfig::deterministic), about a third slower;
// without it a run is reproducible only to rounding. The CPU is always deterministic.
//
// Distributed (a Distribution with data or sequence parallelism; distributed_training.hpp):
// every rank builds the same model, data and configuration (checked at construction) and
// calls the same Trainer functions in the same order — they are collective. Each rank
// computes its share of every batch; losses, token counts and gradients are summed over
// the ranks before the global-norm clip and AdamW, so every rank takes the same step, equal
// to the single-process step over the same global batch to rounding. A failure on any rank
// is the same CollectiveError on every rank. Rank 0 alone writes checkpoints; resume()
// reads on rank 0 and broadcasts. Dropout: each rank draws its own masks (its rank mixed
// into the seed), so with dropout > 0 a distributed run is a valid dropout run but not the
// single-process one's masks; exactness holds with dropout 0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "longnet/model/data.hpp"
#include "longnet/model/distributed_training.hpp"
#include "longnet/model/language_model.hpp"
#include "longnet/model/optimizer.hpp"

namespace longnet::model {

struct TrainingConfig {
  std::int64_t steps = 1000;
  std::int64_t gradient_accumulation = 1;
  double lr = 1e-3;
  double min_lr = 1e-4;
  std::int64_t warmup_steps = 100;
  double grad_clip = 1.0;  // <= 0: no clipping
  AdamWConfig adamw;
  std::uint64_t seed = 0;
  bool deterministic = true;  // bitwise repeatable steps on CUDA (exact resume); see above
  void validate() const;
  LearningRateSchedule schedule() const { return {lr, min_lr, warmup_steps, steps}; }
};

struct StepResult {
  std::int64_t step = 0;  // the step just taken (0-based)
  double loss = 0;        // mean over the step's micro-batches
  double lr = 0;
  double grad_norm = 0;  // before clipping
  std::int64_t tokens = 0;
};

class Trainer {
 public:
  // Collective when distributed: checks that every rank has the same configuration, model
  // and initial parameters.
  Trainer(LanguageModel& model, const BatchSource& data, TrainingConfig config, Distribution distribution = {});

  // One step; loss, tokens and grad_norm are global. With `queue_next` (and a next step, and
  // one process), the next step is queued before this one's result is read:
  // the device goes from this step into the next without waiting for the host to read a
  // loss and queue again. The next call to step() finishes the step queued here. A step
  // queued ahead skips its update on the device when this one diverges, so a divergence
  // still changes nothing (the error is thrown here, and both steps are taken back). While
  // a step is queued ahead, evaluate(), save_checkpoint() and resume() refuse: a caller
  // that needs them passes false for the step before.
  StepResult step(bool queue_next = false);
  bool step_queued_ahead() const { return ahead_.has_value(); }
  // Mean loss over validation batches 0 .. batches-1 (no dropout), weighted by tokens
  // (global when distributed: every rank returns the same value).
  double evaluate(std::int64_t batches) const;
  std::int64_t steps_done() const { return optimizer_.steps(); }
  const TrainingConfig& config() const { return config_; }
  const Distribution& distribution() const { return distribution_; }
  AdamW& optimizer() { return optimizer_; }

  // Model + optimizer state (checkpoint.hpp), written atomically (by rank 0 when
  // distributed, after verify_replicas()).
  void save_checkpoint(const std::filesystem::path& path) const;
  // Loads parameters and optimizer state saved by save_checkpoint; the model's
  // configuration must equal the checkpoint's. Distributed: rank 0 reads, every rank gets
  // its state.
  void resume(const std::filesystem::path& path);
  // Distributed: throws the same CollectiveError on every rank unless all ranks hold
  // bitwise the same parameters, optimizer state and step (no-op for one process).
  void verify_replicas() const;

 private:
  // The gradients of loss_scale * (the global mean loss of one global batch), accumulated
  // into the parameters (summed over ranks later); returns the global loss (pending: the
  // step reads it at its end) and tokens.
  PendingLoss forward_backward(const Batch& global, nn::ForwardContext context, double loss_scale);
  nn::ForwardContext training_context(std::int64_t step, std::int64_t micro_step) const;
  // The batch of (step, micro_step): the one prefetched, if it is that one, or a new one.
  Batch batch_for(std::int64_t step, std::int64_t micro_step);
  // Makes the batch after (step, micro_step) while the device runs this one's backward (a
  // BatchSource's batches depend on nothing but their step and micro-step).
  void prefetch_after(std::int64_t step, std::int64_t micro_step);

  struct Prefetched {
    std::int64_t step = -1, micro_step = -1;
    Batch batch;
  };

  // A step queued to the device whose losses and gradient norm are not read yet.
  struct QueuedStep {
    std::int64_t step = 0;
    double lr = 0;
    std::vector<PendingLoss> losses;
    Tensor norm_squared;    // f64, one element, on the device
    PendingRead norm_read;  // its copy to the host, queued behind it
  };
  // Queues the next step: gradients, norm and update. With `previous` (the norm of a step
  // not yet read), the update is skipped where that norm is not finite, as its own is.
  QueuedStep queue_step(const Tensor* previous_norm_squared);
  // Reads a queued step's result; on divergence takes it (and any step queued behind it)
  // back and throws.
  StepResult finish(const QueuedStep& queued);
  void require_nothing_queued_ahead(const char* what) const;

  LanguageModel& model_;
  const BatchSource& data_;
  TrainingConfig config_;
  Distribution distribution_;
  AdamW optimizer_;
  Prefetched prefetched_;
  std::optional<QueuedStep> ahead_;
};

}  // namespace longnet::model
