// `longnet plan`: per-GPU memory, bytes communicated per layer and the time of a step of
// a sequence-parallel run, for a model, a sequence length and a GPU count (the estimate
// is estimate_sequence_parallel_run of the dist layer; this file only parses options).
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/planner.hpp"

namespace longnet::cli {

Command add_plan_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "plan", "Estimate per-GPU memory, communication per layer and step time of a sequence-parallel run");
  struct Options {
    PlannerInput input;
    std::vector<std::int64_t> segments = {2048, 4096, 8192, 16384, 32768};
    std::vector<std::int64_t> dilations = {1, 2, 4, 6, 12};
    std::string mode = "longnet", order = "contiguous", dtype = "bf16";
    bool causal = false, inference = false;
  };
  auto options = std::make_shared<Options>();
  PlannerInput& in = options->input;
  PlannerConstants& k = in.constants;
  in.kv_heads = 0;  // the default: one key/value head per query head
  in.layers = 24;
  command->add_option("--seq-len", in.seq_len, "Tokens in the sequence")->required();
  command->add_option("--gpus", in.gpus, "GPUs the sequence is split over")->required();
  command->add_option("--batch", in.batch, "Sequences per step")->capture_default_str();
  command->add_option("--order", options->order, "Slices: contiguous or zigzag (balances causal work)")
      ->capture_default_str();
  command->add_flag("--inference", options->inference, "A forward pass instead of a training step");
  command->add_option("--dtype", options->dtype, "Weights, activations and K/V on the wire: bf16, f16, f32")
      ->capture_default_str();
  command->add_option("--layers", in.layers, "Transformer layers")->capture_default_str();
  command->add_option("--heads", in.heads, "Query heads")->capture_default_str();
  command->add_option("--kv-heads", in.kv_heads, "Key/value heads (default: --heads)");
  command->add_option("--head-dim", in.head_dim, "Head dimension")->capture_default_str();
  command->add_option("--model-dim", in.model_dim, "Model width (default: heads x head_dim)");
  command->add_option("--ffn-dim", in.ffn_dim, "Feed-forward width (default: 4 x model width)");
  command->add_option("--vocab", in.vocab, "Vocabulary size")->capture_default_str();
  command->add_option("--segments", options->segments, "Segment lengths w_i, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("--dilations", options->dilations, "Dilation rates r_i, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("--mode", options->mode, "longnet or head_groups")->capture_default_str();
  command->add_flag("--causal", options->causal, "Causal attention");
  command->add_option("--attention-tflops", k.attention_forward_tflops, "Measured attention forward TFLOP/s")
      ->capture_default_str();
  command->add_option("--attention-backward-tflops", k.attention_backward_tflops, "Measured attention backward TFLOP/s")
      ->capture_default_str();
  command->add_option("--gemm-tflops", k.gemm_tflops, "Measured GEMM TFLOP/s")->capture_default_str();
  command
      ->add_option("--memory-gbps", k.memory_gbytes_per_second,
                   "Measured GB/s of the memory-bound kernels (norms, GELU, rotary, adds, gradient sums)")
      ->capture_default_str();
  command->add_option("--nvlink-gbps", k.nvlink_gbytes_per_second, "GB/s between GPUs of one node")
      ->capture_default_str();
  command->add_option("--network-gbps", k.network_gbytes_per_second, "GB/s between nodes, per GPU")
      ->capture_default_str();
  command->add_option("--latency-us", k.message_latency_microseconds, "Latency of one message, microseconds")
      ->capture_default_str();
  command->add_option("--gpus-per-node", k.gpus_per_node, "GPUs per node")->capture_default_str();
  command->add_option("--gpu-memory-gib", k.gpu_memory_gib, "Memory of one GPU, GiB")->capture_default_str();

  return {command, [options] {
            PlannerInput input = options->input;
            if (input.kv_heads <= 0) input.kv_heads = input.heads;
            input.order = parse_sequence_order(options->order, "--order");
            input.dtype = parse_dtype(options->dtype, "--dtype");
            input.training = !options->inference;
            input.attention.segment_lengths = options->segments;
            input.attention.dilation_rates = options->dilations;
            input.attention.mode = parse_dilated_mode(options->mode, "--mode");
            input.attention.causal = options->causal;
            const PlannerEstimate estimate = estimate_sequence_parallel_run(input);
            std::cout << describe_estimate(input, estimate);
            return 0;
          }};
}

}  // namespace longnet::cli
