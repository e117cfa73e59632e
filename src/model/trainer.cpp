// The training loop (trainer.hpp).
#include "longnet/model/trainer.hpp"

#include <cmath>

#include "longnet/model/checkpoint.hpp"

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
}  // namespace

Trainer::Trainer(LanguageModel& model, const BatchSource& data, TrainingConfig config)
    : model_(model), data_(data), config_(validated(config)), optimizer_(model.parameters(), config.adamw) {}

StepResult Trainer::step() {
  StepResult result;
  result.step = optimizer_.steps();
  model_.zero_grad();
  const std::int64_t micro_steps = config_.gradient_accumulation;
  for (std::int64_t micro = 0; micro < micro_steps; ++micro) {
    const nn::ForwardContext context{.training = true,
                                     .seed = config_.seed,
                                     .step = result.step,
                                     .micro_step = micro,
                                     .deterministic = config_.deterministic};
    const LossOutput loss = model_.forward_loss(data_.train_batch(result.step, micro), context);
    model_.backward(1.0 / static_cast<double>(micro_steps));
    result.loss += loss.loss / static_cast<double>(micro_steps);
    result.tokens += loss.tokens;
  }
  result.grad_norm = global_gradient_norm(optimizer_.parameters());
  require(std::isfinite(result.grad_norm), "step ", result.step, ": the gradient norm is ", result.grad_norm, " (loss ",
          result.loss, "): training diverged; lower the learning rate");
  result.lr = config_.schedule().at(result.step);
  optimizer_.step(result.lr, clip_factor(result.grad_norm, config_.grad_clip));
  return result;
}

double Trainer::evaluate(std::int64_t batches) const {
  require(batches >= 1, "evaluation batches = ", batches, ": must be >= 1");
  double loss_sum = 0;
  std::int64_t tokens = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    const LossOutput loss = model_.forward_loss(data_.validation_batch(i), nn::ForwardContext{});
    loss_sum += loss.loss * static_cast<double>(loss.tokens);
    tokens += loss.tokens;
  }
  return tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
}

void Trainer::save_checkpoint(const std::filesystem::path& path) const {
  model::save_checkpoint(path, model_, &optimizer_, optimizer_.steps(),
                         {{"training_seed", std::to_string(config_.seed)}});
}

void Trainer::resume(const std::filesystem::path& path) {
  const CheckpointInfo info = read_checkpoint_info(path);
  require(info.config_json == model_.config_json(), path.string(),
          ": the checkpoint's model configuration differs from this model's (", info.config_json, " vs ",
          model_.config_json(), ")");
  // The optimizer state validates everything before it changes anything, and so does
  // load_parameters, whose file read_checkpoint_info has just validated.
  load_optimizer_state(path, optimizer_, info.step);
  load_parameters(path, model_);
}

}  // namespace longnet::model
