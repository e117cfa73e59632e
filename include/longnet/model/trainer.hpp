// The training loop as a library piece (the CLI and tests drive it): one optimizer step =
// gradient accumulation over micro-batches, global-norm clipping, AdamW with the warmup +
// cosine schedule; evaluation; checkpoints that resume the run exactly. All randomness
// (batches, dropout) is counter-based from (seed, step, micro-step) and every reduction runs
// in a fixed order, so the losses after a resume equal those of an uninterrupted run, bit
// for bit. On CUDA that needs `deterministic` (the default): the attention backward then
// runs without atomics (DilatedAttentionConfig::deterministic), about a third slower;
// without it a run is reproducible only to rounding. The CPU is always deterministic.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "longnet/model/data.hpp"
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
  Trainer(LanguageModel& model, const BatchSource& data, TrainingConfig config);

  StepResult step();
  // Mean loss over validation batches 0 .. batches-1 (no dropout), weighted by tokens.
  double evaluate(std::int64_t batches) const;
  std::int64_t steps_done() const { return optimizer_.steps(); }
  const TrainingConfig& config() const { return config_; }
  AdamW& optimizer() { return optimizer_; }

  // Model + optimizer state (checkpoint.hpp), written atomically.
  void save_checkpoint(const std::filesystem::path& path) const;
  // Loads parameters and optimizer state saved by save_checkpoint; the model's
  // configuration must equal the checkpoint's.
  void resume(const std::filesystem::path& path);

 private:
  LanguageModel& model_;
  const BatchSource& data_;
  TrainingConfig config_;
  AdamW optimizer_;
};

}  // namespace longnet::model
