// Attention and compute flags shared by the commands (see attention_options.hpp).
#include "attention_options.hpp"

#include <cmath>

#include "longnet/core/error.hpp"
#include "parse_values.hpp"

namespace longnet::cli {

void AttentionOptions::add_to(CLI::App& command, bool patterns_required) {
  auto* segment_option =
      command.add_option("--segments", segments, "Segment lengths w, comma-separated (K/M suffixes allowed)");
  auto* dilation_option =
      command.add_option("--dilations", dilations, "Dilation rates r, one per segment length (1 <= r <= w)");
  for (auto* option : {segment_option, dilation_option}) {
    if (patterns_required) {
      option->required();
    } else {
      option->capture_default_str();
    }
  }
  command
      .add_option("--mode", mode,
                  "longnet (every head uses every pattern) or head_groups (head group i uses pattern i)")
      ->capture_default_str();
  command.add_flag("--causal", causal, "Causal attention (a query sees keys at or before it)");
  command.add_option("--scale", scale, "Softmax scale (default 1/sqrt(head_dim))");
}

DilatedAttentionConfig AttentionOptions::config() const {
  DilatedAttentionConfig config;
  config.segment_lengths = parse_integer_list(segments, "--segments");
  config.dilation_rates = parse_integer_list(dilations, "--dilations");
  require(config.segment_lengths.size() == config.dilation_rates.size(), "--segments has ",
          config.segment_lengths.size(), " entries but --dilations has ", config.dilation_rates.size(),
          ": give one dilation rate per segment length");
  config.mode = parse_dilated_mode(mode, "--mode");
  config.causal = causal;
  if (scale) require(std::isfinite(*scale), "--scale = ", *scale, ": must be finite");
  config.scale = scale;
  config.validate();
  return config;
}

void ComputeOptions::add_to(CLI::App& command, const std::string& dtype_help) {
  command.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  command.add_option("--dtype", dtype, dtype_help)->capture_default_str();
}

Device ComputeOptions::parsed_device() const {
  const Device parsed = parse_device(device, "--device");
  require_device_available(parsed, "--device");
  return parsed;
}

DType ComputeOptions::parsed_dtype(Device on) const {
  if (dtype == "auto") return on.is_cuda() ? DType::bf16 : DType::f32;
  for (const DType candidate : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    if (dtype == dtype_name(candidate)) return candidate;
  }
  throw Error(str("--dtype = '", dtype, "': must be f32, f64, bf16, f16 or auto"));
}

std::string describe_patterns(const DilatedAttentionConfig& config) {
  std::string out;
  for (std::size_t i = 0; i < config.segment_lengths.size(); ++i) {
    if (i) out += ' ';
    const std::int64_t w = config.segment_lengths[i];
    out += str("(", w == INT64_MAX ? std::string("N") : std::to_string(w), ", ", config.dilation_rates[i], ")");
  }
  return out;
}

}  // namespace longnet::cli
