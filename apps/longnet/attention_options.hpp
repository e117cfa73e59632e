// The flags that describe one dilated attention, shared by `longnet attn` and
// `longnet bench attention`: --segments, --dilations, --mode, --causal, --scale, and the
// compute device and dtype (--device, --dtype). Turning them into a validated
// DilatedAttentionConfig, Device and DType is the library's job; this file only maps flag
// names onto it so that error messages name the flags the user typed.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/dtype.hpp"

namespace longnet::cli {

struct AttentionOptions {
  std::string segments = "2048,4096,8192";
  std::string dilations = "1,2,4";
  std::string mode = "longnet";
  bool causal = false;
  std::optional<double> scale;

  // Registers the flags on `command`: --segments and --dilations required, or with these
  // members' values as defaults.
  void add_to(CLI::App& command, bool patterns_required);
  // The configuration the flags describe; throws Error naming the flag on bad values
  // (unparsable or empty lists, lists of different lengths, r = 0, r > w, ...).
  DilatedAttentionConfig config() const;
};

struct ComputeOptions {
  std::string device = "cpu";
  std::string dtype = "f32";

  void add_to(CLI::App& command, const std::string& dtype_help);
  // The device (which must exist in this build and on this machine).
  Device parsed_device() const;
  // A floating dtype (f32, f64, bf16, f16); "auto" means f32 on the CPU and bf16 on CUDA.
  DType parsed_dtype(Device on) const;
};

// "(2048, 1) (4096, 2) (8192, 4)" for a config's patterns.
std::string describe_patterns(const DilatedAttentionConfig& config);

}  // namespace longnet::cli
