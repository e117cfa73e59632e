// Mixed precision (bf16 compute, f32 master weights) at the model level.
//
// On the CPU (always): the configurations and options that ask for it are rejected where
// it cannot run, a checkpoint of a bf16 run loads for f32 compute on the CPU, the FLOP
// count of the benchmark.
// On CUDA (skipped without a device): a bf16 training step against the f32 step of the
// same model; the loss falling on the passkey task; a bf16 run's checkpoint holding f32
// master weights and resuming bit for bit; bf16 prefill and decoding against f32.
//
// The bf16-versus-f32 tolerances: bf16 keeps 8 significant bits, a unit roundoff of
// u = 2^-8 = 3.9e-3 (an RMS relative error of about u / sqrt(3) = 2.3e-3 per rounding). A
// gradient of the tiny model passes through some 10 to 20 bf16 roundings (activations at
// each layer boundary, both directions), partly independent, so its relative L2 error is
// expected around 1e-2; we allow 5x that, 0.05, for the whole gradient and 0.1 per tensor
// (small tensors average less). A wrong transpose, dtype or missing term gives errors of
// order 1, so these bounds still fail on any real defect. The loss, a mean over all
// tokens of log-softmaxes computed in f32, is held to 1e-2 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/io/safetensors.hpp"
#include "longnet/kernels/adamw.hpp"
#include "longnet/kernels/projection_rotary.hpp"
#include "longnet/model/checkpoint.hpp"
#include "longnet/model/flops.hpp"
#include "longnet/model/generation.hpp"
#include "longnet/model/longnet.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/trainer.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/gradient_norm_queue.hpp"
#include "model/model_test_support.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

std::filesystem::path temp_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() /
      ("longnet_mixed_test_" + name + "_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

template <class F>
void expect_error_containing(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(MixedPrecision, IsRejectedWhereItCannotRun) {
  nn::ParameterOptions cpu_bf16;
  cpu_bf16.compute_dtype = DType::bf16;
  expect_error_containing([&] { nn::make_parameter("w", Tensor::zeros({2}, DType::f64), cpu_bf16); },
                          "mixed precision needs a CUDA device");
  LongNetLMConfig c = tiny_lm_config(DType::f32);
  c.compute_dtype = DType::bf16;
  c.validate();  // a valid configuration ...
  expect_error_containing([&] { LongNetLM model(c, Device::cpu()); }, "needs a CUDA device");  // ... not on the CPU
  c.dtype = DType::f64;
  expect_error_containing([&] { c.validate(); }, "compute_dtype = bf16 with dtype = f64");
  c = tiny_lm_config(DType::f32);
  c.compute_dtype = DType::f16;
  expect_error_containing([&] { c.validate(); }, "compute_dtype = f16");
  kernels::AdamWParams k;
  float value = 0;
  std::uint16_t copy = 0;
  k.count = 1;
  k.param = &value, k.grad = &value, k.m = &value, k.v = &value, k.param_copy = &copy;
  expect_error_containing([&] { kernels::adamw_step_cpu(k); }, "param_copy");
}

TEST(MixedPrecision, ConfigurationJsonKeepsTheComputeDtype) {
  LongNetLMConfig c = tiny_lm_config(DType::f32);
  c.compute_dtype = DType::bf16;
  const LongNetLMConfig back = lm_config_from_json(to_json(c), "test");
  EXPECT_EQ(back.dtype, DType::f32);
  EXPECT_EQ(back.compute_dtype, DType::bf16);
  EXPECT_EQ(to_json(back), to_json(c));
}

// An f32 model that reports the configuration of a bf16 run: what a checkpoint written by
// a GPU run looks like (f32 master weights, compute_dtype bf16 in the metadata).
class AsIfTrainedInBf16 final : public LanguageModel {
 public:
  explicit AsIfTrainedInBf16(LongNetLM& model) : model_(model) {}
  PendingLoss queue_forward_loss(const Batch& b, const nn::ForwardContext& c) override {
    return model_.queue_forward_loss(b, c);
  }
  void backward(double scale) override { model_.backward(scale); }
  std::string config_json() const override {
    LongNetLMConfig c = model_.config();
    c.compute_dtype = DType::bf16;
    return to_json(c);
  }
  Device device() const override { return model_.device(); }
  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override { model_.collect_parameters(out); }

 private:
  LongNetLM& model_;
};

TEST(MixedPrecision, ABf16CheckpointLoadsForF32ComputeOnTheCpu) {
  const auto dir = temp_dir("cpu_load");
  LongNetLM trained(tiny_lm_config(DType::f32), Device::cpu(), 4);
  const AsIfTrainedInBf16 as_bf16(trained);
  save_checkpoint(dir / "c.safetensors", as_bf16, nullptr, 7);
  const auto loaded = load_longnet_lm(dir / "c.safetensors", Device::cpu());
  EXPECT_EQ(loaded->config().compute_dtype, DType::f32);
  const auto a = trained.parameters(), b = loaded->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]->value.to_vector<double>(), a[i]->value.to_vector<double>()) << a[i]->name;
  }
  expect_error_containing([&] { load_longnet_lm(dir / "c.safetensors", Device::cpu(), DType::bf16); },
                          "needs a CUDA device");
  std::filesystem::remove_all(dir);
}

TEST(MixedPrecision, TrainingFlopsFollowTheStatedRule) {
  // The benchmark's configuration (issue 5): d 768, 12 heads, 12 layers, ffn 3072, vocab 256.
  LongNetLMConfig c;
  c.vocab_size = 256;
  c.d_model = 768;
  c.heads = 12;
  c.layers = 12;
  c.ffn_dim = 3072;
  c.segment_lengths = {2048, 4096, 8192, 16384, 32768};
  c.dilation_rates = {1, 2, 4, 6, 12};
  const TrainingFlops f = training_flops(c, 1, 32768);
  EXPECT_EQ(f.matmul_parameters, 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 256 * 768);
  EXPECT_DOUBLE_EQ(f.dense, 6.0 * 85131264.0 * 32768.0);
  DilatedAttentionConfig causal;
  causal.segment_lengths = c.segment_lengths;
  causal.dilation_rates = c.dilation_rates;
  causal.causal = true;
  EXPECT_DOUBLE_EQ(f.attention, 3.5 * 12 * dilated_attention_forward_flops(causal, 1, 32768, 12, 64));
  // Grouped-query heads shrink k and v.
  c.kv_heads = 4;
  EXPECT_EQ(training_flops(c, 1, 8).matmul_parameters,
            12 * (2 * 768 * 768 + 2 * 256 * 768 + 2 * 768 * 3072) + 256 * 768);
}

// ---- On CUDA ----

class MixedPrecisionCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

LongNetLMConfig gpu_config(DType compute, double dropout = 0.1) {
  LongNetLMConfig c;
  c.vocab_size = 40;
  c.d_model = 64;
  c.heads = 4;
  c.kv_heads = 2;
  c.layers = 2;
  c.ffn_dim = 128;
  c.segment_lengths = {8, 16, 64};
  c.dilation_rates = {1, 2, 4};
  c.dropout = dropout;
  c.dtype = DType::f32;
  c.compute_dtype = compute;
  return c;
}

// ||a - b|| / max(||b||, floor_rms * sqrt(n)) over all n elements of the tensors. The
// floor keeps a tensor whose exact gradient is (nearly) zero — rounding noise on both
// sides — from counting as a relative error of order 1.
double relative_error(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected, double floor_rms = 0) {
  double diff = 0, norm = 0, n = 0;
  for (std::size_t t = 0; t < actual.size(); ++t) {
    const auto a = actual[t].to_vector<double>(), e = expected[t].to_vector<double>();
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff += (a[i] - e[i]) * (a[i] - e[i]);
      norm += e[i] * e[i];
    }
    n += static_cast<double>(a.size());
  }
  const double denominator = std::max(norm, floor_rms * floor_rms * n);
  return denominator > 0 ? std::sqrt(diff / denominator) : std::sqrt(diff);
}

double rms(const std::vector<Tensor>& tensors) {
  double sum = 0, n = 0;
  for (const Tensor& t : tensors) {
    for (double v : t.to_vector<double>()) sum += v * v;
    n += static_cast<double>(t.numel());
  }
  return std::sqrt(sum / n);
}

// Without dropout (the second run) the LayerNorm backwards sum out_proj's and fc2's bias
// gradients from the bf16 gradients they write (nn::LayerGradientSums).
TEST_F(MixedPrecisionCuda, Bf16StepMatchesTheF32Step) {
  const Device gpu = Device::cuda(0);
  for (double dropout : {0.1, 0.0}) {
    SCOPED_TRACE(str("dropout ", dropout));
    LongNetLM f32(gpu_config(DType::f32, dropout), gpu, 3), bf16(gpu_config(DType::bf16, dropout), gpu, 3);
    const auto pf = f32.parameters(), pb = bf16.parameters();
    ASSERT_EQ(pf.size(), pb.size());
    for (std::size_t i = 0; i < pf.size(); ++i) {  // the same initial master weights, f32 both
      ASSERT_EQ(pb[i]->value.dtype(), DType::f32);
      ASSERT_EQ(pb[i]->grad.dtype(), DType::f32);
      ASSERT_EQ(pb[i]->value.to_vector<float>(), pf[i]->value.to_vector<float>()) << pf[i]->name;
    }
    const Batch batch{random_tokens(2, 96, 40, 1), random_tokens(2, 96, 40, 2), Tensor()};
    const nn::ForwardContext context{.training = true, .seed = 1, .step = 2};
    const double loss_f32 = f32.forward_loss(batch, context).loss;
    const double loss_bf16 = bf16.forward_loss(batch, context).loss;
    EXPECT_NEAR(loss_bf16, loss_f32, 1e-2 * loss_f32);
    f32.backward();
    bf16.backward();
    std::vector<Tensor> gf, gb;
    for (std::size_t i = 0; i < pf.size(); ++i) {
      gf.push_back(pf[i]->grad);
      gb.push_back(pb[i]->grad);
    }
    EXPECT_LE(relative_error(gb, gf), 0.05);
    // Per tensor, relative to its own size or, if the gradient is tiny, a tenth of the RMS.
    const double floor = 0.1 * rms(gf);
    for (std::size_t i = 0; i < pf.size(); ++i) {
      EXPECT_LE(relative_error({pb[i]->grad}, {pf[i]->grad}, floor), 0.1) << pf[i]->name;
    }
    AdamW of32(pf, {}), obf16(pb, {});
    const double lr = 1e-3;
    of32.step(lr);
    obf16.step(lr);
    for (std::size_t i = 0; i < pf.size(); ++i) {
      // AdamW's first step moves each weight by at most lr (m / sqrt(v) = +-1) plus the
      // decay: the master weights stay within 2 lr of the f32 run's whatever the rounding.
      const auto a = pb[i]->value.to_vector<double>(), b = pf[i]->value.to_vector<double>();
      for (std::size_t j = 0; j < a.size(); ++j) ASSERT_LE(std::abs(a[j] - b[j]), 2.05 * lr) << pf[i]->name;
      // The fused update rewrote the bf16 copy from the new master weights.
      EXPECT_EQ(pb[i]->compute.to_vector<double>(), pb[i]->value.to(DType::bf16).to_vector<double>()) << pf[i]->name;
    }
  }
}

// The q/k/v projection with the positional encoding in its GEMM's epilogue (Hopper, heads
// of 64: kernels/projection_rotary.hpp; nn::set_fused_projection(true)) against the same
// bf16 model with that kernel not asked for (the GEMM, then the rotary pass): the loss
// and every parameter gradient, for xPos and RoPE. The fused path rounds q and k to bf16
// once instead of twice, so the two agree to about a bf16 rounding, not bitwise.
TEST_F(MixedPrecisionCuda, FusedRotaryProjectionFollowsTheUnfusedPath) {
  const Device gpu = Device::cuda(0);
  {  // Skipped where the fused kernel does not run (not a Hopper GPU, or no sm_90a build).
    const Tensor x = Tensor::zeros({128, 64}, DType::bf16, gpu), w = Tensor::zeros({192, 64}, DType::bf16, gpu);
    const Tensor y = Tensor::zeros({128, 192}, DType::bf16, gpu);
    kernels::ProjectionRotaryParams probe;
    probe.rows = 128, probe.in_features = 64, probe.out_features = 192, probe.x = x.data(), probe.x_row_stride = 64;
    probe.weight = w.data(), probe.y = y.data(), probe.y_row_stride = 192;
    if (!kernels::projection_rotary_supported(probe)) GTEST_SKIP() << "the fused projection does not run here";
  }
  for (const nn::PositionalEncoding kind : {nn::PositionalEncoding::xpos, nn::PositionalEncoding::rope}) {
    SCOPED_TRACE(kind == nn::PositionalEncoding::xpos ? "xpos" : "rope");
    LongNetLMConfig c = gpu_config(DType::bf16, 0.0);
    c.d_model = 128, c.heads = 2, c.kv_heads = 1, c.ffn_dim = 256;  // heads of 64
    c.segment_lengths = {32, 64, 160}, c.dilation_rates = {1, 2, 4};
    c.positional = kind;
    LongNetLM model(c, gpu, 5);
    const auto params = model.parameters();
    const Batch batch{random_tokens(2, 160, 40, 1), random_tokens(2, 160, 40, 2), Tensor()};
    const nn::ForwardContext context{.training = true, .seed = 1, .step = 2};
    const auto run = [&](bool fused) {
      const bool was_enabled = nn::fused_projection_enabled();
      nn::set_fused_projection(fused);
      model.zero_grad();
      const double loss = model.forward_loss(batch, context).loss;
      model.backward();
      std::vector<Tensor> grads;
      for (const auto& p : params) grads.push_back(p->grad.to(Device::cpu(), DType::f64));
      nn::set_fused_projection(was_enabled);
      return std::pair{loss, grads};
    };
    const auto [unfused_loss, unfused_grads] = run(false);
    const auto [fused_loss, fused_grads] = run(true);
    // q and k rounded once, not twice: somewhere the bits differ, or the fused path did not run.
    bool any_difference = fused_loss != unfused_loss;
    for (std::size_t i = 0; i < params.size(); ++i) {
      any_difference = any_difference || fused_grads[i].to_vector<double>() != unfused_grads[i].to_vector<double>();
    }
    EXPECT_TRUE(any_difference) << "the fused projection did not run";
    EXPECT_NEAR(fused_loss, unfused_loss, 2e-3 * unfused_loss);
    EXPECT_LE(relative_error(fused_grads, unfused_grads), 0.02);
    const double floor = 0.1 * rms(unfused_grads);
    for (std::size_t i = 0; i < params.size(); ++i) {
      EXPECT_LE(relative_error({fused_grads[i]}, {unfused_grads[i]}, floor), 0.05) << params[i]->name;
    }
  }
}

// On CUDA, Trainer::step queues the loss sum, the gradient norm and the clipped update (the
// clip factor computed on the device) and reads only at its end; the same step taken apart
// with the reading API has the same bits (deterministic mode, dropout on, clip active).
TEST_F(MixedPrecisionCuda, ATrainingStepEqualsItsPartsTakenApart) {
  const Device gpu = Device::cuda(0);
  const LongNetLMConfig c = gpu_config(DType::bf16);
  LongNetLM queued(c, gpu, 3), apart(c, gpu, 3);
  const Batch batch{random_tokens(2, 96, 40, 1), random_tokens(2, 96, 40, 2), Tensor()};
  const FixedBatches data(batch);
  TrainingConfig t;
  t.steps = 3;
  t.warmup_steps = 1;
  t.grad_clip = 0.05;
  t.seed = 4;
  Trainer trainer(queued, data, t);
  AdamW optimizer(apart.parameters(), t.adamw);
  for (std::int64_t step = 0; step < t.steps; ++step) {
    const StepResult r = trainer.step();
    apart.zero_grad();
    const nn::ForwardContext context{.training = true, .seed = t.seed, .step = step, .deterministic = true};
    const LossOutput loss = apart.forward_loss(batch, context);
    apart.backward(1.0);
    const double norm = global_gradient_norm(apart.parameters());
    optimizer.step(t.schedule().at(step), clip_factor(norm, t.grad_clip));
    EXPECT_EQ(r.loss, loss.loss) << "step " << step;
    EXPECT_EQ(r.grad_norm, norm) << "step " << step;
    EXPECT_GT(norm, t.grad_clip);  // the clip was active
  }
  const auto a = queued.parameters(), b = apart.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]->value.to_vector<float>(), b[i]->value.to_vector<float>()) << a[i]->name;
    if (a[i]->compute.defined()) {
      EXPECT_EQ(a[i]->compute.to_vector<double>(), b[i]->compute.to_vector<double>()) << a[i]->name;
    }
  }
}

// Steps queued one ahead on CUDA (Trainer::step(true): the next step's kernels queued
// before this one's loss is read, its clip chained to this one's norm) have the bits of
// steps taken one at a time (deterministic mode, dropout on, clip active).
TEST_F(MixedPrecisionCuda, StepsQueuedAheadHaveTheBitsOfStepsOneAtATime) {
  const Device gpu = Device::cuda(0);
  const LongNetLMConfig c = gpu_config(DType::bf16);
  LongNetLM one_model(c, gpu, 3), ahead_model(c, gpu, 3);
  const FixedBatches data({random_tokens(2, 96, 40, 1), random_tokens(2, 96, 40, 2), Tensor()});
  TrainingConfig t;
  t.steps = 4;
  t.warmup_steps = 1;
  t.grad_clip = 0.05;
  t.seed = 4;
  Trainer one(one_model, data, t), ahead(ahead_model, data, t);
  for (std::int64_t step = 0; step < t.steps; ++step) {
    const StepResult a = one.step(), b = ahead.step(true);
    EXPECT_EQ(a.loss, b.loss) << "step " << step;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << step;
    EXPECT_EQ(ahead.step_queued_ahead(), step + 1 < t.steps);
  }
  const auto x = one_model.parameters(), y = ahead_model.parameters();
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i]->value.to_vector<float>(), y[i]->value.to_vector<float>()) << x[i]->name;
  }
}

// For the tests of work moved beside the critical path: a model large enough that a side
// stream's work still runs when the current stream has moved on, and steps that
// accumulate, clip and queue ahead.
LongNetLMConfig overlap_test_config() {
  LongNetLMConfig c = gpu_config(DType::bf16);
  c.d_model = 256;
  c.heads = 4;
  c.kv_heads = 4;
  c.layers = 3;
  c.ffn_dim = 1024;
  c.segment_lengths = {256, 512, 2048};
  c.dilation_rates = {1, 2, 4};
  return c;
}

TrainingConfig overlap_test_training() {
  TrainingConfig t;
  t.steps = 3;
  t.gradient_accumulation = 2;
  t.warmup_steps = 1;
  t.grad_clip = 0.05;
  t.seed = 4;
  return t;
}

// The layers' parameter gradients on the gradient stream (GradientStream) give the bits of
// one stream: deterministic mode, bf16, dropout, gradient accumulation, steps queued ahead,
// and a model large enough that the side stream's GEMMs still run when the current stream
// has moved on (a tensor freed too early, or a gradient read before it is written, would
// change the bits).
TEST_F(MixedPrecisionCuda, ParameterGradientsOnTheGradientStreamHaveTheBitsOfOneStream) {
  const Device gpu = Device::cuda(0);
  LongNetLMConfig c = overlap_test_config();
  const FixedBatches data({random_tokens(2, 2048, 40, 1), random_tokens(2, 2048, 40, 2), Tensor()});
  const TrainingConfig t = overlap_test_training();
  const bool was_enabled = gradient_stream_enabled();
  std::vector<StepResult> results[2];
  std::vector<std::vector<float>> values[2];
  for (int overlap = 0; overlap < 2; ++overlap) {
    set_gradient_stream(overlap == 1);
    LongNetLM model(c, gpu, 3);
    Trainer trainer(model, data, t);
    for (std::int64_t step = 0; step < t.steps; ++step) results[overlap].push_back(trainer.step(true));
    for (const nn::ParameterPtr& p : model.parameters()) values[overlap].push_back(p->value.to_vector<float>());
  }
  set_gradient_stream(was_enabled);
  for (std::int64_t step = 0; step < t.steps; ++step) {
    EXPECT_EQ(results[1][step].loss, results[0][step].loss) << "step " << step;
    EXPECT_EQ(results[1][step].grad_norm, results[0][step].grad_norm) << "step " << step;
  }
  ASSERT_EQ(values[1].size(), values[0].size());
  for (std::size_t i = 0; i < values[0].size(); ++i) EXPECT_EQ(values[1][i], values[0][i]) << "parameter " << i;
}

// The gradient norm queued layer by layer during the last backward (nn::GradientNormQueue,
// LONGNET_NORM_IN_BACKWARD) and the weight matrices' zero fill left to their first writer
// (nn::DeferredGradientZero, LONGNET_DEFERRED_ZERO), each and both, have the bits of the
// step without them: each layer's partial sums on the gradient stream behind that layer's
// weight gradients (a sum taken before a gradient is final, or of a freed buffer, would
// change the bits), the dW GEMMs storing in the first micro-step (the same cuBLASLt
// algorithm as accumulating into zeros), clipping, steps queued ahead, tied embeddings (the
// head's GEMM stores into the table, the embedding adds) and untied. With gradient
// accumulation and dropout (the fill deferred in the first micro-step, the norm queued in
// the second), and as `longnet bench train` runs: one micro-step, both in it, no dropout
// (so the next LayerNorm sums each layer's output bias on the gradient stream); and the
// encoder-decoder model (cross-attention, one table for two embeddings).
TEST_F(MixedPrecisionCuda, NormInBackwardAndDeferredZeroHaveTheBitsOfTheStepWithout) {
  const Device gpu = Device::cuda(0);
  const Tensor source = random_tokens(2, 2048, 40, 3);
  const FixedBatches lm_data({random_tokens(2, 2048, 40, 1), random_tokens(2, 2048, 40, 2), Tensor()});
  const FixedBatches source_data({random_tokens(2, 2048, 40, 1), random_tokens(2, 2048, 40, 2), source});
  const bool norm_was = nn::gradient_norm_in_backward(), zero_was = nn::deferred_gradient_zero_enabled();
  struct Case {
    bool encoder_decoder, tied;
    std::int64_t accumulation;
    double dropout;
  };
  for (const Case& k : {Case{false, false, 2, 0.1}, Case{false, true, 2, 0.1}, Case{false, false, 1, 0.0},
                        Case{false, true, 1, 0.0}, Case{true, false, 1, 0.0}, Case{true, true, 2, 0.1}}) {
    LongNetConfig c;
    static_cast<LongNetLMConfig&>(c) = overlap_test_config();
    c.layers = k.encoder_decoder ? 2 : c.layers;
    c.encoder_layers = 1;
    c.tie_embeddings = k.tied;
    c.dropout = k.dropout;
    TrainingConfig t = overlap_test_training();
    t.gradient_accumulation = k.accumulation;
    const auto run = [&](bool norm, bool deferred, std::vector<StepResult>& results,
                         std::vector<std::vector<float>>& values) {
      nn::set_gradient_norm_in_backward(norm);
      nn::set_deferred_gradient_zero(deferred);
      std::unique_ptr<LanguageModel> model;
      if (k.encoder_decoder) {
        model = std::make_unique<LongNet>(c, gpu, 3);
      } else {
        model = std::make_unique<LongNetLM>(c, gpu, 3);
      }
      Trainer trainer(*model, k.encoder_decoder ? source_data : lm_data, t);
      for (std::int64_t step = 0; step < t.steps; ++step) results.push_back(trainer.step(true));
      for (const nn::ParameterPtr& p : model->parameters()) values.push_back(p->value.to_vector<float>());
    };
    std::vector<StepResult> base_results;
    std::vector<std::vector<float>> base_values;
    run(false, false, base_results, base_values);
    for (const auto& [norm, deferred] : {std::pair{true, false}, {false, true}, {true, true}}) {
      SCOPED_TRACE(str(k.encoder_decoder ? "encoder-decoder" : "decoder-only", ", tied ", k.tied, ", accumulation ",
                       k.accumulation, ", dropout ", k.dropout, ", norm in backward ", norm, ", deferred zero ",
                       deferred));
      std::vector<StepResult> results;
      std::vector<std::vector<float>> values;
      run(norm, deferred, results, values);
      for (std::int64_t step = 0; step < t.steps; ++step) {
        EXPECT_GT(base_results[step].grad_norm, 0.0) << "step " << step;
        EXPECT_EQ(results[step].loss, base_results[step].loss) << "step " << step;
        EXPECT_EQ(results[step].grad_norm, base_results[step].grad_norm) << "step " << step;
      }
      ASSERT_EQ(values.size(), base_values.size());
      for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(values[i], base_values[i]) << "parameter " << i;
    }
  }
  nn::set_gradient_norm_in_backward(norm_was);
  nn::set_deferred_gradient_zero(zero_was);
  // Taken apart: a queue open over the backward alone (the layers' partials queued during it)
  // sums to the norm taken after it.
  LongNetLM model(overlap_test_config(), gpu, 3);
  model.forward_loss({random_tokens(2, 2048, 40, 1), random_tokens(2, 2048, 40, 2), Tensor()}, {});
  double queued_sum = 0;
  {
    nn::GradientNormQueue norms(model.parameters());
    model.backward();
    queued_sum = norms.finish().item();
  }
  EXPECT_GT(queued_sum, 0.0);
  EXPECT_EQ(queued_sum, gradient_sum_of_squares(model.parameters()).item());
}

// The modules handed to a GradientNormQueue in the queue's tests: a list of parameters.
class ParameterList final : public nn::Module {
 public:
  explicit ParameterList(std::vector<nn::ParameterPtr> parameters) : parameters_(std::move(parameters)) {}
  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override {
    for (const nn::ParameterPtr& p : parameters_) nn::append_unique(out, p);
  }

 private:
  std::vector<nn::ParameterPtr> parameters_;
};

// A parameter handed to the queue by two modules (a weight shared between layers) is not
// final when the first is done: the queue sums it again after the backward, so the norm is
// the one of the final gradients, not of what the first module's partials saw.
TEST_F(MixedPrecisionCuda, GradientNormQueueSumsASharedParameterAfterTheBackward) {
  const Device gpu = Device::cuda(0);
  nn::ParameterOptions options;
  options.device = gpu;
  const auto a = nn::make_parameter("a", Tensor::full({64, 32}, 1.0, DType::f64), options);
  const auto shared = nn::make_parameter("shared", Tensor::full({32, 32}, 1.0, DType::f64), options);
  const auto b = nn::make_parameter("b", Tensor::full({16}, 1.0, DType::f64), options);
  const std::vector<nn::ParameterPtr> all{a, shared, b};
  for (const nn::ParameterPtr& p : all) p->grad.fill(2.0);
  const ParameterList first({a, shared}), second({shared, b});
  double queued = 0;
  {
    nn::GradientNormQueue norms(all);
    norms.layer_done(first);
    shared->grad.fill(3.0);  // what the second module's backward adds
    norms.layer_done(second);
    queued = norms.finish().item();
  }
  EXPECT_EQ(queued, 64.0 * 32 * 4 + 32.0 * 32 * 9 + 16.0 * 4);
  EXPECT_EQ(queued, gradient_sum_of_squares(all).item());
}

// A step on CUDA whose gradient norm is not finite is an error; the update, queued before
// the norm was read, skipped itself on the device: parameters, their bf16 copies and the
// optimizer state are as they were, and the step is not counted.
TEST_F(MixedPrecisionCuda, ADivergedStepChangesNothingOnTheDevice) {
  const Device gpu = Device::cuda(0);
  LongNetLM model(gpu_config(DType::bf16), gpu, 3);
  const FixedBatches data({random_tokens(2, 96, 40, 1), random_tokens(2, 96, 40, 2), Tensor()});
  TrainingConfig t;
  t.steps = 3;
  Trainer trainer(model, data, t);
  trainer.step();
  const nn::ParameterPtr weight = model.parameters()[3];
  const Tensor good = weight->value.clone();
  Tensor poisoned = good.to(Device::cpu());
  poisoned.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  weight->value.copy_from(poisoned);
  model.refresh_compute_copies();  // the forward reads the bf16 copies
  std::vector<std::vector<float>> before;
  for (const auto& p : model.parameters()) before.push_back(p->value.to_vector<float>());
  for (const auto& p : model.parameters()) {
    if (p->compute.defined()) before.push_back(p->compute.to_vector<float>());
  }
  for (const auto& [name, tensor] : trainer.optimizer().state()) before.push_back(tensor.to_vector<float>());
  EXPECT_THROW(trainer.step(), Error);
  EXPECT_EQ(trainer.steps_done(), 1);
  std::vector<std::vector<float>> after;
  for (const auto& p : model.parameters()) after.push_back(p->value.to_vector<float>());
  for (const auto& p : model.parameters()) {
    if (p->compute.defined()) after.push_back(p->compute.to_vector<float>());
  }
  for (const auto& [name, tensor] : trainer.optimizer().state()) after.push_back(tensor.to_vector<float>());
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    ASSERT_EQ(std::memcmp(after[i].data(), before[i].data(), before[i].size() * sizeof(float)), 0) << "tensor " << i;
  }
  weight->value.copy_from(good);
  model.refresh_compute_copies();
  EXPECT_TRUE(std::isfinite(trainer.step().grad_norm));
  EXPECT_EQ(trainer.steps_done(), 2);
}

TEST_F(MixedPrecisionCuda, Bf16LossFallsOnThePasskeyTask) {
  LongNetLMConfig c = gpu_config(DType::bf16);
  c.vocab_size = kByteVocabulary;
  c.dropout = 0.0;
  c.segment_lengths = {16, 64, 256};
  c.dilation_rates = {1, 4, 16};
  LongNetLM model(c, Device::cuda(0), 1);
  const PasskeyData data(8, 256, 1);
  TrainingConfig t;
  t.steps = 40;
  t.lr = 3e-3;
  t.min_lr = 3e-4;
  t.warmup_steps = 5;
  Trainer trainer(model, data, t);
  double first = 0, last = 0;
  for (std::int64_t i = 0; i < t.steps; ++i) {
    const StepResult r = trainer.step();
    ASSERT_TRUE(std::isfinite(r.loss));
    if (i == 0) first = r.loss;
    if (i >= t.steps - 5) last += r.loss / 5;
  }
  // At the start the key's digits are any of 256 bytes (log 256 = 5.5 nats); within a few
  // dozen steps a model learns at least that they are digits (log 10 = 2.3).
  EXPECT_GT(first, 4.5);
  EXPECT_LT(last, 3.0);
}

TEST_F(MixedPrecisionCuda, Bf16CheckpointHoldsF32MasterWeightsAndResumesExactly) {
  const auto dir = temp_dir("bf16_resume");
  const LongNetLMConfig c = gpu_config(DType::bf16);
  const LanguageModelingData data(
      [] {
        std::vector<std::int32_t> tokens;
        for (std::int32_t i = 0; i < 4000; ++i) tokens.push_back((i * 7 + i / 13) % 40);
        return tokens;
      }(),
      0.1, 2, 80, 5);
  TrainingConfig t;
  t.steps = 6;
  t.gradient_accumulation = 2;
  t.warmup_steps = 2;
  t.seed = 5;
  ASSERT_TRUE(t.deterministic);  // the default: exact resumption needs it on CUDA

  LongNetLM straight(c, Device::cuda(0), 2);
  Trainer uninterrupted(straight, data, t);
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) {
    losses.push_back(uninterrupted.step().loss);
    if (i == 2) uninterrupted.save_checkpoint(dir / "c.safetensors");
  }

  const SafetensorsReader reader(dir / "c.safetensors");
  for (const SafetensorsEntry& e : reader.entries()) EXPECT_EQ(e.dtype, DType::f32) << e.name;
  EXPECT_EQ(lm_config_from_json(read_checkpoint_info(dir / "c.safetensors").config_json, "c").compute_dtype,
            DType::bf16);

  LongNetLM resumed_model(c, Device::cuda(0), 99);  // another initialisation, replaced by the checkpoint
  Trainer resumed(resumed_model, data, t);
  resumed.resume(dir / "c.safetensors");
  for (const auto& p : resumed_model.parameters()) {  // the copies follow the loaded master weights
    ASSERT_EQ(p->compute.to_vector<double>(), p->value.to(DType::bf16).to_vector<double>()) << p->name;
  }
  for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed.step().loss, losses[static_cast<std::size_t>(i)]) << "step " << i;
  const auto a = straight.parameters(), b = resumed_model.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]->value.to_vector<float>(), a[i]->value.to_vector<float>()) << a[i]->name;
  }
  std::filesystem::remove_all(dir);
}

TEST_F(MixedPrecisionCuda, Bf16GenerationFollowsTheF32Model) {
  const Device gpu = Device::cuda(0);
  LongNetLM f32(gpu_config(DType::f32), gpu, 3), bf16(gpu_config(DType::bf16), gpu, 3);
  auto state_f32 = f32.make_decode_state(2, 40), state_bf16 = bf16.make_decode_state(2, 40);
  std::vector<std::int32_t> prompt;
  for (std::int32_t i = 0; i < 2 * 11; ++i) prompt.push_back((5 * i) % 40);
  const Tensor tokens = Tensor::from_vector(prompt, {2, 11});
  EXPECT_LE(relative_error({bf16.prefill(tokens, state_bf16)}, {f32.prefill(tokens, state_f32)}), 0.05);
  for (std::int32_t p = 11; p < 40; ++p) {
    const Tensor next = Tensor::from_vector<std::int32_t>({p % 40, (3 * p) % 40}, {2});
    EXPECT_LE(relative_error({bf16.decode(next, state_bf16)}, {f32.decode(next, state_f32)}), 0.05) << p;
  }
  const GenerationResult g = generate(bf16, {1, 2, 3}, 10, {.temperature = 0.0});
  EXPECT_EQ(g.tokens.size(), 10u);
}

}  // namespace
}  // namespace longnet::testing
