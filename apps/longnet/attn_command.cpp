// `longnet attn`: one dilated attention (DESIGN 2, 4) on tensors read from a safetensors
// file, the interchange point with PyTorch and anyone's test data.
//   in:  q (B, N, H, D), k and v (B, N, Hk, D), and with --backward do (B, N, H, D), in any
//        float dtype; all are converted to --dtype on --device.
//   out: o (B, N, H, D) and lse (B, H, N), and with --backward dq, dk, dv, all float32,
//        written atomically to --output; the median time of --repeat runs on stdout.
#include <cmath>
#include <iostream>
#include <memory>

#include "attention_options.hpp"
#include "commands.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/io/safetensors.hpp"
#include "measure.hpp"

namespace longnet::cli {
namespace {

struct AttnOptions {
  std::string input, output;
  AttentionOptions attention;
  ComputeOptions compute;
  bool backward = false;
  int repeat = 1;
};

// Tensor `name` of `file` on `device` in `dtype`: it must be a 4-D float tensor.
Tensor load_input(const SafetensorsReader& file, const std::string& name, Device device, DType dtype) {
  const SafetensorsEntry& entry = file.entry(name);  // names the file and the tensors present when missing
  require(is_floating(entry.dtype), "tensor '", name, "' in ", file.name(), " has dtype ", dtype_name(entry.dtype),
          ": must be a float dtype (f32, f64, bf16 or f16)");
  require(entry.shape.size() == 4, "tensor '", name, "' in ", file.name(), " has shape ", shape_to_string(entry.shape),
          ": must be 4-D (batch, seq_len, heads, head_dim)");
  return file.load(name, device).to(dtype);
}

Tensor as_float32_on_host(const Tensor& t) { return t.to(Device::cpu(), DType::f32); }

void print_timing(const char* what, const std::vector<double>& times, double flops) {
  const double ms = median(times);
  std::cout << what << format_ms(ms) << " ms (median of " << times.size() << (times.size() == 1 ? " run" : " runs")
            << "), " << flops << " FLOP, " << format_rate(flops / (ms * 1e-3), 1e9) << " GFLOP/s\n";
}

int run_attn(const AttnOptions& options) {
  require(options.repeat >= 1, "--repeat = ", options.repeat, ": must be >= 1");
  const DilatedAttentionConfig config = options.attention.config();
  const Device device = options.compute.parsed_device();
  const DType dtype = options.compute.parsed_dtype(device);

  const SafetensorsReader file(options.input);
  const Tensor q = load_input(file, "q", device, dtype);
  const Tensor k = load_input(file, "k", device, dtype);
  const Tensor v = load_input(file, "v", device, dtype);
  validate_attention_inputs(config, q, k, v);
  Tensor dout;
  if (options.backward) {
    dout = load_input(file, "do", device, dtype);
    require(dout.shape() == q.shape(), "tensor 'do' in ", file.name(), " has shape ", shape_to_string(dout.shape()),
            ": must equal q's shape ", shape_to_string(q.shape()));
  }

  const std::int64_t B = q.size(0), N = q.size(1), H = q.size(2), Hk = k.size(2), D = q.size(3);
  const double scale = config.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  std::cout << "attn: q " << shape_to_string(q.shape()) << ", k and v " << shape_to_string(k.shape()) << " ("
            << (Hk == H ? "multi-head" : "grouped-query") << "), " << dtype_name(dtype) << " on " << to_string(device)
            << "\n";
  std::cout << "mode " << to_string(config.mode) << ", patterns (w, r) " << describe_patterns(config) << ", "
            << (config.causal ? "causal" : "non-causal") << ", scale " << scale << "\n";

  const double forward_flops = dilated_attention_forward_flops(config, B, N, H, D);
  AttentionOutput result;
  std::vector<double> forward_ms;
  for (int run = 0; run < options.repeat; ++run) {
    forward_ms.push_back(time_ms(device, [&] { result = dilated_attention_forward(config, q, k, v); }));
  }
  print_timing("forward:  ", forward_ms, forward_flops);

  NamedTensors outputs = {{"o", as_float32_on_host(result.out)}, {"lse", as_float32_on_host(result.lse)}};
  if (options.backward) {
    AttentionGradients grads;
    std::vector<double> backward_ms;
    for (int run = 0; run < options.repeat; ++run) {
      backward_ms.push_back(
          time_ms(device, [&] { grads = dilated_attention_backward(config, q, k, v, result, dout); }));
    }
    print_timing("backward: ", backward_ms, 2.5 * forward_flops);
    outputs.emplace_back("dq", as_float32_on_host(grads.dq));
    outputs.emplace_back("dk", as_float32_on_host(grads.dk));
    outputs.emplace_back("dv", as_float32_on_host(grads.dv));
  }
  save_safetensors(options.output, outputs,
                   {{"producer", "longnet attn"},
                    {"mode", std::string(to_string(config.mode))},
                    {"segments", options.attention.segments},
                    {"dilations", options.attention.dilations},
                    {"causal", config.causal ? "true" : "false"},
                    {"scale", str(scale)},
                    {"dtype", std::string(dtype_name(dtype))}});
  std::cout << "wrote";
  for (const auto& [name, tensor] : outputs) std::cout << " " << name << " " << shape_to_string(tensor.shape());
  std::cout << " (float32) to " << options.output << "\n";
  return 0;
}

}  // namespace

Command add_attn_command(CLI::App& app) {
  auto options = std::make_shared<AttnOptions>();
  auto* command = app.add_subcommand(
      "attn", "Run one dilated attention on q, k, v from a safetensors file; write o, lse (and dq, dk, dv)");
  command->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins
  command->add_option("--input", options->input, "safetensors file with q (B,N,H,D), k, v (B,N,Hk,D) [and do]")
      ->required();
  command->add_option("--output", options->output, "safetensors file to write o, lse [dq, dk, dv] (float32)")
      ->required();
  options->attention.add_to(*command, /*patterns_required=*/true);
  options->compute.add_to(
      *command, "Compute dtype f32, f64, bf16, f16 (inputs are converted to it) or auto (f32 on cpu, bf16 on cuda)");
  command->add_flag("--backward", options->backward, "Also compute dq, dk, dv from the tensor 'do'");
  command->add_option("--repeat", options->repeat, "Runs to time (the median is printed)")->capture_default_str();
  return {command, [options] { return run_attn(*options); }};
}

}  // namespace longnet::cli
