// Capacity planning for sequence-parallel LongNet runs (`longnet plan`): for a model and
// attention configuration, a sequence length and a GPU count, estimates per-GPU memory,
// bytes communicated per layer and the time of a step, from the real communication plan
// of every rank (make_sequence_parallel_plan) and a few throughput constants.
//
// The model is a stack of `layers` transformer layers of the MAGNETO kind (pre-LN
// attention with sub-LN, out projection, pre-LN feed-forward with sub-LN, GQA
// projections), an embedding tied to the output head, sequence-parallel over all GPUs
// (weights replicated; no tensor or pipeline parallelism; no activation recomputation).
// Times are compute / throughput + bytes / bandwidth + messages x latency, per layer on
// the busiest rank; "overlapped" assumes communication hides fully behind compute.
// Compute counts the GEMMs and the attention kernels at their measured FLOP rates and the
// memory-bound kernels (layer norms, rotary, GELU, residual adds, column sums of bias and
// norm gradients, fp32 -> bf16 attention gradients, AdamW) as the bytes they move
// (memory_bound_bytes_per_token_layer) at a measured effective bandwidth.
#pragma once

#include <cstdint>
#include <string>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/dtype.hpp"
#include "longnet/dist/sequence_layout.hpp"

namespace longnet {

// Every measured or assumed constant of the estimate, in one place. Defaults: one
// H100/H200 SXM per GPU, 8 per node on NVLink/NVSwitch, 400 Gb/s InfiniBand per GPU.
// Measure attention_* with `longnet bench attention` and gemm_tflops with a bf16 GEMM on
// the target GPU, and pass them in (longnet plan --attention-tflops ...).
struct PlannerConstants {
  double attention_forward_tflops = 300.0;   // dilated attention forward, achieved (bf16)
  double attention_backward_tflops = 250.0;  // its backward (2.5x the forward's FLOPs)
  double gemm_tflops = 600.0;                // projections, feed-forward, output head (bf16)
  // Effective bandwidth of the memory-bound kernels: the bytes of the model below over
  // their measured time (H100, 2026-11-24, docs/benchmarks.md: 65.8 GB in 42.1 ms).
  double memory_gbytes_per_second = 1560.0;
  double nvlink_gbytes_per_second = 150.0;   // point-to-point, one direction, same node
  double network_gbytes_per_second = 40.0;   // point-to-point, one direction, across nodes
  double message_latency_microseconds = 15.0;
  int gpus_per_node = 8;
  double gpu_memory_gib = 80.0;
};

struct PlannerInput {
  std::int64_t seq_len = 0;
  int gpus = 1;
  std::int64_t batch = 1;
  SequenceOrder order = SequenceOrder::contiguous;
  bool training = true;
  DType dtype = DType::bf16;  // weights, activations and K/V on the wire

  std::int64_t layers = 1;
  std::int64_t heads = 16;
  std::int64_t kv_heads = 16;
  std::int64_t head_dim = 64;
  std::int64_t model_dim = 0;  // 0: heads * head_dim
  std::int64_t ffn_dim = 0;    // 0: 4 * model_dim
  std::int64_t vocab = 32000;
  DilatedAttentionConfig attention;

  PlannerConstants constants;
};

struct PlannerEstimate {
  std::int64_t max_local_tokens = 0;
  double attention_imbalance = 1.0;  // busiest rank's attended pairs / mean

  // Memory of the busiest rank, bytes.
  double parameter_bytes = 0;    // weights, gradients, AdamW moments, fp32 master copy (training)
  double activation_bytes = 0;   // kept for backward (training) or one layer's working set
  double gathered_kv_bytes = 0;  // received K/V rows of all layers (kept for backward)
  double total_bytes = 0;
  bool fits = false;  // total_bytes <= constants.gpu_memory_gib

  // Communication per layer on the busiest rank, bytes (sent + received).
  double forward_bytes_per_layer = 0;
  double backward_bytes_per_layer = 0;  // gradients of received rows, in fp32
  std::int64_t messages_per_layer = 0;  // forward + backward, busiest rank
  double gradient_allreduce_bytes = 0;  // per step and GPU (ring), weights' gradients in fp32

  // FLOPs per step on the busiest rank, and times in seconds.
  double attention_flops = 0;
  double dense_flops = 0;
  double memory_bound_bytes = 0;  // moved by the memory-bound kernels per step
  double compute_seconds = 0;
  double communication_seconds = 0;
  double step_seconds = 0;             // compute + communication, nothing overlapped
  double step_seconds_overlapped = 0;  // max(compute, communication) per layer
  double tokens_per_second = 0;
};

// Bytes the memory-bound kernels move per token and layer (forward, plus backward when
// training): every elementwise pass reads and writes its rows once (planner.cpp spells
// out each pass).
double memory_bound_bytes_per_token_layer(const PlannerInput& input);

// Throws Error on an invalid input.
PlannerEstimate estimate_sequence_parallel_run(const PlannerInput& input);

// A human-readable report of the input and the estimate (several lines).
std::string describe_estimate(const PlannerInput& input, const PlannerEstimate& estimate);

}  // namespace longnet
