// Checkpoints in safetensors (DESIGN 4). A checkpoint is two files, each replaced
// atomically (temp file + rename, io/atomic_file.hpp):
//   PATH                          the parameters by PyTorch-style name (weights (out, in)),
//                                 metadata: format = "longnet-checkpoint", format_version,
//                                 architecture, config (the model's JSON), step;
//   optimizer_state_path(PATH)    AdamW's exp_avg.<name> and exp_avg_sq.<name>, metadata:
//                                 format_version, step, the AdamW hyper-parameters.
// Saving refuses non-finite parameters (a diverged run never replaces the last good
// checkpoint). Files are untrusted: the reader validates the safetensors structure, and
// every metadata field, parameter name, shape and dtype is checked; any problem is an Error
// naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "longnet/model/language_model.hpp"
#include "longnet/model/longnet.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/optimizer.hpp"

namespace longnet::model {

inline constexpr int kCheckpointFormatVersion = 1;

// PATH with ".safetensors" replaced by ".optimizer.safetensors" (or ".optimizer" appended).
std::filesystem::path optimizer_state_path(const std::filesystem::path& path);

struct CheckpointInfo {
  std::string architecture;  // "longnet_lm" or "longnet"
  std::string config_json;
  std::int64_t step = 0;
  std::map<std::string, std::string> metadata;
};

// Writes the model (and, when given, the optimizer state) at `step`.
void save_checkpoint(const std::filesystem::path& path, const LanguageModel& model, const AdamW* optimizer,
                     std::int64_t step, const std::map<std::string, std::string>& extra_metadata = {});

CheckpointInfo read_checkpoint_info(const std::filesystem::path& path);
// Copies the checkpoint's parameters into `model` (same names, shapes; converted to the
// model's dtype and device).
void load_parameters(const std::filesystem::path& path, const LanguageModel& model);
// Loads the optimizer state written with the checkpoint; its step must equal `step`.
void load_optimizer_state(const std::filesystem::path& path, AdamW& optimizer, std::int64_t step);

// A model built from the checkpoint's configuration, with its parameters (the f32 master
// weights). It computes in `compute_dtype` when given, else in the checkpoint's compute
// dtype on CUDA and in the parameters' dtype on the CPU (a model trained in bf16 on a GPU
// loads for f32 generation on the CPU).
std::unique_ptr<LongNetLM> load_longnet_lm(const std::filesystem::path& path, Device device = Device::cpu(),
                                           std::optional<DType> compute_dtype = std::nullopt);
std::unique_ptr<LongNet> load_longnet(const std::filesystem::path& path, Device device = Device::cpu(),
                                      std::optional<DType> compute_dtype = std::nullopt);

}  // namespace longnet::model
