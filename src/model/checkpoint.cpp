// Checkpoints (checkpoint.hpp): two safetensors files, strict validation on load.
#include "longnet/model/checkpoint.hpp"

#include <charconv>
#include <cmath>

#include "longnet/nn/functional.hpp"

namespace longnet::model {
namespace {

constexpr const char* kModelFormat = "longnet-checkpoint";
constexpr const char* kOptimizerFormat = "longnet-optimizer-state";

std::string metadata_field(const SafetensorsReader& reader, const std::string& key) {
  const auto& metadata = reader.metadata();
  const auto it = metadata.find(key);
  require(it != metadata.end(), reader.name(), ": the checkpoint metadata has no '", key, "'");
  return it->second;
}

std::int64_t parse_integer(const SafetensorsReader& reader, const std::string& key) {
  const std::string text = metadata_field(reader, key);
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  require(error == std::errc() && end == text.data() + text.size() && value >= 0, reader.name(), ": metadata '", key,
          "' = '", text, "': must be a non-negative integer");
  return value;
}

void require_format(const SafetensorsReader& reader, const char* format) {
  const auto& metadata = reader.metadata();
  const auto it = metadata.find("format");
  require(it != metadata.end() && it->second == format, reader.name(), ": not a ", format,
          " file (metadata 'format' is ", it == metadata.end() ? std::string("missing") : "'" + it->second + "'", ")");
  const std::int64_t version = parse_integer(reader, "format_version");
  require(version == kCheckpointFormatVersion, reader.name(), ": format_version ", version,
          " is not supported (this build reads version ", kCheckpointFormatVersion, ")");
}

// Every parameter present with its shape and a floating dtype, and nothing else.
void check_parameters(const SafetensorsReader& reader, const std::vector<nn::ParameterPtr>& parameters) {
  for (const nn::ParameterPtr& p : parameters) {
    require(reader.contains(p->name), reader.name(), ": the checkpoint lacks parameter '", p->name, "'");
    const SafetensorsEntry& e = reader.entry(p->name);
    require(e.shape == p->value.shape(), reader.name(), ": parameter '", p->name, "' has shape ",
            shape_to_string(e.shape), ", the model expects ", shape_to_string(p->value.shape()));
    require(is_floating(e.dtype), reader.name(), ": parameter '", p->name, "' has dtype ", dtype_name(e.dtype),
            ": must be floating");
  }
  require(reader.entries().size() == parameters.size(), reader.name(), ": the checkpoint has ", reader.entries().size(),
          " tensors but the model has ", parameters.size(), " parameters");
}

}  // namespace

std::filesystem::path optimizer_state_path(const std::filesystem::path& path) {
  const std::string s = path.string();
  const std::string extension = ".safetensors";
  if (s.size() > extension.size() && s.ends_with(extension)) {
    return s.substr(0, s.size() - extension.size()) + ".optimizer.safetensors";
  }
  return s + ".optimizer";
}

void save_checkpoint(const std::filesystem::path& path, const LanguageModel& model, const AdamW* optimizer,
                     std::int64_t step, const std::map<std::string, std::string>& extra_metadata) {
  require(step >= 0, "checkpoint step = ", step, ": must be >= 0");
  const std::vector<nn::ParameterPtr> parameters = model.parameters();
  NamedTensors tensors;
  for (const nn::ParameterPtr& p : parameters) {
    require(std::isfinite(nn::sum_of_squares(p->value)), "refusing to write checkpoint ", path.string(),
            ": parameter '", p->name, "' has non-finite values (the run diverged; the previous checkpoint is kept)");
    tensors.emplace_back(p->name, p->value);
  }
  const std::string config = model.config_json();
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata["format"] = kModelFormat;
  metadata["format_version"] = std::to_string(kCheckpointFormatVersion);
  metadata["architecture"] = architecture_of(config, "model");
  metadata["config"] = config;
  metadata["step"] = std::to_string(step);
  if (optimizer) {
    // The optimizer state first: a crash between the two writes leaves the previous model
    // file, and resuming then reports the steps' mismatch instead of mixing states.
    const AdamWConfig& c = optimizer->config();
    save_safetensors(optimizer_state_path(path), optimizer->state(),
                     {{"format", kOptimizerFormat},
                      {"format_version", std::to_string(kCheckpointFormatVersion)},
                      {"step", std::to_string(step)},
                      {"optimizer", "adamw"},
                      {"beta1", str(c.beta1)},
                      {"beta2", str(c.beta2)},
                      {"eps", str(c.eps)},
                      {"weight_decay", str(c.weight_decay)}});
  }
  save_safetensors(path, tensors, metadata);
}

CheckpointInfo read_checkpoint_info(const std::filesystem::path& path) {
  const SafetensorsReader reader(path);
  require_format(reader, kModelFormat);
  CheckpointInfo info;
  info.config_json = metadata_field(reader, "config");
  info.architecture = architecture_of(info.config_json, reader.name());
  require(metadata_field(reader, "architecture") == info.architecture, reader.name(),
          ": metadata 'architecture' disagrees with the configuration's");
  info.step = parse_integer(reader, "step");
  info.metadata = reader.metadata();
  return info;
}

void load_parameters(const std::filesystem::path& path, const LanguageModel& model) {
  const SafetensorsReader reader(path);
  require_format(reader, kModelFormat);
  const std::vector<nn::ParameterPtr> parameters = model.parameters();
  check_parameters(reader, parameters);  // everything before changing anything
  for (const nn::ParameterPtr& p : parameters) {
    p->value.copy_from(reader.view(p->name));
    p->refresh_compute();  // mixed precision: the bf16 copy of the loaded master weights
  }
}

void load_optimizer_state(const std::filesystem::path& path, AdamW& optimizer, std::int64_t step) {
  const SafetensorsReader reader(optimizer_state_path(path));
  require_format(reader, kOptimizerFormat);
  const std::int64_t saved_step = parse_integer(reader, "step");
  require(saved_step == step, reader.name(), ": the optimizer state is from step ", saved_step, " but the checkpoint ",
          path.string(), " is from step ", step, " (an interrupted save?)");
  NamedTensors state;
  for (const SafetensorsEntry& e : reader.entries()) state.emplace_back(e.name, reader.view(e.name));
  optimizer.set_state(state, step, reader.name());
}

namespace {

// The compute dtype a loaded model runs in: the one asked for, else the checkpoint's where
// the device supports it (mixed precision is CUDA-only), else the parameters' dtype.
void choose_compute_dtype(LongNetLMConfig& config, Device device, std::optional<DType> compute_dtype) {
  if (compute_dtype) {
    config.compute_dtype = *compute_dtype;
  } else if (!device.is_cuda()) {
    config.compute_dtype = config.dtype;
  }
}

}  // namespace

std::unique_ptr<LongNetLM> load_longnet_lm(const std::filesystem::path& path, Device device,
                                           std::optional<DType> compute_dtype) {
  const CheckpointInfo info = read_checkpoint_info(path);
  require(info.architecture == "longnet_lm", path.string(), ": architecture '", info.architecture,
          "' is not a decoder-only LongNetLM");
  LongNetLMConfig config = lm_config_from_json(info.config_json, path.string());
  choose_compute_dtype(config, device, compute_dtype);
  auto model = std::make_unique<LongNetLM>(config, device);
  load_parameters(path, *model);
  return model;
}

std::unique_ptr<LongNet> load_longnet(const std::filesystem::path& path, Device device,
                                      std::optional<DType> compute_dtype) {
  const CheckpointInfo info = read_checkpoint_info(path);
  require(info.architecture == "longnet", path.string(), ": architecture '", info.architecture,
          "' is not an encoder-decoder LongNet");
  LongNetConfig config = longnet_config_from_json(info.config_json, path.string());
  choose_compute_dtype(config, device, compute_dtype);
  auto model = std::make_unique<LongNet>(config, device);
  load_parameters(path, *model);
  return model;
}

}  // namespace longnet::model
