// The CPU dilated-attention kernel against the fp64 oracle: 200+ seeded random
// configurations (both modes, causal or not, GQA, up to 5 patterns, r up to 16), the edge
// cases of DESIGN 5, strided and half-precision inputs, fp64 finite differences,
// invariants and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/parallel.hpp"
#include "support/dilated_oracle.hpp"
#include "support/random_problems.hpp"

namespace longnet::testing {
namespace {

struct Errors {
  double out = 0, lse = 0, dq = 0, dk = 0, dv = 0;
};

// Relative errors of the kernel against the fp64 oracle; with `naive`, also those of the
// naive float32 computation on the same inputs.
Errors compare_with_oracle(const DilatedProblem& p, const ProblemTensors& t, Errors* naive = nullptr) {
  const DilatedAttentionConfig config = config_of(p);
  const AttentionOutput result = dilated_attention_forward(config, t.q, t.k, t.v);
  const OracleOutput oracle = dilated_oracle_forward(p, t.q, t.k, t.v);
  const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, result, t.dout);
  const OracleGradients og = dilated_oracle_backward(p, t.q, t.k, t.v, t.dout);
  if (naive) {
    const OracleOutput nf = dilated_naive_float_forward(p, t.q, t.k, t.v);
    const OracleGradients ng = dilated_naive_float_backward(p, t.q, t.k, t.v, t.dout);
    *naive = {relative_l2_error(nf.out, oracle.out), relative_l2_error(nf.lse, oracle.lse),
              relative_l2_error(ng.dq, og.dq), relative_l2_error(ng.dk, og.dk), relative_l2_error(ng.dv, og.dv)};
  }
  return {relative_l2_error(result.out, oracle.out), relative_l2_error(result.lse, oracle.lse),
          relative_l2_error(g.dq, og.dq), relative_l2_error(g.dk, og.dk), relative_l2_error(g.dv, og.dv)};
}

void expect_within(const Errors& e, double tolerance, const std::string& what) {
  EXPECT_LE(e.out, tolerance) << "out " << what;
  EXPECT_LE(e.lse, tolerance) << "lse " << what;
  EXPECT_LE(e.dq, tolerance) << "dq " << what;
  EXPECT_LE(e.dk, tolerance) << "dk " << what;
  EXPECT_LE(e.dv, tolerance) << "dv " << what;
}

// DESIGN 5's fp32 rule, relative L2 <= 1e-5, with FlashAttention's rule as the fallback
// for inputs where no float32 algorithm reaches 1e-5: at most twice the naive float32
// computation's error. Returns whether the fallback was needed.
bool expect_fp32_accuracy(const DilatedProblem& p, const ProblemTensors& t, const std::string& what) {
  Errors naive;
  const Errors e = compare_with_oracle(p, t, &naive);
  bool fallback = false;
  auto check = [&](double error, double naive_error, const char* name) {
    if (error <= 1e-5) return;
    fallback = true;
    EXPECT_LE(error, 2 * naive_error) << name << ": " << error << " > 1e-5 and > 2x naive float32 (" << naive_error
                                      << ") for " << what;
  };
  check(e.out, naive.out, "out");
  check(e.lse, naive.lse, "lse");
  check(e.dq, naive.dq, "dq");
  check(e.dk, naive.dk, "dk");
  check(e.dv, naive.dv, "dv");
  return fallback;
}

// fp32 inputs: the kernel's result must be within 1e-5 relative L2 of the fp64 oracle
// evaluated on the same (fp32-representable) inputs.
TEST(DilatedAttentionCpu, MatchesOracleOnRandomConfigurations) {
  int fallbacks = 0;
  const int configurations = 210;
  for (std::uint64_t seed = 1000; seed < 1000 + configurations; ++seed) {
    const DilatedProblem p = random_problem(seed);
    SCOPED_TRACE(describe(p));
    fallbacks += expect_fp32_accuracy(p, random_tensors(p, seed), describe(p));
    if (HasFailure()) return;
  }
  // The fallback is for rare ill-conditioned inputs, not the norm.
  EXPECT_LE(fallbacks, configurations / 10);
  std::cout << fallbacks << " of " << configurations
            << " configurations needed the 2x-naive-float32 rule (the rest are within 1e-5)\n";
}

TEST(DilatedAttentionCpu, Float64IsExactToRounding) {
  for (std::uint64_t seed = 2000; seed < 2030; ++seed) {
    ProblemLimits limits;
    limits.max_seq_len = 200;
    const DilatedProblem p = random_problem(seed, limits);
    expect_within(compare_with_oracle(p, random_tensors(p, seed, DType::f64)), 1e-12, describe(p));
  }
}

DilatedProblem edge_problem(std::int64_t N, std::int64_t H, std::int64_t Hk,
                            std::vector<kernels::DilationPattern> patterns, kernels::DilatedMode mode, bool causal) {
  DilatedProblem p;
  p.batch = 1;
  p.seq_len = N;
  p.heads = H;
  p.kv_heads = Hk;
  p.head_dim = 8;
  p.patterns = std::move(patterns);
  p.mode = mode;
  p.causal = causal;
  p.scale = 1.0 / std::sqrt(8.0);
  return p;
}

TEST(DilatedAttentionCpu, EdgeCasesOfDesignSection5) {
  using kernels::DilatedMode;
  struct Case {
    const char* name;
    DilatedProblem problem;
  };
  const Case cases[] = {
      {"N < w", edge_problem(50, 4, 4, {{64, 2}, {128, 4}}, DilatedMode::longnet, false)},
      {"N not a multiple of anything",
       edge_problem(101, 4, 2, {{16, 2}, {33, 3}, {64, 8}}, DilatedMode::longnet, true)},
      {"w not a multiple of r", edge_problem(97, 6, 3, {{10, 3}, {21, 4}}, DilatedMode::longnet, false)},
      {"r > H", edge_problem(120, 3, 3, {{40, 8}, {120, 16}}, DilatedMode::longnet, true)},
      {"H not a multiple of r", edge_problem(90, 5, 5, {{30, 3}, {45, 2}}, DilatedMode::longnet, false)},
      {"H not a multiple of G", edge_problem(80, 5, 1, {{16, 1}, {32, 2}, {64, 4}}, DilatedMode::head_groups, true)},
      {"Hk < H", edge_problem(64, 8, 2, {{16, 1}, {32, 2}}, DilatedMode::longnet, false)},
      {"causal at position 0", edge_problem(1, 2, 1, {{1, 1}}, DilatedMode::longnet, true)},
      {"rows with no keys", edge_problem(40, 2, 2, {{8, 4}}, DilatedMode::longnet, false)},
      {"rows with no keys, head groups", edge_problem(40, 2, 2, {{8, 4}, {16, 8}}, DilatedMode::head_groups, true)},
      {"N = 1", edge_problem(1, 3, 1, {{4, 2}, {1, 1}}, DilatedMode::longnet, false)},
      {"w = 1", edge_problem(30, 2, 2, {{1, 1}}, DilatedMode::longnet, true)},
      {"r = w", edge_problem(30, 4, 4, {{6, 6}}, DilatedMode::head_groups, false)},
      {"repeated pattern", edge_problem(48, 2, 2, {{16, 2}, {16, 2}}, DilatedMode::longnet, false)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const ProblemTensors t = random_tensors(c.problem, 77);
    expect_fp32_accuracy(c.problem, t, c.name);
  }
}

TEST(DilatedAttentionCpu, RowsWithNoKeysGiveZeroAndMinusInfinity) {
  // One pattern (8, 4) with two heads: offsets 0 and 1, so rows with t mod 4 in {2, 3} have no keys.
  const DilatedProblem p = edge_problem(16, 2, 2, {{8, 4}}, kernels::DilatedMode::longnet, false);
  const ProblemTensors t = random_tensors(p, 5);
  const AttentionOutput r = dilated_attention_forward(config_of(p), t.q, t.k, t.v);
  const auto lse = r.lse.to_vector<float>();
  const auto out = r.out.to_vector<float>();
  for (std::int64_t h = 0; h < 2; ++h) {
    for (std::int64_t n = 0; n < 16; ++n) {
      const bool active = (n % 8) % 4 == h;
      EXPECT_EQ(std::isinf(lse[static_cast<std::size_t>(h * 16 + n)]), !active) << "h=" << h << " n=" << n;
      if (!active) {
        EXPECT_LT(lse[static_cast<std::size_t>(h * 16 + n)], 0);
        for (std::int64_t d = 0; d < 8; ++d) EXPECT_EQ(out[static_cast<std::size_t>((n * 2 + h) * 8 + d)], 0.0f);
      }
    }
  }
}

TEST(DilatedAttentionCpu, StridedInputsAreReadInPlace) {
  const DilatedProblem p = edge_problem(70, 4, 2, {{16, 2}, {32, 4}}, kernels::DilatedMode::longnet, true);
  const ProblemTensors t = random_tensors(p, 9);
  // Embed q, k, v in larger tensors with a different layout: (N, B, H, 2D) then view.
  auto strided = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(1), x.size(0), x.size(2), 2 * x.size(3)}, x.dtype());
    Tensor view = big.permute({1, 0, 2, 3}).slice(3, 1, 1 + x.size(3));
    view.copy_from(x);
    return view;
  };
  const ProblemTensors s{strided(t.q), strided(t.k), strided(t.v), strided(t.dout)};
  ASSERT_FALSE(s.q.is_contiguous());
  const DilatedAttentionConfig config = config_of(p);
  const AttentionOutput a = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionOutput b = dilated_attention_forward(config, s.q, s.k, s.v);
  EXPECT_EQ(a.out.to_vector<float>(), b.out.to_vector<float>());
  const AttentionGradients ga = dilated_attention_backward(config, t.q, t.k, t.v, a, t.dout);
  const AttentionGradients gb = dilated_attention_backward(config, s.q, s.k, s.v, b, s.dout);
  EXPECT_EQ(ga.dk.to_vector<float>(), gb.dk.to_vector<float>());
  // A head_dim axis with a stride is copied, with the same result.
  const Tensor q_transposed_storage = t.q.permute({0, 1, 3, 2}).contiguous().permute({0, 1, 3, 2});
  ASSERT_NE(q_transposed_storage.stride(3), 1);
  EXPECT_EQ(dilated_attention_forward(config, q_transposed_storage, t.k, t.v).out.to_vector<float>(),
            a.out.to_vector<float>());
}

TEST(DilatedAttentionCpu, HalfPrecisionInputsComputeInFloat32) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    const DilatedProblem p = edge_problem(90, 4, 2, {{32, 1}, {64, 2}, {90, 4}}, kernels::DilatedMode::longnet, true);
    const ProblemTensors t = random_tensors(p, 13, dtype);
    const AttentionOutput r = dilated_attention_forward(config_of(p), t.q, t.k, t.v);
    EXPECT_EQ(r.out.dtype(), dtype);
    EXPECT_EQ(r.lse.dtype(), DType::f32);
    const OracleOutput o = dilated_oracle_forward(p, t.q, t.k, t.v);
    // The oracle sees the same rounded inputs, so only the output rounding remains.
    EXPECT_LT(relative_l2_error(r.out, o.out), dtype == DType::bf16 ? 4e-3 : 5e-4);
    EXPECT_LT(relative_l2_error(r.lse, o.lse), 1e-5);
    const AttentionGradients g = dilated_attention_backward(config_of(p), t.q, t.k, t.v, r, t.dout);
    EXPECT_EQ(g.dq.dtype(), dtype);
    const OracleGradients og = dilated_oracle_backward(p, t.q, t.k, t.v, t.dout);
    EXPECT_LT(relative_l2_error(g.dv, og.dv), dtype == DType::bf16 ? 1e-2 : 2e-3);
  }
}

// fp64 finite differences of the kernel's own forward against its backward.
TEST(DilatedAttentionCpu, Float64GradientsMatchFiniteDifferences) {
  ProblemLimits tiny;
  tiny.max_seq_len = 10;
  tiny.max_heads = 4;
  tiny.max_head_dim = 3;
  tiny.max_patterns = 3;
  tiny.max_rate = 4;
  for (std::uint64_t seed = 300; seed < 315; ++seed) {
    const DilatedProblem p = random_problem(seed, tiny);
    const DilatedAttentionConfig config = config_of(p);
    ProblemTensors t = random_tensors(p, seed, DType::f64);
    const AttentionOutput fwd = dilated_attention_forward(config, t.q, t.k, t.v);
    const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, fwd, t.dout);
    const auto weights = t.dout.to_vector<double>();
    auto loss = [&] {
      const auto out = dilated_attention_forward(config, t.q, t.k, t.v).out.to_vector<double>();
      double total = 0;
      for (std::size_t i = 0; i < out.size(); ++i) total += out[i] * weights[i];
      return total;
    };
    for (auto [tensor, grad] : {std::pair{&t.q, &g.dq}, std::pair{&t.k, &g.dk}, std::pair{&t.v, &g.dv}}) {
      double* x = tensor->data<double>();
      const auto analytic = grad->to_vector<double>();
      for (std::int64_t i = 0; i < tensor->numel(); ++i) {
        const double saved = x[i];
        x[i] = saved + 1e-6;
        const double up = loss();
        x[i] = saved - 1e-6;
        const double down = loss();
        x[i] = saved;
        const double numeric = (up - down) / 2e-6;
        ASSERT_NEAR(analytic[static_cast<std::size_t>(i)], numeric, 1e-6 * (1 + std::fabs(numeric))) << describe(p);
      }
    }
  }
}

TEST(DilatedAttentionCpu, SinglePatternOverTheSequenceEqualsDense) {
  for (auto mode : {kernels::DilatedMode::longnet, kernels::DilatedMode::head_groups}) {
    DilatedProblem p = edge_problem(75, 4, 2, {{75, 1}}, mode, true);
    const ProblemTensors t = random_tensors(p, 21);
    DilatedAttentionConfig dense = DilatedAttentionConfig::dense(true);
    dense.scale = p.scale;
    const AttentionOutput a = dilated_attention_forward(config_of(p), t.q, t.k, t.v);
    const AttentionOutput b = dilated_attention_forward(dense, t.q, t.k, t.v);
    EXPECT_LT(relative_l2_error(a.out, b.out), 1e-6);
    expect_fp32_accuracy(p, t, "dense");
  }
}

TEST(DilatedAttentionCpu, PermutingTheBatchPermutesTheOutputs) {
  DilatedProblem p = edge_problem(50, 4, 4, {{16, 2}, {50, 4}}, kernels::DilatedMode::longnet, false);
  p.batch = 3;
  const ProblemTensors t = random_tensors(p, 31);
  const std::vector<int> order = {2, 0, 1};
  auto permute = [&](const Tensor& x) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    for (int b = 0; b < 3; ++b) y.select(0, b).copy_from(x.select(0, order[static_cast<std::size_t>(b)]));
    return y;
  };
  const DilatedAttentionConfig config = config_of(p);
  const AttentionOutput a = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionOutput b = dilated_attention_forward(config, permute(t.q), permute(t.k), permute(t.v));
  EXPECT_EQ(permute(a.out).to_vector<float>(), b.out.to_vector<float>());
}

TEST(DilatedAttentionCpu, ResultsDoNotDependOnTheThreadCount) {
  const DilatedProblem p = edge_problem(300, 4, 2, {{64, 1}, {128, 2}, {256, 4}}, kernels::DilatedMode::longnet, true);
  const ProblemTensors t = random_tensors(p, 41);
  const DilatedAttentionConfig config = config_of(p);
  const int saved = num_threads();
  set_num_threads(1);
  const AttentionOutput a = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients ga = dilated_attention_backward(config, t.q, t.k, t.v, a, t.dout);
  set_num_threads(std::max(2, saved));
  const AttentionOutput b = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients gb = dilated_attention_backward(config, t.q, t.k, t.v, b, t.dout);
  set_num_threads(saved);
  EXPECT_EQ(a.out.to_vector<float>(), b.out.to_vector<float>());
  EXPECT_EQ(a.lse.to_vector<float>(), b.lse.to_vector<float>());
  EXPECT_EQ(ga.dq.to_vector<float>(), gb.dq.to_vector<float>());
  EXPECT_EQ(ga.dk.to_vector<float>(), gb.dk.to_vector<float>());
  EXPECT_EQ(ga.dv.to_vector<float>(), gb.dv.to_vector<float>());
}

// The positional encoding's backward fused into the attention's (AttentionBackwardOptions): the
// same as rotating the plain gradients after, bit for bit on the CPU (the same kernel runs
// on the finished gradients), for xPos (keys downscaled) and RoPE; dv untouched; an odd
// head dim is refused.
TEST(DilatedAttentionCpu, GradientRotationsApplyTheTransposedMaps) {
  using kernels::DilatedMode;
  const DilatedProblem problems[] = {
      edge_problem(75, 4, 2, {{16, 1}, {32, 2}, {75, 4}}, DilatedMode::longnet, true),
      edge_problem(60, 4, 4, {{20, 2}, {60, 3}}, DilatedMode::head_groups, false),
  };
  for (const DilatedProblem& p : problems) {
    for (const auto kind : {kernels::RotaryKind::xpos, kernels::RotaryKind::rope}) {
      for (const DType dtype : {DType::f32, DType::f64}) {
        SCOPED_TRACE(str(describe(p), " ", dtype_name(dtype), kind == kernels::RotaryKind::xpos ? " xpos" : " rope"));
        const ProblemTensors t = random_tensors(p, 5, dtype);
        const DilatedAttentionConfig config = config_of(p);
        kernels::RotaryParams q_map, k_map;
        q_map.kind = k_map.kind = kind;
        q_map.scale_base = k_map.scale_base = 64.0;
        q_map.position_start = k_map.position_start = 3;
        q_map.center = k_map.center = 40.0;
        k_map.downscale = true;
        const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
        const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
        AttentionBackwardOptions options;
        options.dq_rotary = &q_map, options.dk_rotary = &k_map;
        const AttentionGradients fused = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        EXPECT_EQ(fused.dq.to_vector<double>(), rotary_transpose(plain.dq, q_map).to_vector<double>());
        EXPECT_EQ(fused.dk.to_vector<double>(), rotary_transpose(plain.dk, k_map).to_vector<double>());
        EXPECT_EQ(fused.dv.to_vector<double>(), plain.dv.to_vector<double>());
        EXPECT_GT(relative_l2_error(fused.dq, plain.dq), 1e-3);  // the map did something
      }
    }
  }
  DilatedProblem odd = edge_problem(20, 2, 2, {{10, 1}}, DilatedMode::longnet, false);
  odd.head_dim = 5;
  const ProblemTensors t = random_tensors(odd, 1);
  const DilatedAttentionConfig config = config_of(odd);
  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  kernels::RotaryParams map;
  AttentionBackwardOptions options;
  options.dq_rotary = &map;
  EXPECT_THROW(
      {
        try {
          (void)dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("head_dim = 5"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
}

// The backward writes into the caller's tensors (AttentionBackwardOptions::dq, dk, dv):
// slices of one fused (B, N, H + 2 Hk, D) gradient, as a fused qkv projection has them;
// the values are those of new tensors; a target of the wrong shape is refused.
TEST(DilatedAttentionCpu, GradientsAreWrittenIntoTheCallersTensors) {
  const DilatedProblem p = edge_problem(40, 4, 2, {{8, 1}, {40, 2}}, kernels::DilatedMode::longnet, true);
  const ProblemTensors t = random_tensors(p, 8);
  const DilatedAttentionConfig config = config_of(p);
  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
  const std::int64_t H = p.heads, Hk = p.kv_heads;
  const Tensor fused = Tensor::zeros({p.batch, p.seq_len, H + 2 * Hk, p.head_dim}, DType::f32);
  AttentionBackwardOptions options;
  options.dq = fused.slice(2, 0, H), options.dk = fused.slice(2, H, H + Hk), options.dv = fused.slice(2, H + Hk, H + 2 * Hk);
  const AttentionGradients into = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
  EXPECT_EQ(into.dq.data(), options.dq.data());
  EXPECT_EQ(into.dv.data(), options.dv.data());
  EXPECT_EQ(options.dq.contiguous().to_vector<float>(), plain.dq.to_vector<float>());
  EXPECT_EQ(options.dk.contiguous().to_vector<float>(), plain.dk.to_vector<float>());
  EXPECT_EQ(options.dv.contiguous().to_vector<float>(), plain.dv.to_vector<float>());
  AttentionBackwardOptions wrong;
  wrong.dk = Tensor::zeros({p.batch, p.seq_len, H, p.head_dim}, DType::f32);  // H heads, not Hk
  EXPECT_THROW((void)dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, wrong), Error);
}

// AttentionBackwardOptions::gradient_column_sums: the column sums of [dq | dk | dv] as
// returned (after the rotary maps), added to what the tensor holds; the gradients are those
// of a call without it, bit for bit; new tensors and slices of one fused gradient; every
// dtype; a tensor of the wrong shape or dtype, or gradients that are not (B N, heads D)
// matrices, are refused by name.
TEST(DilatedAttentionCpu, GradientColumnSumsAddTheReturnedGradientsColumns) {
  using kernels::DilatedMode;
  DilatedProblem batched = edge_problem(45, 4, 2, {{16, 1}, {45, 2}}, DilatedMode::longnet, true);
  batched.batch = 3;
  const DilatedProblem problems[] = {batched,
                                     edge_problem(60, 4, 4, {{20, 2}, {60, 3}}, DilatedMode::head_groups, false)};
  for (const DilatedProblem& p : problems) {
    for (const DType dtype : {DType::f64, DType::f32, DType::bf16}) {
      for (const bool into_fused : {false, true}) {
        SCOPED_TRACE(str(describe(p), " ", dtype_name(dtype), into_fused ? " into one fused gradient" : ""));
        const ProblemTensors t = random_tensors(p, 6, dtype);
        const DilatedAttentionConfig config = config_of(p);
        kernels::RotaryParams q_map, k_map;
        k_map.downscale = true;
        AttentionBackwardOptions options;
        if (dtype != DType::bf16) options.dq_rotary = &q_map, options.dk_rotary = &k_map;  // CPU maps: f32, f64
        const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
        const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        const std::int64_t H = p.heads, Hk = p.kv_heads, columns = (H + 2 * Hk) * p.head_dim;
        if (into_fused) {
          const Tensor fused = Tensor::zeros({p.batch, p.seq_len, H + 2 * Hk, p.head_dim}, dtype);
          options.dq = fused.slice(2, 0, H), options.dk = fused.slice(2, H, H + Hk);
          options.dv = fused.slice(2, H + Hk, H + 2 * Hk);
        }
        const DType sums_dtype = dtype == DType::f64 ? DType::f64 : DType::f32;
        options.gradient_column_sums = Tensor::full({columns}, 0.25, sums_dtype);
        const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
        EXPECT_EQ(g.dq.to_vector<double>(), plain.dq.to_vector<double>());
        EXPECT_EQ(g.dk.to_vector<double>(), plain.dk.to_vector<double>());
        EXPECT_EQ(g.dv.to_vector<double>(), plain.dv.to_vector<double>());
        const std::vector<double> expected = gradient_column_sums(g.dq, g.dk, g.dv);
        const std::vector<double> actual = options.gradient_column_sums.to_vector<double>();
        ASSERT_EQ(actual.size(), expected.size());
        const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
        for (std::size_t c = 0; c < expected.size(); ++c) {
          EXPECT_NEAR(actual[c], 0.25 + expected[c], tolerance * (1 + std::abs(expected[c]))) << "column " << c;
        }
      }
    }
  }
  const DilatedProblem p = problems[0];
  const ProblemTensors t = random_tensors(p, 7);
  const DilatedAttentionConfig config = config_of(p);
  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  const std::int64_t columns = (p.heads + 2 * p.kv_heads) * p.head_dim;
  const auto expect_refused = [&](const AttentionBackwardOptions& options, const std::string& words) {
    try {
      (void)dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
      ADD_FAILURE() << "no error; expected one naming " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  AttentionBackwardOptions wrong;
  wrong.gradient_column_sums = Tensor::zeros({columns - 1}, DType::f32);
  expect_refused(wrong, "gradient_column_sums has shape (" + std::to_string(columns - 1));
  wrong.gradient_column_sums = Tensor::zeros({columns}, DType::f64);  // f32 inputs: f32 sums
  expect_refused(wrong, "gradient_column_sums has shape");
  wrong.gradient_column_sums = Tensor::zeros({columns}, DType::f32);
  const Tensor heads_apart = Tensor::zeros({p.batch, p.seq_len, p.heads, 2 * p.head_dim}, DType::f32);
  wrong.dq = heads_apart.slice(3, 0, p.head_dim);
  expect_refused(wrong, "the dq to write into has strides");
}

// AttentionBackwardOptions::output_deltas: given delta = rowsum(dout * out) (here in
// double, rounded once), the gradients are the computed delta's to rounding; given wrong
// ones, they change (the backward used them); a wrong shape or dtype is refused by name.
TEST(DilatedAttentionCpu, GivenOutputDeltasReplaceTheComputedOnes) {
  using kernels::DilatedMode;
  DilatedProblem batched = edge_problem(45, 4, 2, {{16, 1}, {45, 2}}, DilatedMode::longnet, true);
  batched.batch = 2;
  for (const DilatedProblem& p :
       {batched, edge_problem(60, 4, 4, {{20, 2}, {60, 3}}, DilatedMode::head_groups, false)}) {
    for (const DType dtype : {DType::f64, DType::f32}) {
      SCOPED_TRACE(str(describe(p), " ", dtype_name(dtype)));
      const ProblemTensors t = random_tensors(p, 9, dtype);
      const DilatedAttentionConfig config = config_of(p);
      const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
      const AttentionGradients plain = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
      AttentionBackwardOptions options;
      options.output_deltas = output_deltas(f.out, t.dout, kernels::lse_dtype(dtype), Device::cpu());
      const AttentionGradients given = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
      const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
      EXPECT_LE(relative_l2_error(given.dq, plain.dq), tolerance);
      EXPECT_LE(relative_l2_error(given.dk, plain.dk), tolerance);
      EXPECT_EQ(given.dv.to_vector<double>(), plain.dv.to_vector<double>());  // dV takes no delta
      options.output_deltas = Tensor::zeros({p.batch, p.heads, p.seq_len}, kernels::lse_dtype(dtype));
      const AttentionGradients zeros = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout, options);
      EXPECT_GT(relative_l2_error(zeros.dq, plain.dq), 1e-3);
    }
  }
  const DilatedProblem p = batched;
  const ProblemTensors t = random_tensors(p, 9);
  const AttentionOutput f = dilated_attention_forward(config_of(p), t.q, t.k, t.v);
  AttentionBackwardOptions wrong;
  wrong.output_deltas = Tensor::zeros({p.batch, p.seq_len, p.heads}, DType::f32);  // (B, N, H): transposed
  try {
    (void)dilated_attention_backward(config_of(p), t.q, t.k, t.v, f, t.dout, wrong);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("output_deltas has shape"), std::string::npos) << e.what();
  }
}

TEST(DilatedAttentionCpu, OperatorAndFactory) {
  const DilatedProblem p = edge_problem(40, 2, 2, {{16, 1}, {32, 2}}, kernels::DilatedMode::longnet, false);
  const ProblemTensors t = random_tensors(p, 3);
  auto attention = make_attention("auto", config_of(p));
  EXPECT_EQ(attention->name(), "dilated/auto");
  EXPECT_THROW(attention->backward(t.dout), Error);
  const AttentionOutput r = attention->forward(t.q, t.k, t.v);
  const AttentionGradients g = attention->backward(t.dout);
  const AttentionGradients direct = dilated_attention_backward(config_of(p), t.q, t.k, t.v, r, t.dout);
  EXPECT_EQ(g.dq.to_vector<float>(), direct.dq.to_vector<float>());
  EXPECT_EQ(make_attention("cpu", config_of(p))->forward(t.q, t.k, t.v).out.to_vector<float>(),
            r.out.to_vector<float>());
  EXPECT_THROW(make_attention("tpu", config_of(p)), Error);
}

TEST(DilatedAttentionCpu, FlopCountFollowsDesignRule) {
  DilatedAttentionConfig c;
  c.segment_lengths = {4};
  c.dilation_rates = {1};
  // N = 8, 2 segments of 4 keys each, 2 heads, non-causal: pairs = 2 * 2 * 16 = 64.
  EXPECT_DOUBLE_EQ(dilated_attention_forward_flops(c, 1, 8, 2, 64), 4.0 * 64 * 64);
  c.causal = true;  // 4 * 5 / 2 = 10 pairs per segment
  EXPECT_DOUBLE_EQ(dilated_attention_forward_flops(c, 1, 8, 2, 64), 4.0 * 64 * 40);
}

}  // namespace
}  // namespace longnet::testing
