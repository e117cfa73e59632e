// The estimates of `longnet plan` (see the header for the model). Every rank's plan is
// built (only its counts are kept), so load imbalance, the causal direction of traffic
// and the zigzag layout show in the numbers exactly as the runtime would produce them.
//
// Per rank r, with t_r local tokens, p_r attended pairs (all heads, one batch element),
// s_r / g_r rows sent / received per layer (K and V each), b = dtype bytes, a = 4 (the
// fp32 accumulation of the backward's gradients):
//   attention FLOPs  forward 4 D p_r B, backward 2.5x (DESIGN 4)
//   dense FLOPs      2 (params of a layer) t_r B forward, 2x that backward, + output head
//   K/V traffic      forward 2 (s_r + g_r) B D b, backward 2 (s_r + g_r) B D a
//   activations      B t_r (4 d + 3 H D + 2 Hk D + 3 f) b + 4 H B t_r per layer (training)
#include "longnet/dist/planner.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <utility>

#include "longnet/dist/sequence_parallel_plan.hpp"

namespace longnet {
namespace {

struct RankCost {
  std::int64_t tokens = 0;
  std::int64_t pairs = 0;
  double intra_sent = 0, intra_received = 0, inter_sent = 0, inter_received = 0;  // rows
  std::int64_t peers = 0;
  std::int64_t send_rows = 0, receive_rows = 0;
};

void validate(const PlannerInput& in) {
  require(in.seq_len >= 1, "seq_len = ", in.seq_len, ": must be >= 1");
  require(in.gpus >= 1, "gpus = ", in.gpus, ": must be >= 1");
  require(in.batch >= 1, "batch = ", in.batch, ": must be >= 1");
  require(in.layers >= 1, "layers = ", in.layers, ": must be >= 1");
  require(in.heads >= 1 && in.head_dim >= 1, "heads = ", in.heads, ", head_dim = ", in.head_dim, ": must be >= 1");
  require(in.kv_heads >= 1 && in.heads % in.kv_heads == 0, "kv_heads = ", in.kv_heads,
          ": must divide heads = ", in.heads);
  require(in.model_dim >= 0 && in.ffn_dim >= 0 && in.vocab >= 0,
          "model_dim, ffn_dim and vocab must be >= 0 (0: the default)");
  require(is_floating(in.dtype), "dtype = ", dtype_name(in.dtype), ": must be a floating type");
  const PlannerConstants& c = in.constants;
  const std::pair<const char*, double> rates[] = {{"attention_forward_tflops", c.attention_forward_tflops},
                                                   {"attention_backward_tflops", c.attention_backward_tflops},
                                                   {"gemm_tflops", c.gemm_tflops},
                                                   {"memory_gbytes_per_second", c.memory_gbytes_per_second},
                                                   {"nvlink_gbytes_per_second", c.nvlink_gbytes_per_second},
                                                   {"network_gbytes_per_second", c.network_gbytes_per_second},
                                                   {"gpu_memory_gib", c.gpu_memory_gib}};
  for (const auto& [name, value] : rates) require(value > 0, name, " = ", value, ": must be > 0");
  require(c.message_latency_microseconds >= 0, "message_latency_microseconds = ", c.message_latency_microseconds,
          ": must be >= 0");
  require(c.gpus_per_node >= 1, "gpus_per_node = ", c.gpus_per_node, ": must be >= 1");
  in.attention.validate();
}

std::vector<RankCost> rank_costs(const PlannerInput& in, const SequenceLayout& layout) {
  std::vector<RankCost> costs;
  const int node_size = in.constants.gpus_per_node;
  for (int r = 0; r < in.gpus; ++r) {
    const SequenceParallelPlan plan = make_sequence_parallel_plan(layout, r, in.attention, in.heads, in.kv_heads);
    RankCost c;
    c.tokens = plan.local_rows;
    c.pairs = plan.attended_pairs;
    c.send_rows = plan.send_rows;
    c.receive_rows = plan.receive_rows;
    for (const PeerRows& p : plan.sends) {
      (p.peer / node_size == r / node_size ? c.intra_sent : c.inter_sent) += static_cast<double>(p.rows);
    }
    for (const PeerRows& p : plan.receives) {
      (p.peer / node_size == r / node_size ? c.intra_received : c.inter_received) += static_cast<double>(p.rows);
    }
    c.peers = static_cast<std::int64_t>(plan.sends.size() + plan.receives.size());
    costs.push_back(c);
  }
  return costs;
}

// The model's sizes as doubles, with the defaults of PlannerInput resolved.
struct Sizes {
  double H, Hk, D;  // query heads, key/value heads, head dimension
  double d, f;      // model and feed-forward width
  double b, a;      // bytes of an activation and of an accumulator (gradients, AdamW state)
};

Sizes sizes_of(const PlannerInput& in) {
  Sizes z{};
  z.H = static_cast<double>(in.heads);
  z.Hk = static_cast<double>(in.kv_heads);
  z.D = static_cast<double>(in.head_dim);
  z.d = in.model_dim > 0 ? static_cast<double>(in.model_dim) : z.H * z.D;
  z.f = in.ffn_dim > 0 ? static_cast<double>(in.ffn_dim) : 4 * z.d;
  z.b = static_cast<double>(dtype_size(in.dtype));
  z.a = in.dtype == DType::f64 ? 8.0 : 4.0;
  return z;
}

}  // namespace

double memory_bound_bytes_per_token_layer(const PlannerInput& in) {
  const auto [H, Hk, D, d, f, b, a] = sizes_of(in);
  const double q = H * D, kv = Hk * D;
  // Elements normalised per token: pre-LN of attention and of the feed-forward (d), the
  // MAGNETO sub-LNs before the out projection (H D) and inside the feed-forward (f).
  const double normed = 2 * d + q + f;
  // Forward: each norm and rotary (q, k) reads and writes its rows (the feed-forward's norm
  // applies GELU as it reads); the two residual adds are the output projections' GEMMs
  // reading the residual once each.
  const double forward = b * (2 * normed + 2 * (q + kv) + 2 * d);
  if (!in.training) return forward;
  // Backward: norm dx reads x and dy and writes dx, then the weight/bias column sums read x
  // and dy again (GELU's derivative inside the feed-forward's); rotary backward (a
  // sequence-parallel run's; one GPU's rides on the attention's gradient conversion); the two
  // residual gradients read once more by the pre-norms that add them; bias column sums of
  // every projection (q, k, v, out, both feed-forward GEMMs); attention gradients
  // converted from their fp32 accumulators (dq, dk, dv) and delta = rowsum(dO o O).
  const double backward = b * (5 * normed + 2 * (q + kv) + 2 * d + (q + 2 * kv + 2 * d + f)) +
                          (a + b) * (q + 2 * kv) + b * 2 * q;
  return forward + backward;
}

PlannerEstimate estimate_sequence_parallel_run(const PlannerInput& in) {
  validate(in);
  const PlannerConstants& k = in.constants;
  const auto [H, Hk, D, d, f, b, a] = sizes_of(in);
  const auto B = static_cast<double>(in.batch);
  const auto V = static_cast<double>(in.vocab), L = static_cast<double>(in.layers);

  // Parameters: q, k, v, out projections, feed-forward, layer norms (weight + bias) with
  // the MAGNETO sub-LNs, then the tied embedding and the final norm.
  const double matmul_params = d * H * D + 2 * d * Hk * D + H * D * d + 2 * d * f;
  const double layer_params = matmul_params + 2 * (2 * d) + 2 * H * D + 2 * f;
  const double params = L * layer_params + V * d + 2 * d;
  // Training: weights, fp32 master copy (unless fp32), fp32 gradients, AdamW's two moments.
  const double bytes_per_param = in.training ? b + (b < 4 ? 4 : 0) + a + 2 * a : b;

  const SequenceLayout layout = SequenceLayout::make(in.order, in.seq_len, in.gpus);
  const std::vector<RankCost> costs = rank_costs(in, layout);

  PlannerEstimate e;
  e.parameter_bytes = params * bytes_per_param;
  double pairs_total = 0, pairs_max = 0;
  double worst_step = -1;
  for (const RankCost& c : costs) {
    const auto t = static_cast<double>(c.tokens);
    pairs_total += static_cast<double>(c.pairs);
    pairs_max = std::max(pairs_max, static_cast<double>(c.pairs));
    e.max_local_tokens = std::max(e.max_local_tokens, c.tokens);

    const double per_token_layer =
        in.training ? (4 * d + 3 * H * D + 2 * Hk * D + 3 * f) * b + 4 * H : (2 * d + 2 * H * D + 2 * Hk * D + f) * b;
    const double activations = (in.training ? L : 1.0) * B * t * per_token_layer;
    const double row_bytes = 2 * B * D * b;  // one row of K and one of V
    const double kept_kv = (in.training ? L : 1.0) * static_cast<double>(c.receive_rows) * row_bytes;
    const double transient = static_cast<double>(c.send_rows) * row_bytes +
                             (in.training ? 2 * B * D * a * static_cast<double>(c.send_rows + c.receive_rows) : 0);
    const double total = e.parameter_bytes + activations + kept_kv + transient;

    // Time of one step on this rank.
    const double attention_forward = 4 * D * static_cast<double>(c.pairs) * B;
    const double attention_backward = in.training ? 2.5 * attention_forward : 0;
    const double passes = in.training ? 3 : 1;  // backward of a matmul: twice its forward
    const double dense_layer = 2 * matmul_params * t * B * passes;
    const double dense_head = 2 * V * d * t * B * passes;
    const double memory_layer = memory_bound_bytes_per_token_layer(in) * t * B;
    const double memory_seconds_layer = memory_layer / (k.memory_gbytes_per_second * 1e9);
    const double compute_layer = attention_forward / (k.attention_forward_tflops * 1e12) +
                                 attention_backward / (k.attention_backward_tflops * 1e12) +
                                 dense_layer / (k.gemm_tflops * 1e12) + memory_seconds_layer;
    // AdamW reads weight, gradient and both moments and writes weight, moments and the
    // compute copy; every rank updates all the (replicated) weights.
    const double optimizer = in.training ? params * (4 * a + 3 * a + b) / (k.memory_gbytes_per_second * 1e9) : 0.0;
    const double head = dense_head / (k.gemm_tflops * 1e12) + optimizer;
    auto exchange_seconds = [&](double element_bytes) {
      const double row = 2 * B * D * element_bytes;
      return std::max(c.intra_sent, c.intra_received) * row / (k.nvlink_gbytes_per_second * 1e9) +
             std::max(c.inter_sent, c.inter_received) * row / (k.network_gbytes_per_second * 1e9) +
             static_cast<double>(c.peers) * k.message_latency_microseconds * 1e-6;
    };
    const double comm_layer = exchange_seconds(b) + (in.training ? exchange_seconds(a) : 0);
    const double step = L * (compute_layer + comm_layer) + head;
    if (step > worst_step) {
      worst_step = step;
      e.activation_bytes = activations;
      e.gathered_kv_bytes = kept_kv + transient;
      e.total_bytes = total;
      e.forward_bytes_per_layer = 2 * static_cast<double>(c.send_rows + c.receive_rows) * B * D * b;
      e.backward_bytes_per_layer =
          in.training ? 2 * static_cast<double>(c.send_rows + c.receive_rows) * B * D * a : 0.0;
      e.messages_per_layer = 2 * c.peers * (in.training ? 2 : 1);
      e.attention_flops = L * (attention_forward + attention_backward);
      e.dense_flops = L * dense_layer + dense_head;
      e.memory_bound_bytes = L * memory_layer;
      e.compute_seconds = L * compute_layer + head;
      e.communication_seconds = L * comm_layer;
      e.step_seconds_overlapped = L * std::max(compute_layer, comm_layer) + head;
    }
    e.total_bytes = std::max(e.total_bytes, total);
  }
  e.attention_imbalance = pairs_total > 0 ? pairs_max * static_cast<double>(in.gpus) / pairs_total : 1.0;

  // Weight gradients are partial sums over each rank's tokens: one ring all-reduce per step.
  if (in.training && in.gpus > 1) {
    const double P = in.gpus;
    e.gradient_allreduce_bytes = 2 * (P - 1) / P * params * a;
    const double bandwidth = in.gpus <= k.gpus_per_node ? k.nvlink_gbytes_per_second : k.network_gbytes_per_second;
    const double allreduce =
        e.gradient_allreduce_bytes / (bandwidth * 1e9) + 2 * (P - 1) * k.message_latency_microseconds * 1e-6;
    e.communication_seconds += allreduce;
    e.step_seconds_overlapped += allreduce;
  }
  e.step_seconds = e.compute_seconds + e.communication_seconds;
  e.fits = e.total_bytes <= k.gpu_memory_gib * 1024.0 * 1024.0 * 1024.0;
  e.tokens_per_second = B * static_cast<double>(in.seq_len) / e.step_seconds;
  return e;
}

namespace {

std::string bytes_text(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(u == 0 ? 0 : 2) << bytes << " " << units[u];
  return out.str();
}

std::string seconds_text(double seconds) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(seconds < 1 ? 2 : 3);
  if (seconds < 1) {
    out << seconds * 1e3 << " ms";
  } else {
    out << seconds << " s";
  }
  return out.str();
}

std::string list_text(const std::vector<std::int64_t>& values) {
  std::string s;
  for (std::int64_t v : values) s += str(s.empty() ? "" : ",", v);
  return s;
}

}  // namespace

std::string describe_estimate(const PlannerInput& in, const PlannerEstimate& e) {
  const PlannerConstants& k = in.constants;
  std::ostringstream out;
  out << "sequence-parallel " << (in.training ? "training step" : "forward pass") << ": seq_len " << in.seq_len
      << " x batch " << in.batch << " on " << in.gpus << " GPUs (" << to_string(in.order) << ", up to "
      << e.max_local_tokens << " tokens per GPU)\n";
  out << "model: " << in.layers << " layers, heads " << in.heads << " (kv " << in.kv_heads << ") x " << in.head_dim
      << ", vocab " << in.vocab << ", " << dtype_name(in.dtype) << "; attention " << to_string(in.attention.mode)
      << (in.attention.causal ? " causal" : "") << ", segments " << list_text(in.attention.segment_lengths)
      << ", dilations " << list_text(in.attention.dilation_rates) << "\n\n";
  out << "memory per GPU (busiest)        " << bytes_text(e.total_bytes) << (e.fits ? "  fits in " : "  EXCEEDS ")
      << k.gpu_memory_gib << " GiB\n";
  out << "  parameters" << (in.training ? " + grads + AdamW " : "                 ") << "   "
      << bytes_text(e.parameter_bytes) << "\n";
  out << "  activations                   " << bytes_text(e.activation_bytes) << "\n";
  out << "  received K/V rows + buffers   " << bytes_text(e.gathered_kv_bytes) << "\n";
  out << "communication per layer         forward " << bytes_text(e.forward_bytes_per_layer);
  if (in.training) out << ", backward " << bytes_text(e.backward_bytes_per_layer);
  out << " (" << e.messages_per_layer << " messages)\n";
  if (in.training && in.gpus > 1) {
    out << "gradient all-reduce per step    " << bytes_text(e.gradient_allreduce_bytes) << " per GPU\n";
  }
  out << "attention load imbalance        " << std::fixed << std::setprecision(2) << e.attention_imbalance
      << " (busiest / mean)\n";
  out << std::scientific << std::setprecision(3);
  out << "FLOPs per step (busiest GPU)    attention " << e.attention_flops << ", dense " << e.dense_flops << "\n";
  out << "memory-bound kernels per step   " << bytes_text(e.memory_bound_bytes) << " moved\n";
  out << "time per step                   compute " << seconds_text(e.compute_seconds) << ", communication "
      << seconds_text(e.communication_seconds) << "\n";
  out << "                                total " << seconds_text(e.step_seconds) << " (overlapped "
      << seconds_text(e.step_seconds_overlapped) << ")\n";
  out << std::fixed << std::setprecision(0);
  out << "throughput                      " << e.tokens_per_second << " tokens/s\n";
  out << std::setprecision(1);
  out << "\nconstants: attention " << k.attention_forward_tflops << "/" << k.attention_backward_tflops
      << " TFLOP/s (fwd/bwd), GEMM " << k.gemm_tflops << " TFLOP/s, memory-bound " << k.memory_gbytes_per_second
      << " GB/s, NVLink " << k.nvlink_gbytes_per_second
      << " GB/s, network " << k.network_gbytes_per_second << " GB/s, latency " << k.message_latency_microseconds
      << " us, " << k.gpus_per_node << " GPUs per node\n";
  return out.str();
}

}  // namespace longnet
