// `longnet attn`: one dilated attention (DESIGN 2, 4), or with --pattern / --mask one
// block-sparse attention (DESIGN 2.5), on tensors read from a safetensors file, the
// interchange point with PyTorch and anyone's test data.
//   in:  q (B, N, H, D), k and v (B, N, Hk, D), and with --backward do (B, N, H, D), in any
//        float dtype; all are converted to --dtype on --device.
//   out: o (B, N, H, D) and lse (B, H, N), and with --backward dq, dk, dv, all float32,
//        written atomically to --output; the median time of --repeat runs on stdout.
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <memory>

#include "attention_options.hpp"
#include "block_pattern_options.hpp"
#include "commands.hpp"
#include "longnet/attention/block_sparse_attention.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/io/safetensors.hpp"
#include "measure.hpp"

namespace longnet::cli {
namespace {

struct AttnOptions {
  std::string input, output;
  AttentionOptions attention;
  BlockPatternOptions blocks;
  bool deterministic = false;
  // Whether --segments, --dilations, --mode were typed (dilated attention needs the first
  // two; block-sparse attention takes none of them).
  const CLI::Option *segments_flag = nullptr, *dilations_flag = nullptr, *mode_flag = nullptr;
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

// The inputs of both kinds of attention: q, k, v (and do) on the device in the compute dtype.
struct AttnInputs {
  Device device;
  DType dtype = DType::f32;
  Tensor q, k, v, dout;
};

AttnInputs load_inputs(const AttnOptions& options) {
  AttnInputs in;
  in.device = options.compute.parsed_device();
  in.dtype = options.compute.parsed_dtype(in.device);
  const SafetensorsReader file(options.input);
  in.q = load_input(file, "q", in.device, in.dtype);
  in.k = load_input(file, "k", in.device, in.dtype);
  in.v = load_input(file, "v", in.device, in.dtype);
  if (options.backward) {
    in.dout = load_input(file, "do", in.device, in.dtype);
    require(in.dout.shape() == in.q.shape(), "tensor 'do' in ", file.name(), " has shape ",
            shape_to_string(in.dout.shape()), ": must equal q's shape ", shape_to_string(in.q.shape()));
  }
  return in;
}

void print_inputs(const AttnInputs& in) {
  std::cout << "attn: q " << shape_to_string(in.q.shape()) << ", k and v " << shape_to_string(in.k.shape()) << " ("
            << (in.k.size(2) == in.q.size(2) ? "multi-head" : "grouped-query") << "), " << dtype_name(in.dtype)
            << " on " << to_string(in.device) << "\n";
}

// Times `forward` and, with --backward, `backward`; writes o, lse (dq, dk, dv) with `metadata`.
void run_and_write(const AttnOptions& options, const AttnInputs& in, double forward_flops,
                   const std::function<AttentionOutput()>& forward,
                   const std::function<AttentionGradients(const AttentionOutput&)>& backward,
                   std::map<std::string, std::string> metadata) {
  AttentionOutput result;
  std::vector<double> forward_ms;
  for (int run = 0; run < options.repeat; ++run) {
    forward_ms.push_back(time_ms(in.device, [&] { result = forward(); }));
  }
  print_timing("forward:  ", forward_ms, forward_flops);

  NamedTensors outputs = {{"o", as_float32_on_host(result.out)}, {"lse", as_float32_on_host(result.lse)}};
  if (options.backward) {
    AttentionGradients grads;
    std::vector<double> backward_ms;
    for (int run = 0; run < options.repeat; ++run) {
      backward_ms.push_back(time_ms(in.device, [&] { grads = backward(result); }));
    }
    print_timing("backward: ", backward_ms, 2.5 * forward_flops);
    outputs.emplace_back("dq", as_float32_on_host(grads.dq));
    outputs.emplace_back("dk", as_float32_on_host(grads.dk));
    outputs.emplace_back("dv", as_float32_on_host(grads.dv));
  }
  metadata["producer"] = "longnet attn";
  metadata["dtype"] = std::string(dtype_name(in.dtype));
  save_safetensors(options.output, outputs, metadata);
  std::cout << "wrote";
  for (const auto& [name, tensor] : outputs) std::cout << " " << name << " " << shape_to_string(tensor.shape());
  std::cout << " (float32) to " << options.output << "\n";
}

int run_dilated(const AttnOptions& options) {
  require(options.segments_flag->count() > 0,
          "--segments is required (with --dilations) for dilated attention; or give --pattern or --mask for "
          "block-sparse attention");
  require(options.dilations_flag->count() > 0, "--dilations is required (with --segments) for dilated attention");
  require(!options.deterministic, "--deterministic: applies to block-sparse attention (--pattern or --mask) only");
  const DilatedAttentionConfig config = options.attention.config();
  const AttnInputs in = load_inputs(options);
  validate_attention_inputs(config, in.q, in.k, in.v);
  const std::int64_t B = in.q.size(0), N = in.q.size(1), H = in.q.size(2), D = in.q.size(3);
  const double scale = config.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  print_inputs(in);
  std::cout << "mode " << to_string(config.mode) << ", patterns (w, r) " << describe_patterns(config) << ", "
            << (config.causal ? "causal" : "non-causal") << ", scale " << scale << "\n";
  run_and_write(
      options, in, dilated_attention_forward_flops(config, B, N, H, D),
      [&] { return dilated_attention_forward(config, in.q, in.k, in.v); },
      [&](const AttentionOutput& out) { return dilated_attention_backward(config, in.q, in.k, in.v, out, in.dout); },
      {{"mode", std::string(to_string(config.mode))},
       {"segments", options.attention.segments},
       {"dilations", options.attention.dilations},
       {"causal", config.causal ? "true" : "false"},
       {"scale", str(scale)}});
  return 0;
}

int run_block_sparse(const AttnOptions& options) {
  for (const CLI::Option* flag : {options.segments_flag, options.dilations_flag, options.mode_flag}) {
    require(flag->count() == 0, flag->get_name(), " is a dilated-attention flag: block-sparse attention (--pattern, ",
            "--mask) takes its keys from the block mask");
  }
  if (options.attention.scale) {
    require(std::isfinite(*options.attention.scale), "--scale = ", *options.attention.scale, ": must be finite");
  }
  const AttnInputs in = load_inputs(options);
  const std::int64_t B = in.q.size(0), N = in.q.size(1), H = in.q.size(2), D = in.q.size(3);
  const BlockMask mask = options.blocks.mask(N, H, options.attention.causal);
  validate_block_sparse_inputs(mask, in.q, in.k, in.v);
  const BlockSparseOptions sparse{options.attention.scale, options.deterministic};
  const double scale = options.attention.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  print_inputs(in);
  std::cout << "block-sparse: " << options.blocks.describe() << "; " << mask.describe() << ", scale " << scale << "\n";
  // The operator keeps the mask's lists on the device across the timed runs.
  BlockSparseAttention attention(mask, sparse);
  run_and_write(
      options, in, block_sparse_attention_forward_flops(mask, B, H, D),
      [&] { return attention.forward(in.q, in.k, in.v); },
      [&](const AttentionOutput& out) {
        return block_sparse_attention_backward(mask, in.q, in.k, in.v, out, in.dout, sparse);
      },
      {{"attention", "block_sparse"},
       {"block_pattern", options.blocks.describe()},
       {"seq_len", str(N)},
       {"block_q", str(mask.block_q())},
       {"block_k", str(mask.block_k())},
       {"block_density", str(mask.density())},
       {"causal", mask.grid().causal ? "true" : "false"},
       {"scale", str(scale)}});
  return 0;
}

int run_attn(const AttnOptions& options) {
  require(options.repeat >= 1, "--repeat = ", options.repeat, ": must be >= 1");
  return options.blocks.given() ? run_block_sparse(options) : run_dilated(options);
}

}  // namespace

Command add_attn_command(CLI::App& app) {
  auto options = std::make_shared<AttnOptions>();
  auto* command = app.add_subcommand(
      "attn",
      "Run one dilated attention (--segments, --dilations) or block-sparse attention (--pattern or --mask) on q, k, "
      "v from a safetensors file; write o, lse (and dq, dk, dv)");
  command->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins
  command->add_option("--input", options->input, "safetensors file with q (B,N,H,D), k, v (B,N,Hk,D) [and do]")
      ->required();
  command->add_option("--output", options->output, "safetensors file to write o, lse [dq, dk, dv] (float32)")
      ->required();
  options->attention.add_to(*command, /*patterns_required=*/false);
  options->segments_flag = command->get_option("--segments");
  options->dilations_flag = command->get_option("--dilations");
  options->mode_flag = command->get_option("--mode");
  options->blocks.add_to(*command, /*with_mask_file=*/true);
  options->compute.add_to(
      *command, "Compute dtype f32, f64, bf16, f16 (inputs are converted to it) or auto (f32 on cpu, bf16 on cuda)");
  command->add_flag("--backward", options->backward, "Also compute dq, dk, dv from the tensor 'do'");
  command->add_flag("--deterministic", options->deterministic,
                    "Block-sparse on CUDA: a bitwise-repeatable backward without atomics");
  command->add_option("--repeat", options->repeat, "Runs to time (the median is printed)")->capture_default_str();
  return {command, [options] { return run_attn(*options); }};
}

}  // namespace longnet::cli
