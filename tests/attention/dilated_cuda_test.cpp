// The CUDA dilated-attention kernels against the fp64 oracle and the CPU kernel: exact
// paths (f32 within 1e-5 or 2x naive float32; f64 within 1e-12) and the tensor-core paths
// (bf16/f16: at most 2x the error of the naive same-precision computation plus 1e-3,
// DESIGN 5), on seeded random configurations and the edge cases; strided inputs;
// deterministic mode bitwise repeatable. Every test skips itself without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "longnet/attention/dilated_attention.hpp"
#include "support/dilated_oracle.hpp"
#include "support/random_problems.hpp"

namespace longnet::testing {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

const Device kGpu = Device::cuda(0);

struct Result {
  AttentionOutput forward;
  AttentionGradients grads;
};

Result run(const DilatedAttentionConfig& config, const ProblemTensors& t) {
  Result r;
  r.forward = dilated_attention_forward(config, t.q, t.k, t.v);
  r.grads = dilated_attention_backward(config, t.q, t.k, t.v, r.forward, t.dout);
  return r;
}

ProblemTensors on(const ProblemTensors& t, Device device) {
  return {t.q.to(device), t.k.to(device), t.v.to(device), t.dout.to(device)};
}

// Two deterministic runs of one problem: the output and every gradient bit for bit equal.
void expect_same_bits(const Result& first, const Result& again, const std::string& what) {
  EXPECT_EQ(first.forward.out.to_vector<float>(), again.forward.out.to_vector<float>()) << "out " << what;
  EXPECT_EQ(first.grads.dq.to_vector<float>(), again.grads.dq.to_vector<float>()) << "dq " << what;
  EXPECT_EQ(first.grads.dk.to_vector<float>(), again.grads.dk.to_vector<float>()) << "dk " << what;
  EXPECT_EQ(first.grads.dv.to_vector<float>(), again.grads.dv.to_vector<float>()) << "dv " << what;
}

// `repeats` deterministic runs of one problem, each bit for bit the first, and then the
// atomic (non-deterministic) run: {first deterministic, atomic}.
std::pair<Result, Result> repeated_then_atomic(DilatedAttentionConfig config, const ProblemTensors& t, int repeats,
                                               const std::string& what) {
  config.deterministic = true;
  Result first = run(config, t);
  for (int repeat = 0; repeat < repeats; ++repeat) expect_same_bits(first, run(config, t), what);
  config.deterministic = false;
  Result atomic = run(config, t);
  return {std::move(first), std::move(atomic)};
}

// Exact paths: f32 on the GPU against the oracle, like the CPU kernel.
void expect_exact_float(const DilatedProblem& p, std::uint64_t seed) {
  const ProblemTensors host = random_tensors(p, seed, DType::f32);
  const Result gpu = run(config_of(p), on(host, kGpu));
  const OracleOutput o = dilated_oracle_forward(p, host.q, host.k, host.v);
  const OracleGradients og = dilated_oracle_backward(p, host.q, host.k, host.v, host.dout);
  const OracleOutput nf = dilated_naive_float_forward(p, host.q, host.k, host.v);
  const OracleGradients ng = dilated_naive_float_backward(p, host.q, host.k, host.v, host.dout);
  auto check = [&](const Tensor& actual, const Tensor& naive, const Tensor& expected, const char* name) {
    const double error = relative_l2_error(actual, expected);
    if (error > 1e-5) {
      EXPECT_LE(error, 2 * relative_l2_error(naive, expected)) << name << " " << describe(p);
    }
  };
  check(gpu.forward.out, nf.out, o.out, "out");
  check(gpu.forward.lse, nf.lse, o.lse, "lse");
  check(gpu.grads.dq, ng.dq, og.dq, "dq");
  check(gpu.grads.dk, ng.dk, og.dk, "dk");
  check(gpu.grads.dv, ng.dv, og.dv, "dv");
}

// Tensor-core paths, DESIGN 5 (FlashAttention's rule): max |error| <= 2 x max |error of
// the naive computation in the same precision| + the rounding tolerance above.
void expect_half(const DilatedProblem& p, const ProblemTensors& host, DType dtype, bool deterministic = false) {
  DilatedAttentionConfig config = config_of(p);
  config.deterministic = deterministic;
  const Result gpu = run(config, on(host, kGpu));
  ASSERT_EQ(gpu.forward.out.dtype(), dtype);
  const OracleOutput o = dilated_oracle_forward(p, host.q, host.k, host.v);
  const OracleGradients og = dilated_oracle_backward(p, host.q, host.k, host.v, host.dout);
  const OracleOutput nh = dilated_naive_half_forward(p, host.q, host.k, host.v, dtype);
  const OracleGradients ng = dilated_naive_half_backward(p, host.q, host.k, host.v, host.dout, dtype);
  auto check = [&](const Tensor& actual, const Tensor& naive, const Tensor& expected, const char* name) {
    const double error = max_abs_error(actual, expected);
    const double naive_error = max_abs_error(naive, expected);
    EXPECT_LE(error, 2 * naive_error + rounding_tolerance(expected, dtype))
        << name << " max |error| (naive " << naive_error << ", relative L2 " << relative_l2_error(actual, expected)
        << ") " << describe(p);
  };
  check(gpu.forward.out, nh.out, o.out, "out");
  EXPECT_LE(relative_l2_error(gpu.forward.lse, o.lse), 1e-5) << "lse " << describe(p);
  check(gpu.grads.dq, ng.dq, og.dq, "dq");
  check(gpu.grads.dk, ng.dk, og.dk, "dk");
  check(gpu.grads.dv, ng.dv, og.dv, "dv");
}

void expect_half(const DilatedProblem& p, std::uint64_t seed, DType dtype, bool deterministic = false) {
  expect_half(p, random_tensors(p, seed, dtype), dtype, deterministic);
}

DilatedProblem tensor_core_problem(std::uint64_t seed) {
  ProblemLimits limits;
  limits.max_seq_len = 700;
  limits.max_head_dim = 128;
  DilatedProblem p = random_problem(seed, limits);
  // The tensor-core kernels take head dims that are multiples of 8 (others go to SIMT).
  static const std::int64_t dims[] = {32, 64, 96, 128, 64, 64, 128, 16, 8, 40};
  p.head_dim = dims[seed % 10];
  p.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim)) * (0.5 + 0.1 * static_cast<double>(seed % 10));
  return p;
}

TEST(DilatedAttentionCuda, Float32MatchesOracleOnRandomConfigurations) {
  SKIP_WITHOUT_GPU();
  for (std::uint64_t seed = 5000; seed < 5060; ++seed) {
    expect_exact_float(random_problem(seed), seed);
    if (HasFailure()) return;
  }
}

TEST(DilatedAttentionCuda, Float64IsExactToRounding) {
  SKIP_WITHOUT_GPU();
  for (std::uint64_t seed = 6000; seed < 6020; ++seed) {
    ProblemLimits limits;
    limits.max_seq_len = 200;
    const DilatedProblem p = random_problem(seed, limits);
    const ProblemTensors host = random_tensors(p, seed, DType::f64);
    const Result gpu = run(config_of(p), on(host, kGpu));
    EXPECT_LE(relative_l2_error(gpu.forward.out, dilated_oracle_forward(p, host.q, host.k, host.v).out), 1e-12)
        << describe(p);
    const OracleGradients og = dilated_oracle_backward(p, host.q, host.k, host.v, host.dout);
    EXPECT_LE(relative_l2_error(gpu.grads.dq, og.dq), 1e-12) << describe(p);
    EXPECT_LE(relative_l2_error(gpu.grads.dk, og.dk), 1e-12) << describe(p);
    EXPECT_LE(relative_l2_error(gpu.grads.dv, og.dv), 1e-12) << describe(p);
  }
}

TEST(DilatedAttentionCuda, Bf16MatchesOracleOnRandomConfigurations) {
  SKIP_WITHOUT_GPU();
  for (std::uint64_t seed = 7000; seed < 7080; ++seed) {
    expect_half(tensor_core_problem(seed), seed, DType::bf16);
    if (HasFailure()) return;
  }
}

TEST(DilatedAttentionCuda, F16MatchesOracleOnRandomConfigurations) {
  SKIP_WITHOUT_GPU();
  for (std::uint64_t seed = 8000; seed < 8040; ++seed) {
    expect_half(tensor_core_problem(seed), seed, DType::f16);
    if (HasFailure()) return;
  }
}

TEST(DilatedAttentionCuda, DeterministicModeMatchesOracle) {
  SKIP_WITHOUT_GPU();
  for (std::uint64_t seed = 9000; seed < 9030; ++seed) {
    expect_half(tensor_core_problem(seed), seed, DType::bf16, /*deterministic=*/true);
    if (HasFailure()) return;
  }
}

DilatedProblem edge(std::int64_t N, std::int64_t H, std::int64_t Hk, std::int64_t D,
                    std::vector<kernels::DilationPattern> patterns, kernels::DilatedMode mode, bool causal) {
  DilatedProblem p;
  p.seq_len = N;
  p.heads = H;
  p.kv_heads = Hk;
  p.head_dim = D;
  p.patterns = std::move(patterns);
  p.mode = mode;
  p.causal = causal;
  p.scale = 1.0 / std::sqrt(static_cast<double>(D));
  return p;
}

TEST(DilatedAttentionCuda, EdgeCases) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  const DilatedProblem cases[] = {
      edge(50, 4, 4, 64, {{64, 2}, {128, 4}}, DilatedMode::longnet, false),              // N < w
      edge(301, 4, 2, 64, {{16, 2}, {33, 3}, {64, 8}}, DilatedMode::longnet, true),      // N not a multiple
      edge(297, 6, 3, 128, {{10, 3}, {210, 4}}, DilatedMode::longnet, false),            // w not a multiple of r
      edge(320, 3, 3, 64, {{40, 8}, {320, 16}}, DilatedMode::longnet, true),             // r > H
      edge(290, 5, 5, 96, {{30, 3}, {145, 2}}, DilatedMode::longnet, false),             // H not a multiple of r
      edge(280, 5, 1, 32, {{16, 1}, {32, 2}, {64, 4}}, DilatedMode::head_groups, true),  // H not a multiple of G
      edge(264, 8, 2, 64, {{128, 1}, {256, 2}}, DilatedMode::longnet, false),            // Hk < H
      edge(1, 2, 1, 64, {{1, 1}}, DilatedMode::longnet, true),                           // causal at 0, N = 1
      edge(140, 2, 2, 64, {{8, 4}}, DilatedMode::longnet, false),                        // rows with no keys
      edge(500, 8, 8, 64, {{200, 1}, {400, 2}, {500, 4}}, DilatedMode::head_groups, true),
      // the last segment of the r = 4 group is no longer than its offset 2: no work item
      // covers its rows, so the output is zero-filled before the kernel instead of by it
      edge(130, 3, 3, 64, {{32, 1}, {64, 2}, {64, 4}}, DilatedMode::head_groups, false),
  };
  for (const auto& p : cases) {
    expect_half(p, 99, DType::bf16);
    expect_exact_float(p, 98);
  }
}

// Scores that grow along the sequence (key row j scaled by 1 + j / 256): the Hopper
// forward's online softmax keeps a row's reference maximum until a key tile exceeds it by
// more than 2^8 (kRescaleThresholdLog2), so these rows rescale their output at some tiles
// and keep it at others (probabilities above 1 in between); both must match the oracle.
TEST(DilatedAttentionCuda, RisingScoresRescaleTheOutputAtSomeTiles) {
  SKIP_WITHOUT_GPU();
  for (const std::int64_t head_dim : {64, 128}) {
    for (const bool causal : {false, true}) {
      const DilatedProblem p =
          edge(1024, 4, 2, head_dim, {{1024, 1}, {512, 2}}, kernels::DilatedMode::longnet, causal);
      for (const DType dtype : {DType::bf16, DType::f16}) {
        const ProblemTensors random = random_tensors(p, 31, DType::f32);
        std::vector<float> k = random.k.to_vector<float>();
        const std::int64_t row = p.kv_heads * p.head_dim;
        for (std::size_t i = 0; i < k.size(); ++i) {
          k[i] *= 1.0f + static_cast<float>(static_cast<std::int64_t>(i) / row % p.seq_len) / 256.0f;
        }
        const ProblemTensors host{random.q.to(dtype), Tensor::from_vector(k, random.k.shape()).to(dtype),
                                  random.v.to(dtype), random.dout.to(dtype)};
        expect_half(p, host, dtype);
      }
    }
  }
}

// More work items (query tiles of virtual sequences) than the GPU has SMs, with one and with
// several key tiles each: the persistent Hopper forward walks several items per CTA, its
// rings of shared stages wrapping around across items.
TEST(DilatedAttentionCuda, ManyWorkItemsPerCta) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  for (const bool causal : {false, true}) {
    DilatedProblem groups = edge(1536, 6, 3, 64, {{64, 1}, {640, 1}, {1024, 2}}, DilatedMode::head_groups, causal);
    groups.batch = 2;
    DilatedProblem longnet = edge(1536, 4, 2, 128, {{64, 1}, {512, 2}}, DilatedMode::longnet, causal);
    longnet.batch = 2;
    expect_half(groups, 21, DType::bf16);
    expect_half(longnet, 22, DType::f16);
  }
}

// Causal backward launches number their last sequences' CTAs tile-major and the others in
// sequence order (backward_order.cuh): enough one-tile sequences (w = 32) that both parts
// exist (the tail is about four waves of CTAs: 528 sequences on 132 SMs), with grouped
// heads, several batch elements, and patterns whose launches are tile-major whole.
TEST(DilatedAttentionCuda, CausalBackwardOfManySequences) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  DilatedProblem longnet = edge(2048, 8, 8, 64, {{32, 1}, {128, 2}}, DilatedMode::longnet, true);
  longnet.batch = 2;  // 1024 sequences of w = 32
  DilatedProblem groups = edge(2048, 8, 4, 64, {{32, 1}, {256, 4}}, DilatedMode::head_groups, true);
  groups.batch = 3;  // 768
  expect_half(longnet, 41, DType::bf16);
  expect_half(groups, 42, DType::f16);
  // Deterministic: dQ added from the diagonal down, key tiles dispatched in descending
  // order; many CTAs wait on others, across sequences and heads of a kv group.
  expect_half(groups, 43, DType::bf16, /*deterministic=*/true);
  const ProblemTensors t = on(random_tensors(groups, 44, DType::bf16), kGpu);
  DilatedAttentionConfig config = config_of(groups);
  config.deterministic = true;
  expect_same_bits(run(config, t), run(config, t), describe(groups));
}

// LongNet mode whose first pattern has dilation 1 (it reaches every key row) and one query
// head per kv head: the backward's first launch stores dK, dV into the fp32 accumulators,
// which are not zero-filled. NaN written over the pool's free memory before each run
// stands in for stale memory: a key row left unstored would come out NaN. The other cases
// keep the zero fill.
TEST(DilatedAttentionCuda, LongNetKeyAccumulatorsNeedNoZeroFill) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  const DilatedProblem cases[] = {
      edge(300, 4, 4, 64, {{64, 1}, {128, 2}, {256, 4}}, DilatedMode::longnet, false),  // r = 1 first
      edge(300, 4, 2, 64, {{64, 1}, {128, 2}}, DilatedMode::longnet, true),             // GQA: dK, dV zeroed
      edge(257, 4, 4, 128, {{64, 2}, {100, 1}}, DilatedMode::longnet, false),  // r = 1 not first: dK, dV zeroed
      edge(190, 4, 4, 64, {{190, 1}}, DilatedMode::longnet, true),             // one pattern: direct dK, dV
      edge(300, 4, 4, 64, {{96, 1}, {300, 3}}, DilatedMode::longnet, true),    // causal, r = 1 first
      edge(260, 3, 3, 32, {{64, 3}, {130, 2}}, DilatedMode::longnet, false),   // no r = 1: zero-filled
  };
  for (const auto& p : cases) {
    Tensor::full({8 << 20}, NAN, DType::f32, kGpu);  // 32 MB of NaN freed into the pool
    expect_half(p, 31, DType::bf16);
    Tensor::full({8 << 20}, NAN, DType::f32, kGpu);
    expect_half(p, 32, DType::f16);
    Tensor::full({8 << 20}, NAN, DType::f32, kGpu);
    expect_half(p, 33, DType::bf16, /*deterministic=*/true);  // the mma.sync kernels
  }
}

// LongNet mode's forward merges each pattern's rows into fp32 accumulators that are not
// filled first when the first pattern has dilation 1: that pattern runs last and writes
// the output (PatternLaunch::merge_last), and a merge ignores an accumulator row whose lse
// is still -inf. NaN over the pool's free memory first stands in for stale memory: a row
// merged with it would come out NaN. Cases: the training configuration's five patterns
// scaled down (rates up to 12, causal), several batch elements with grouped kv heads, N
// not a multiple of w and last segments no longer than their heads' offsets (empty virtual
// sequences), head dim 128, sixteen patterns, two of dilation 1, and a first pattern of
// dilation 2 (zero-filled accumulators, converted after).
TEST(DilatedAttentionCuda, LongNetMergesOverUnfilledAccumulators) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  DilatedProblem batched = edge(601, 4, 2, 64, {{100, 1}, {300, 3}}, DilatedMode::longnet, false);
  batched.batch = 3;
  std::vector<kernels::DilationPattern> sixteen = {{32, 1}};
  for (std::int64_t i = 1; i < 16; ++i) sixteen.push_back({32 + 16 * i, 32});
  const DilatedProblem cases[] = {
      edge(1024, 12, 12, 64, {{64, 1}, {128, 2}, {256, 4}, {512, 6}, {1024, 12}}, DilatedMode::longnet, true),
      batched,
      edge(530, 6, 6, 128, {{128, 1}, {264, 8}}, DilatedMode::longnet, true),  // last segment 2 rows, offsets 0-5
      edge(530, 6, 6, 64, {{128, 1}, {264, 8}}, DilatedMode::longnet, false),
      edge(300, 4, 4, 32, sixteen, DilatedMode::longnet, false),
      edge(300, 4, 4, 64, {{64, 1}, {64, 1}, {128, 2}}, DilatedMode::longnet, true),
      edge(300, 4, 4, 64, {{128, 2}, {64, 1}}, DilatedMode::longnet, true),
  };
  for (const auto& p : cases) {
    Tensor::full({8 << 20}, NAN, DType::f32, kGpu);
    expect_half(p, 51, DType::bf16);
    Tensor::full({8 << 20}, NAN, DType::f32, kGpu);
    expect_half(p, 52, DType::f16);
    if (HasFailure()) return;
  }
}

// The positional encoding's backward fused into the attention's (AttentionBackwardOptions; on
// CUDA applied as the fp32 accumulators are converted) against rotating the plain CUDA
// gradients after with the rotary kernel: every way dK leaves the kernels (accumulated,
// stored by the first LongNet pattern, written directly), head dims through the fused
// conversion (64, 32) and past it (SIMT head dim 6: the rotary kernel after), bf16 (fast
// factors) and f32 (double factors), long positions.
TEST(DilatedAttentionCuda, GradientRotationsMatchRotatingAfter) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  const DilatedProblem cases[] = {
      edge(300, 4, 2, 64, {{64, 1}, {128, 2}}, DilatedMode::longnet, true),      // GQA: accumulated dK
      edge(300, 4, 4, 64, {{64, 1}, {300, 3}}, DilatedMode::longnet, true),      // first pattern stores dK
      edge(256, 4, 4, 32, {{64, 1}, {256, 4}}, DilatedMode::head_groups, false),  // dK written directly
      edge(90, 2, 2, 6, {{30, 1}, {90, 3}}, DilatedMode::longnet, false),         // SIMT, head dim 6
  };
  for (const DilatedProblem& p : cases) {
    for (const DType dtype : {DType::bf16, DType::f32}) {
      for (const auto kind : {kernels::RotaryKind::xpos, kernels::RotaryKind::rope}) {
        SCOPED_TRACE(str(describe(p), " ", dtype_name(dtype), kind == kernels::RotaryKind::xpos ? " xpos" : " rope"));
        const ProblemTensors t = on(random_tensors(p, 9, dtype), kGpu);
        const DilatedAttentionConfig config = config_of(p);
        kernels::RotaryParams q_map, k_map;
        q_map.kind = k_map.kind = kind;
        q_map.position_start = k_map.position_start = 40000;  // angles of 10^4 radians
        q_map.center = k_map.center = 40000.0 + static_cast<double>(p.seq_len) / 2;
        k_map.downscale = true;
        const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
        const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
        AttentionBackwardOptions options;
        options.dq_rotary = &q_map, options.dk_rotary = &k_map;
        const AttentionGradients fused = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        // bf16: the fused map rotates the fp32 sums before their one rounding, the separate
        // pass rotates rounded values and rounds again.
        const double tolerance = dtype == DType::bf16 ? 8e-3 : 1e-6;
        EXPECT_LE(relative_l2_error(fused.dq, rotary_transpose(plain.dq, q_map)), tolerance) << "dq";
        EXPECT_LE(relative_l2_error(fused.dk, rotary_transpose(plain.dk, k_map)), tolerance) << "dk";
        EXPECT_EQ(fused.dv.to_vector<float>(), plain.dv.to_vector<float>()) << "dv";
      }
    }
  }
}

// The gradients written into slices of one fused (B, N, H + 2 Hk, D) gradient (the fused
// qkv projection's), with the rotations, equal new tensors' (deterministic mode: bitwise),
// for accumulated dK and dK written directly by the kernels.
TEST(DilatedAttentionCuda, GradientsAreWrittenIntoStridedTargets) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  const DilatedProblem cases[] = {
      edge(300, 4, 2, 64, {{64, 1}, {128, 2}}, DilatedMode::longnet, true),
      edge(256, 4, 4, 64, {{64, 1}, {256, 4}}, DilatedMode::head_groups, false),  // dK, dV written directly
  };
  for (const DilatedProblem& p : cases) {
    SCOPED_TRACE(describe(p));
    const ProblemTensors t = on(random_tensors(p, 12, DType::bf16), kGpu);
    DilatedAttentionConfig config = config_of(p);
    config.deterministic = true;
    kernels::RotaryParams q_map, k_map;
    k_map.downscale = true;
    AttentionBackwardOptions options;
    options.dq_rotary = &q_map, options.dk_rotary = &k_map;
    const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
    const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
    const std::int64_t H = p.heads, Hk = p.kv_heads;
    const Tensor fused = Tensor::zeros({p.batch, p.seq_len, H + 2 * Hk, p.head_dim}, DType::bf16, kGpu);
    options.dq = fused.slice(2, 0, H), options.dk = fused.slice(2, H, H + Hk);
    options.dv = fused.slice(2, H + Hk, H + 2 * Hk);
    (void)dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
    EXPECT_EQ(options.dq.contiguous().to_vector<float>(), plain.dq.to_vector<float>()) << "dq";
    EXPECT_EQ(options.dk.contiguous().to_vector<float>(), plain.dk.to_vector<float>()) << "dk";
    EXPECT_EQ(options.dv.contiguous().to_vector<float>(), plain.dv.to_vector<float>()) << "dv";
  }
}

// AttentionBackwardOptions::gradient_column_sums on CUDA (a fused qkv projection's bias
// gradient): the conversion of the fp32 accumulators sums what it writes (16-bit
// gradients: GQA and accumulated dK, dK stored by the first LongNet pattern, head dims 64
// and 128, a gradient wider than a CTA's 1024 threads, batches whose 32-row chunks
// straddle two sequences); other paths sum the written gradients after (dK, dV written
// directly, the SIMT kernels, f32). The sums equal the returned gradients' columns summed
// in double and add to what the tensor held; the gradients are a call's without it
// (deterministic mode: bitwise where the conversion is the same kernel); a second call
// gives the same bits.
TEST(DilatedAttentionCuda, GradientColumnSumsAddTheWrittenGradientsColumns) {
  SKIP_WITHOUT_GPU();
  using kernels::DilatedMode;
  DilatedProblem batched = edge(300, 4, 2, 64, {{64, 1}, {128, 2}}, DilatedMode::longnet, true);  // GQA
  batched.batch = 2;
  DilatedProblem wide = edge(200, 2, 2, 128, {{64, 1}, {200, 2}}, DilatedMode::longnet, true);
  wide.batch = 2;
  const DilatedProblem cases[] = {
      batched,
      edge(300, 4, 4, 64, {{64, 1}, {300, 3}}, DilatedMode::longnet, true),       // first pattern stores dK
      wide,                                                                       // 64 rotary pairs
      edge(256, 4, 4, 32, {{64, 1}, {256, 4}}, DilatedMode::head_groups, false),  // dK written directly
      edge(90, 2, 2, 6, {{30, 1}, {90, 3}}, DilatedMode::longnet, false),         // SIMT, head dim 6
      edge(96, 36, 36, 128, {{32, 1}, {96, 2}}, DilatedMode::longnet, true),      // 1152 quads: threads loop
  };
  for (const DilatedProblem& p : cases) {
    for (const DType dtype : {DType::bf16, DType::f16, DType::f32}) {
      for (const bool into_fused : {false, true}) {
        SCOPED_TRACE(str(describe(p), " batch ", p.batch, " ", dtype_name(dtype), into_fused ? " into one fused" : ""));
        const ProblemTensors t = on(random_tensors(p, 21, dtype), kGpu);
        DilatedAttentionConfig config = config_of(p);
        config.deterministic = true;
        kernels::RotaryParams q_map, k_map;
        q_map.position_start = k_map.position_start = 1000;
        k_map.downscale = true;
        AttentionBackwardOptions options;
        // f16 gradients the conversion does not rotate (dK written directly in head-groups
        // mode, the SIMT head dims) would need the rotary kernel after, which takes bf16,
        // f32 and f64.
        const bool rotated_after = p.mode == DilatedMode::head_groups || p.head_dim % 8 != 0;
        if (dtype != DType::f16 || !rotated_after) options.dq_rotary = &q_map, options.dk_rotary = &k_map;
        const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
        const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        const std::int64_t H = p.heads, Hk = p.kv_heads, columns = (H + 2 * Hk) * p.head_dim;
        if (into_fused) {
          const Tensor fused = Tensor::zeros({p.batch, p.seq_len, H + 2 * Hk, p.head_dim}, dtype, kGpu);
          options.dq = fused.slice(2, 0, H), options.dk = fused.slice(2, H, H + Hk);
          options.dv = fused.slice(2, H + Hk, H + 2 * Hk);
        }
        options.gradient_column_sums = Tensor::full({columns}, 0.25, DType::f32, kGpu);
        const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        // The summing conversion rotates with the same factors, its own instructions: at
        // most a last-bit difference in a few 16-bit values.
        const double tolerance = dtype == DType::f32 ? 0.0 : 1e-3;
        EXPECT_LE(relative_l2_error(g.dq, plain.dq), tolerance) << "dq";
        EXPECT_LE(relative_l2_error(g.dk, plain.dk), tolerance) << "dk";
        EXPECT_EQ(g.dv.to_vector<float>(), plain.dv.to_vector<float>()) << "dv";
        const std::vector<double> expected = gradient_column_sums(g.dq, g.dk, g.dv);
        const std::vector<float> actual = options.gradient_column_sums.to_vector<float>();
        ASSERT_EQ(actual.size(), expected.size());
        for (std::size_t c = 0; c < expected.size(); ++c) {
          EXPECT_NEAR(actual[c], 0.25 + expected[c], 1e-4 * (1 + std::abs(expected[c]))) << "column " << c;
        }
        options.gradient_column_sums = Tensor::full({columns}, 0.25, DType::f32, kGpu);
        (void)dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        EXPECT_EQ(options.gradient_column_sums.to_vector<float>(), actual) << "a second call";
      }
    }
  }
}

// The problems the backward's options are tried on: bf16 LongNet causal with grouped kv
// heads and two sequences, bf16 head-groups, f32 (SIMT kernels).
struct OptionCase {
  DilatedProblem problem;
  DType dtype;
};
std::vector<OptionCase> backward_option_cases() {
  using kernels::DilatedMode;
  DilatedProblem batched = edge(300, 4, 2, 64, {{64, 1}, {128, 2}}, DilatedMode::longnet, true);
  batched.batch = 2;
  return {{batched, DType::bf16},
          {edge(256, 4, 4, 64, {{64, 1}, {256, 4}}, DilatedMode::head_groups, false), DType::bf16},
          {edge(90, 2, 2, 6, {{30, 1}, {90, 3}}, DilatedMode::longnet, false), DType::f32}};
}

// A case's inputs (random, from `seed`) on the GPU, its deterministic configuration, the
// forward and the backward without options: what each option is compared with.
struct PlainBackward {
  ProblemTensors t;
  DilatedAttentionConfig config;
  AttentionOutput f;
  AttentionGradients plain;
  // The backward of the same forward with `options`.
  AttentionGradients with(const AttentionBackwardOptions& options) const {
    return dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
  }
};
PlainBackward plain_backward(const OptionCase& c, std::uint64_t seed) {
  PlainBackward r{on(random_tensors(c.problem, seed, c.dtype), kGpu), config_of(c.problem), {}, {}};
  r.config.deterministic = true;
  r.f = dilated_attention_forward(r.config, r.t.q, r.t.k, r.t.v);
  r.plain = dilated_attention_backward(r.config, r.t.q, r.t.k, r.t.v, r.f, r.t.dout);
  return r;
}

// AttentionBackwardOptions::output_deltas on CUDA (bf16 LongNet and head-groups, f32
// SIMT): the given deltas (double, rounded once) give the computed ones' gradients to a
// rounding; zeros change them (they are used).
TEST(DilatedAttentionCuda, GivenOutputDeltasReplaceTheComputedOnes) {
  SKIP_WITHOUT_GPU();
  for (const OptionCase& c : backward_option_cases()) {
    const DilatedProblem& p = c.problem;
    SCOPED_TRACE(str(describe(p), " ", dtype_name(c.dtype)));
    const PlainBackward run = plain_backward(c, 23);
    const AttentionGradients& plain = run.plain;
    AttentionBackwardOptions options;
    options.output_deltas = output_deltas(run.f.out, run.t.dout, DType::f32, kGpu);
    const AttentionGradients given = run.with(options);
    const double tolerance = c.dtype == DType::f32 ? 1e-5 : 4e-3;
    EXPECT_LE(relative_l2_error(given.dq, plain.dq), tolerance) << "dq";
    EXPECT_LE(relative_l2_error(given.dk, plain.dk), tolerance) << "dk";
    EXPECT_EQ(given.dv.to_vector<float>(), plain.dv.to_vector<float>()) << "dv";
    options.output_deltas = Tensor::zeros({p.batch, p.heads, p.seq_len}, DType::f32, kGpu);
    const AttentionGradients zeros = run.with(options);
    EXPECT_GT(relative_l2_error(zeros.dq, plain.dq), 1e-2) << "zero deltas";
  }
}

// AttentionBackwardOptions::dq_accumulator on CUDA (bf16 LongNet causal with grouped kv
// heads, bf16 head-groups, f32 SIMT): a zero-filled accumulator given by the caller gives
// the bits of the call's own (deterministic); one holding ones changes dq by that (it is the
// accumulator used); a wrong dtype is refused by name.
TEST(DilatedAttentionCuda, GivenDqAccumulatorIsTheOneUsed) {
  SKIP_WITHOUT_GPU();
  for (const OptionCase& c : backward_option_cases()) {
    const DilatedProblem& p = c.problem;
    SCOPED_TRACE(str(describe(p), " ", dtype_name(c.dtype)));
    const PlainBackward run = plain_backward(c, 29);
    const AttentionGradients& plain = run.plain;
    AttentionBackwardOptions options;
    options.dq_accumulator = Tensor::zeros(run.t.q.shape(), DType::f32, kGpu);
    const AttentionGradients given = run.with(options);
    EXPECT_EQ(given.dq.to_vector<float>(), plain.dq.to_vector<float>()) << "dq";
    EXPECT_EQ(given.dk.to_vector<float>(), plain.dk.to_vector<float>()) << "dk";
    EXPECT_EQ(given.dv.to_vector<float>(), plain.dv.to_vector<float>()) << "dv";
    options.dq_accumulator = Tensor::full(run.t.q.shape(), 1.0, DType::f32, kGpu);
    const auto offset = run.with(options).dq.to_vector<double>();
    const auto base = plain.dq.to_vector<double>();
    double largest = 0;
    for (std::size_t i = 0; i < base.size(); ++i) largest = std::max(largest, std::fabs(offset[i] - base[i]));
    EXPECT_GT(largest, 0.5) << "an accumulator holding ones";
  }
  const DilatedProblem p = backward_option_cases().front().problem;
  const ProblemTensors t = on(random_tensors(p, 29, DType::bf16), kGpu);
  const AttentionOutput f = dilated_attention_forward(config_of(p), t.q, t.k, t.v);
  AttentionBackwardOptions wrong;
  wrong.dq_accumulator = Tensor::zeros(t.q.shape(), DType::bf16, kGpu);  // not the accumulation dtype
  try {
    (void)dilated_attention_backward(config_of(p), t.q, t.k, t.v, f, t.dout, wrong);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dq_accumulator has shape"), std::string::npos) << e.what();
  }
}

TEST(DilatedAttentionCuda, StridedInputsAreReadInPlace) {
  SKIP_WITHOUT_GPU();
  const DilatedProblem p = edge(300, 4, 2, 64, {{128, 2}, {256, 4}}, kernels::DilatedMode::longnet, true);
  const ProblemTensors host = random_tensors(p, 3, DType::bf16);
  auto strided = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(1), x.size(0), x.size(2), 2 * x.size(3)}, x.dtype(), kGpu);
    Tensor view = big.permute({1, 0, 2, 3}).slice(3, 8, 8 + x.size(3));  // 16-byte aligned rows
    view.copy_from(x);
    return view;
  };
  const ProblemTensors dense = on(host, kGpu);
  const ProblemTensors s{strided(dense.q), strided(dense.k), strided(dense.v), strided(dense.dout)};
  ASSERT_FALSE(s.q.is_contiguous());
  const DilatedAttentionConfig config = config_of(p);
  const Result a = run(config, dense), b = run(config, s);
  EXPECT_EQ(a.forward.out.to_vector<float>(), b.forward.out.to_vector<float>());
  EXPECT_EQ(a.forward.lse.to_vector<float>(), b.forward.lse.to_vector<float>());
  EXPECT_EQ(a.grads.dv.to_vector<float>(), b.grads.dv.to_vector<float>());
  // Misaligned rows fall back to the exact SIMT kernels: same function, float accuracy.
  auto misaligned = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(0), x.size(1), x.size(2), x.size(3) + 1}, x.dtype(), kGpu);
    Tensor view = big.slice(3, 1, 1 + x.size(3));
    view.copy_from(x);
    return view;
  };
  const Result c = run(config, {misaligned(dense.q), misaligned(dense.k), misaligned(dense.v), misaligned(dense.dout)});
  EXPECT_LT(relative_l2_error(c.forward.out, a.forward.out), 1e-2);
}

TEST(DilatedAttentionCuda, DeterministicModeIsBitwiseRepeatable) {
  SKIP_WITHOUT_GPU();
  const DilatedProblem p = edge(2000, 8, 4, 64, {{512, 1}, {1024, 2}, {2000, 4}}, kernels::DilatedMode::longnet, true);
  const ProblemTensors t = on(random_tensors(p, 17, DType::bf16), kGpu);
  const auto [first, atomic] = repeated_then_atomic(config_of(p), t, 3, describe(p));
  EXPECT_LT(relative_l2_error(atomic.grads.dq, first.grads.dq), 1e-2);  // atomics: same values to rounding
}

// Deterministic non-causal launches add dQ in one of two orders (flash_backward_sm90_ws.cuh):
// rotated walks where a sequence's CTAs fit on the GPU at once (up to half the SMs' worth of
// 128-key tiles; DeterministicModeMatchesOracle checks its values), key-tile order past
// that (here one 9,000-row segment: 71 tiles). Both repeat bit for bit and agree with the
// atomic backward to rounding.
TEST(DilatedAttentionCuda, NonCausalDeterministicOrdersAreBitwiseRepeatable) {
  SKIP_WITHOUT_GPU();
  const DilatedProblem problems[] = {
      edge(2000, 8, 4, 64, {{512, 1}, {1024, 2}, {2000, 4}}, kernels::DilatedMode::head_groups, false),
      edge(9000, 2, 2, 64, {{9000, 1}}, kernels::DilatedMode::head_groups, false)};
  for (const DilatedProblem& p : problems) {
    const ProblemTensors t = on(random_tensors(p, 23, DType::bf16), kGpu);
    const auto [first, atomic] = repeated_then_atomic(config_of(p), t, 2, describe(p));
    // A missing key tile's share of dQ would be 1/71 (1.4 %) of it at the least.
    EXPECT_LT(relative_l2_error(atomic.grads.dq, first.grads.dq), 4e-3) << describe(p);
    EXPECT_LT(relative_l2_error(atomic.grads.dk, first.grads.dk), 4e-3) << describe(p);
    EXPECT_LT(relative_l2_error(atomic.grads.dv, first.grads.dv), 4e-3) << describe(p);
  }
}

TEST(DilatedAttentionCuda, FactoryPicksTheDeviceOfTheTensors) {
  SKIP_WITHOUT_GPU();
  const DilatedProblem p = edge(256, 4, 4, 64, {{128, 1}, {256, 2}}, kernels::DilatedMode::longnet, false);
  const ProblemTensors host = random_tensors(p, 5, DType::f32);
  auto attention = make_attention("auto", config_of(p));
  const AttentionOutput gpu = attention->forward(host.q.to(kGpu), host.k.to(kGpu), host.v.to(kGpu));
  EXPECT_EQ(gpu.out.device(), kGpu);
  const AttentionOutput cpu = dilated_attention_forward(config_of(p), host.q, host.k, host.v);
  EXPECT_LT(relative_l2_error(gpu.out, cpu.out), 1e-5);
  EXPECT_THROW(make_attention("cuda", config_of(p))->forward(host.q, host.k, host.v), Error);
}

}  // namespace
}  // namespace longnet::testing
