// `longnet bench train`: training throughput of a LongNetLM — tokens per second, model
// FLOPs per second and model FLOPs utilisation (model/flops.hpp: 6 x GEMM weights x tokens
// plus 3.5 x the attention's forward FLOPs by DESIGN 4's rule, over the device's peak),
// the time of forward, backward and the optimizer, and the peak memory of the device's
// pool. A few warm-up steps, then timed steps of the library's Trainer: each from an idle
// device to an idle device, then queued one ahead as `longnet train` runs them (the time
// between two results: the step time reported, and the one the rates are of), on the
// passkey task's batches (byte text). Defaults: on CUDA
// issue 5's configuration (d_model 768, 12 heads, 12 layers, ffn 3072, one sequence of
// 32,768 tokens, segments 2048..32768, dilations 1,2,4,6,12, bf16 compute with f32 master
// weights); on the CPU `longnet train`'s small default model.
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "longnet/core/memory_pool.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/io/atomic_file.hpp"
#include "longnet/model/flops.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/trainer.hpp"
#include "measure.hpp"
#include "parse_values.hpp"

namespace longnet::cli {
namespace {

struct BenchTrainOptions {
  std::string device = "cuda";
  std::string dtype = "auto";
  // Empty: the device's default (see the file comment).
  std::string d_model, heads, layers, ffn_dim, seq_len, batch_size, segments, dilations;
  std::string mode = "longnet";
  std::int64_t kv_heads = 0;
  int warmup = 3, steps = 5;
  bool deterministic = false;
  bool fused_qkv = false;
  double peak_tflops = 0;  // 0: 989 on CUDA (H100 SXM dense bf16), none on the CPU
  std::string json;
};

struct Shape {
  std::int64_t d_model, heads, layers, ffn_dim, seq_len, batch_size;
  std::string segments, dilations;
};

Shape default_shape(Device device) {
  if (device.is_cuda()) return {768, 12, 12, 3072, 32768, 1, "2048,4096,8192,16384,32768", "1,2,4,6,12"};
  return {128, 4, 4, 512, 128, 8, "32,64,128", "1,2,4"};
}

std::int64_t value_or(const std::string& text, std::int64_t fallback, const char* flag) {
  return text.empty() ? fallback : parse_integer(text, flag);
}

model::LongNetLMConfig bench_config(const BenchTrainOptions& o, const Shape& s, Device device) {
  model::LongNetLMConfig c;
  c.vocab_size = model::kByteVocabulary;
  c.d_model = value_or(o.d_model, s.d_model, "--d-model");
  c.heads = value_or(o.heads, s.heads, "--heads");
  c.kv_heads = o.kv_heads;
  c.fused_qkv = o.fused_qkv;
  c.layers = value_or(o.layers, s.layers, "--layers");
  c.ffn_dim = value_or(o.ffn_dim, s.ffn_dim, "--ffn-dim");
  c.segment_lengths = parse_integer_list(o.segments.empty() ? s.segments : o.segments, "--segments");
  c.dilation_rates = parse_integer_list(o.dilations.empty() ? s.dilations : o.dilations, "--dilations");
  c.mode = parse_dilated_mode(o.mode, "--mode");
  c.dtype = DType::f32;
  if (o.dtype == "auto") {
    c.compute_dtype = device.is_cuda() ? DType::bf16 : DType::f32;
  } else {
    c.compute_dtype = parse_dtype(o.dtype, "--dtype");
    require(c.compute_dtype == DType::f32 || c.compute_dtype == DType::bf16, "--dtype = ", o.dtype,
            ": must be auto, f32 or bf16");
  }
  c.validate();
  return c;
}

struct Phases {
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  // Until each phase's calls returned, before waiting for the device: close to the phase's
  // time means the device waited for launches (or for a synchronisation inside the phase).
  double forward_host_ms = 0, backward_host_ms = 0, optimizer_host_ms = 0;
};

// One more step with the device synchronised between forward, backward and the optimizer
// (the Trainer's step, taken apart; the synchronisations cost a little, so the parts sum
// to slightly more than a step).
Phases time_phases(model::LanguageModel& lm, const model::BatchSource& data, model::Trainer& trainer, Device device) {
  const model::TrainingConfig& config = trainer.config();
  model::AdamW& optimizer = trainer.optimizer();
  const std::int64_t step = optimizer.steps();
  const model::Batch batch = data.train_batch(step, 0);
  const nn::ForwardContext context{
      .training = true, .seed = config.seed, .step = step, .deterministic = config.deterministic};
  Phases p;
  lm.zero_grad();
  p.forward_ms = time_ms(
      device, [&] { lm.forward_loss(batch, context); }, p.forward_host_ms);
  p.backward_ms = time_ms(
      device, [&] { lm.backward(1.0); }, p.backward_host_ms);
  p.optimizer_ms = time_ms(
      device,
      [&] {
        const double norm = model::global_gradient_norm(optimizer.parameters());
        optimizer.step(config.schedule().at(step), model::clip_factor(norm, config.grad_clip));
      },
      p.optimizer_host_ms);
  return p;
}

std::string with_thousands(double value) {
  const std::string digits = std::to_string(static_cast<long long>(std::llround(value)));
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

int run_bench_train(const BenchTrainOptions& o) {
  const Device device = parse_device(o.device, "--device");
  require_device_available(device, "--device");
  require(o.warmup >= 0 && o.steps >= 1, "--warmup must be >= 0 and --steps >= 1");
  require(o.peak_tflops >= 0, "--peak-tflops = ", o.peak_tflops, ": must be >= 0");
  const Shape shape = default_shape(device);
  const model::LongNetLMConfig config = bench_config(o, shape, device);
  const std::int64_t batch = value_or(o.batch_size, shape.batch_size, "--batch-size");
  const std::int64_t seq_len = value_or(o.seq_len, shape.seq_len, "--seq-len");
  const model::TrainingFlops flops = model::training_flops(config, batch, seq_len);
  const double peak = o.peak_tflops > 0 ? o.peak_tflops * 1e12 : device.is_cuda() ? 989e12 : 0.0;

  std::cerr << "bench train: building the model on " << to_string(device) << "\n";
  model::LongNetLM lm(config, device, /*seed=*/1);
  std::int64_t parameters = 0;
  for (const auto& p : lm.parameters()) parameters += p->value.numel();
  const model::PasskeyData data(batch, seq_len, /*seed=*/1);
  model::TrainingConfig training;
  training.steps = o.warmup + 2 * o.steps + 3;  // + the steps that fill the queue, + time_phases'
  training.warmup_steps = 1;
  training.lr = 1e-4;
  training.min_lr = 1e-5;
  training.deterministic = o.deterministic;
  model::Trainer trainer(lm, data, training);
  MemoryPool& pool = memory_pool(device);
  pool.reset_stats();

  const bool terminal = stderr_is_terminal();
  auto progress = [&](const std::string& text) {
    if (terminal) std::cerr << "\r\033[K" << text << std::flush;
  };
  for (int i = 0; i < o.warmup; ++i) {
    progress(str("bench train: warm-up step ", i + 1, "/", o.warmup));
    trainer.step();
  }
  // Steps from an idle device to an idle device (as Trainer::step() runs them).
  std::vector<double> idle_start_ms;
  for (int i = 0; i < o.steps; ++i) {
    progress(str("bench train: timed step ", i + 1, "/", o.steps, " from an idle device"));
    idle_start_ms.push_back(time_ms(device, [&] { trainer.step(); }));
  }
  // Steps queued one ahead (as `longnet train` runs them): the time between two results.
  using Clock = std::chrono::steady_clock;
  trainer.step(true);  // the first result comes from an idle device; the next step is queued
  std::vector<double> step_ms;
  double last_loss = 0;
  auto previous = Clock::now();
  for (int i = 0; i < o.steps; ++i) {
    progress(str("bench train: timed step ", i + 1, "/", o.steps, " queued ahead"));
    // Always a step queued behind: where the queue runs at once (the CPU), the last result
    // would otherwise be ready before it is asked for (a step time of ~0 with --steps 1).
    last_loss = trainer.step(true).loss;
    const auto now = Clock::now();
    step_ms.push_back(std::chrono::duration<double, std::milli>(now - previous).count());
    previous = now;
  }
  progress("");
  const Phases phases = time_phases(lm, data, trainer, device);
  const MemoryStats memory = pool.stats();

  const double ms = median(step_ms);
  const double tokens = static_cast<double>(batch * seq_len);
  const double tokens_per_second = tokens / (ms * 1e-3);
  const double achieved = flops.total() / (ms * 1e-3);
  const std::string compute = config.compute_dtype == config.dtype
                                  ? std::string(dtype_name(config.dtype))
                                  : str(dtype_name(config.compute_dtype), " compute, f32 master weights");
  std::ostringstream head;
  head << "LongNetLM, " << with_thousands(static_cast<double>(parameters)) << " parameters (d_model " << config.d_model
       << ", " << config.heads << " heads, " << config.layers << " layers, ffn " << config.ffn_dim << "), " << batch
       << " x " << seq_len << " tokens, segments " << (o.segments.empty() ? shape.segments : o.segments)
       << ", dilations " << (o.dilations.empty() ? shape.dilations : o.dilations) << ", " << to_string(config.mode)
       << " mode, " << (config.fused_qkv ? "fused qkv projection, " : "") << compute << ", deterministic "
       << (o.deterministic ? "yes" : "no") << ", " << to_string(device);
  if (device.is_cpu()) head << " (" << num_threads() << " threads)";
  std::cout << head.str() << "\n\n";
  auto row = [](const std::string& name, const std::string& value) {
    std::cout << "| " << std::left << std::setw(36) << name << " | " << std::right << std::setw(26) << value << " |\n";
  };
  std::cout << "| " << std::left << std::setw(36) << "metric"
            << " | " << std::right << std::setw(26) << "value"
            << " |\n|" << std::string(38, '-') << "|" << std::string(27, '-') << ":|\n";
  row(str("step time (median of ", o.steps, ")"), format_ms(ms) + " ms");
  row("  each from an idle device", format_ms(median(idle_start_ms)) + " ms");
  row("tokens/s", with_thousands(tokens_per_second));
  // TFLOP on a GPU, GFLOP on the CPU.
  const double unit = device.is_cuda() ? 1e12 : 1e9;
  const std::string prefix = device.is_cuda() ? " T" : " G";
  row("model FLOPs per step (dense + attn)",
      str(format_rate(flops.dense, unit), " + ", format_rate(flops.attention, unit), prefix, "FLOP"));
  row("achieved", str(format_rate(achieved, unit), prefix, "FLOP/s"));
  if (peak > 0) {
    row(str("MFU (of ", format_rate(peak, 1e12), " TFLOP/s)"), format_rate(100.0 * achieved / peak, 1) + " %");
  }
  row("forward / backward / optimizer", str(format_ms(phases.forward_ms), " / ", format_ms(phases.backward_ms), " / ",
                                            format_ms(phases.optimizer_ms), " ms"));
  if (device.is_cuda()) {
    row("  of which the host queued for",
        str(format_ms(phases.forward_host_ms), " / ", format_ms(phases.backward_host_ms), " / ",
            format_ms(phases.optimizer_host_ms), " ms"));
  }
  row("peak memory (pool, in use)", format_bytes(static_cast<double>(memory.peak_in_use)));
  row("loss (last timed step)", str(last_loss));

  if (!o.json.empty()) {
    const nlohmann::json j = {{"model", head.str()},
                              {"parameters", parameters},
                              {"matmul_parameters", flops.matmul_parameters},
                              {"batch", batch},
                              {"seq_len", seq_len},
                              {"step_ms", step_ms},
                              {"median_step_ms", ms},
                              {"idle_start_step_ms", idle_start_ms},
                              {"median_idle_start_step_ms", median(idle_start_ms)},
                              {"tokens_per_second", tokens_per_second},
                              {"dense_flops", flops.dense},
                              {"attention_flops", flops.attention},
                              {"achieved_flops_per_second", achieved},
                              {"peak_flops_per_second", peak},
                              {"mfu", peak > 0 ? achieved / peak : 0.0},
                              {"forward_ms", phases.forward_ms},
                              {"backward_ms", phases.backward_ms},
                              {"optimizer_ms", phases.optimizer_ms},
                              {"forward_host_ms", phases.forward_host_ms},
                              {"backward_host_ms", phases.backward_host_ms},
                              {"optimizer_host_ms", phases.optimizer_host_ms},
                              {"peak_memory_bytes", memory.peak_in_use},
                              {"deterministic", o.deterministic}};
    write_text_atomically(o.json, j.dump(2) + "\n");
    std::cout << "wrote " << o.json << "\n";
  }
  return 0;
}

}  // namespace

Command add_bench_train(CLI::App& bench) {
  auto o = std::make_shared<BenchTrainOptions>();
  CLI::App* c = bench.add_subcommand(
      "train",
      "LongNetLM training throughput: tokens/s, model FLOPs utilisation, forward/backward/optimizer time, "
      "peak memory");
  c->add_option("--device", o->device, "cpu or cuda[:N]")->capture_default_str();
  c->add_option("--dtype", o->dtype, "Compute dtype: auto (bf16 on cuda, f32 on cpu), f32 or bf16")
      ->capture_default_str();
  c->add_option("--d-model", o->d_model, "Model width (default 768 on cuda, 128 on cpu)");
  c->add_option("--heads", o->heads, "Attention heads (default 12 on cuda, 4 on cpu)");
  c->add_option("--kv-heads", o->kv_heads, "Key/value heads (0: = heads)")->capture_default_str();
  c->add_option("--layers", o->layers, "Decoder layers (default 12 on cuda, 4 on cpu)");
  c->add_option("--ffn-dim", o->ffn_dim, "Feed-forward width (default 3072 on cuda, 512 on cpu)");
  c->add_option("--seq-len", o->seq_len, "Tokens per sequence (default 32K on cuda, 128 on cpu)");
  c->add_option("--batch-size", o->batch_size, "Sequences per step (default 1 on cuda, 8 on cpu)");
  c->add_option("--segments", o->segments, "Segment lengths (default 2048,...,32768 on cuda, 32,64,128 on cpu)");
  c->add_option("--dilations", o->dilations, "Dilation rates (default 1,2,4,6,12 on cuda, 1,2,4 on cpu)");
  c->add_option("--mode", o->mode, "Dilated attention mode: longnet or head_groups")->capture_default_str();
  c->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str();
  c->add_option("--steps", o->steps, "Timed steps (the median is reported)")->capture_default_str();
  c->add_flag("--deterministic", o->deterministic,
              "Bitwise repeatable steps (what `longnet train` uses by default for exact resume; slower attention "
              "backward on cuda)");
  c->add_flag("--fused-qkv", o->fused_qkv,
              "One q/k/v projection parameter (qkv_proj) instead of three (q_proj, k_proj, v_proj; either runs one GEMM)");
  c->add_option("--peak-tflops", o->peak_tflops,
                "The device's peak for MFU, TFLOP/s (default 989 on cuda: H100 SXM dense bf16; none on cpu)");
  c->add_option("--json", o->json, "Write the measurements as JSON to this file");
  return {c, [o] { return run_bench_train(*o); }};
}

}  // namespace longnet::cli
