// Block-sparse attention on the CPU against the fp64 oracle (DESIGN 2.5): seeded random
// masks and problems (per-head and shared masks, causal, bands, GQA, any N and block
// sizes), every generator, the edge cases (rows without keys, all blocks, one block, N
// not a multiple of the block size, blocks larger than N), fp64 finite differences, the
// cross-check against dilated attention, strided and half-precision inputs, determinism,
// the operator, the factory and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "attention/block_sparse_oracle.hpp"
#include "longnet/attention/block_sparse_attention.hpp"
#include "longnet/core/parallel.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

struct Outcome {
  AttentionOutput forward;
  AttentionGradients grads;
};

Outcome run(const BlockMask& mask, const BlockSparseTensors& t, double scale) {
  Outcome r;
  const BlockSparseOptions options{scale, false};
  r.forward = block_sparse_attention_forward(mask, t.q, t.k, t.v, options);
  r.grads = block_sparse_attention_backward(mask, t.q, t.k, t.v, r.forward, t.dout, options);
  return r;
}

// DESIGN 5's fp32 rule: relative L2 <= 1e-5, or at most twice the naive float32
// computation's error (ill-conditioned rows). Returns whether the fallback was needed.
bool expect_fp32_accuracy(const BlockSparseProblem& p, const BlockMask& mask, const BlockSparseTensors& t) {
  const Outcome r = run(mask, t, p.scale);
  const BlockSparseReference o = block_sparse_reference(mask, p.scale, t.q, t.k, t.v, t.dout);
  const BlockSparseReference naive = block_sparse_reference(mask, p.scale, t.q, t.k, t.v, t.dout, DType::f32);
  bool fallback = false;
  auto check = [&](const Tensor& actual, const Tensor& naive_result, const Tensor& expected, const char* name) {
    const double error = relative_l2_error(actual, expected);
    if (error <= 1e-5) return;
    fallback = true;
    EXPECT_LE(error, 2 * relative_l2_error(naive_result, expected)) << name << " " << describe(p, mask);
  };
  check(r.forward.out, naive.out, o.out, "out");
  check(r.forward.lse, naive.lse, o.lse, "lse");
  check(r.grads.dq, naive.dq, o.dq, "dq");
  check(r.grads.dk, naive.dk, o.dk, "dk");
  check(r.grads.dv, naive.dv, o.dv, "dv");
  return fallback;
}

BlockSparseProblem random_problem(std::mt19937_64& rng) {
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  BlockSparseProblem p;
  p.batch = uniform(1, 2);
  p.seq_len = uniform(0, 3) == 0 ? uniform(1, 20) : uniform(1, 220);
  p.kv_heads = uniform(1, 2);
  p.heads = p.kv_heads * uniform(1, 3);
  p.head_dim = uniform(0, 2) == 0 ? uniform(1, 9) : 8 * uniform(1, 8);  // the AVX2 tile needs D % 8 == 0
  p.scale = std::uniform_real_distribution<double>(0.2, 2.0)(rng) / std::sqrt(static_cast<double>(p.head_dim));
  return p;
}

TEST(BlockSparseCpu, MatchesOracleOnRandomMasks) {
  std::mt19937_64 rng(2024);
  int fallbacks = 0;
  const int configurations = 80;
  for (int c = 0; c < configurations; ++c) {
    const BlockSparseProblem p = random_problem(rng);
    const std::int64_t Bq = std::uniform_int_distribution<std::int64_t>(1, 80)(rng);
    const std::int64_t Bk = std::uniform_int_distribution<std::int64_t>(1, 150)(rng);
    const BlockMask mask = random_block_mask(rng, p.seq_len, p.heads, Bq, Bk);
    SCOPED_TRACE(describe(p, mask));
    fallbacks += expect_fp32_accuracy(p, mask, random_block_sparse_tensors(p, static_cast<std::uint64_t>(c)));
    if (HasFailure()) return;
  }
  EXPECT_LE(fallbacks, configurations / 10);
  std::cout << fallbacks << " of " << configurations << " configurations needed the 2x-naive-float32 rule\n";
}

TEST(BlockSparseCpu, Float64IsExactToRounding) {
  std::mt19937_64 rng(77);
  for (int c = 0; c < 25; ++c) {
    BlockSparseProblem p = random_problem(rng);
    p.seq_len = std::min<std::int64_t>(p.seq_len, 150);
    const BlockMask mask =
        random_block_mask(rng, p.seq_len, p.heads, std::uniform_int_distribution<std::int64_t>(1, 40)(rng),
                          std::uniform_int_distribution<std::int64_t>(1, 40)(rng));
    const BlockSparseTensors t = random_block_sparse_tensors(p, 100 + static_cast<std::uint64_t>(c), DType::f64);
    const Outcome r = run(mask, t, p.scale);
    const BlockSparseReference o = block_sparse_reference(mask, p.scale, t.q, t.k, t.v, t.dout);
    EXPECT_LE(relative_l2_error(r.forward.out, o.out), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(r.forward.lse, o.lse), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(r.grads.dq, o.dq), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(r.grads.dk, o.dk), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(r.grads.dv, o.dv), 1e-12) << describe(p, mask);
  }
}

BlockSparseProblem problem(std::int64_t N, std::int64_t H, std::int64_t Hk, std::int64_t D) {
  return {1, N, H, Hk, D, 1.0 / std::sqrt(static_cast<double>(D))};
}

TEST(BlockSparseCpu, EveryGeneratorMatchesOracle) {
  for (const bool causal : {false, true}) {
    const BlockGrid grid{333, 32, 32, causal};
    const BlockGrid uneven{333, 48, 16, causal};
    const std::pair<const char*, BlockMask> masks[] = {
        {"local", local_window_blocks(grid, 1)},
        {"local 48x16", local_window_blocks(uneven, 2)},
        {"sliding window", sliding_window_blocks(grid, 45, 7)},
        {"dilated per head", dilated_blocks(grid, {4, 2}, 4)},
        {"global", global_blocks(uneven, {0, 200})},
        {"random per head", random_blocks(grid, 3, 5, 4)},
        {"hierarchical", hierarchical_blocks(grid, {{2, 1}, {8, 4}}, 4)},
        {"union", union_of({local_window_blocks(uneven, 1), global_blocks(uneven, {5}), random_blocks(uneven, 2, 1)})},
        {"list",
         BlockMask::from_lists(grid, {std::vector<std::vector<std::int64_t>>(11, std::vector<std::int64_t>{3, 7})})},
    };
    for (const auto& [name, mask] : masks) {
      SCOPED_TRACE(str(name, causal ? " causal" : ""));
      const BlockSparseProblem p = problem(333, 4, 2, 16);
      expect_fp32_accuracy(p, mask, random_block_sparse_tensors(p, 7));
    }
  }
}

TEST(BlockSparseCpu, EdgeCases) {
  struct Case {
    const char* name;
    BlockSparseProblem problem;
    BlockMask mask;
  };
  const BlockMask::Lists empty_rows{{{}, {0, 1}, {}, {2}}};  // query blocks 0 and 2 attend to nothing
  const Case cases[] = {
      {"rows with no keys", problem(100, 2, 2, 8), BlockMask::from_lists({100, 32, 32, false}, empty_rows)},
      {"no keys at all", problem(50, 2, 1, 8), BlockMask::from_lists({50, 16, 16, false}, {{{}, {}, {}, {}}})},
      {"all blocks", problem(150, 2, 2, 16), BlockMask::dense({150, 32, 32, false})},
      {"all blocks causal", problem(150, 2, 2, 16), BlockMask::dense({150, 32, 64, true})},
      {"a single block", problem(30, 1, 1, 8), BlockMask::from_lists({30, 64, 64, false}, {{{0}}})},
      {"a single block causal", problem(30, 3, 1, 8), BlockMask::dense({30, 64, 64, true})},
      {"N not a multiple", problem(97, 2, 1, 24), local_window_blocks({97, 16, 24, true}, 1)},
      {"blocks of one position", problem(40, 2, 2, 8), random_blocks({40, 1, 1, true}, 5, 3)},
      {"per-head masks with GQA", problem(120, 6, 2, 32), random_blocks({120, 16, 16, false}, 2, 8, 6)},
      {"causal partial blocks", problem(130, 2, 2, 16), sliding_window_blocks({130, 32, 16, true}, 20, 0)},
      {"N = 1", problem(1, 2, 1, 8), BlockMask::dense({1, 64, 64, true})},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    expect_fp32_accuracy(c.problem, c.mask, random_block_sparse_tensors(c.problem, 11));
  }
}

TEST(BlockSparseCpu, RowsWithNoKeysGiveZeroAndMinusInfinity) {
  const BlockSparseProblem p = problem(100, 2, 2, 8);
  const BlockMask mask = BlockMask::from_lists({100, 32, 32, false}, {{{}, {0, 1}, {}, {2}}});
  const BlockSparseTensors t = random_block_sparse_tensors(p, 3);
  const Outcome r = run(mask, t, p.scale);
  const auto lse = r.forward.lse.to_vector<float>();
  const auto out = r.forward.out.to_vector<float>();
  const auto dq = r.grads.dq.to_vector<float>();
  for (std::int64_t h = 0; h < 2; ++h) {
    for (std::int64_t n = 0; n < 100; ++n) {
      const bool empty = n / 32 == 0 || n / 32 == 2;
      EXPECT_EQ(std::isinf(lse[static_cast<std::size_t>(h * 100 + n)]), empty) << n;
      for (std::int64_t d = 0; d < 8 && empty; ++d) {
        EXPECT_EQ(out[static_cast<std::size_t>((n * 2 + h) * 8 + d)], 0.0f);
        EXPECT_EQ(dq[static_cast<std::size_t>((n * 2 + h) * 8 + d)], 0.0f);
      }
    }
  }
}

// fp64 finite differences of the operator's own forward against its backward.
TEST(BlockSparseCpu, Float64GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(404);
  for (int c = 0; c < 8; ++c) {
    BlockSparseProblem p;
    p.seq_len = std::uniform_int_distribution<std::int64_t>(1, 9)(rng);
    p.kv_heads = std::uniform_int_distribution<std::int64_t>(1, 2)(rng);
    p.heads = p.kv_heads * std::uniform_int_distribution<std::int64_t>(1, 2)(rng);
    p.head_dim = std::uniform_int_distribution<std::int64_t>(1, 3)(rng);
    p.scale = 0.7;
    const BlockMask mask =
        random_block_mask(rng, p.seq_len, p.heads, std::uniform_int_distribution<std::int64_t>(1, 5)(rng),
                          std::uniform_int_distribution<std::int64_t>(1, 5)(rng));
    BlockSparseTensors t = random_block_sparse_tensors(p, 500 + static_cast<std::uint64_t>(c), DType::f64);
    const Outcome r = run(mask, t, p.scale);
    const auto weights = t.dout.to_vector<double>();
    auto loss = [&] {
      const auto out = block_sparse_attention_forward(mask, t.q, t.k, t.v, {p.scale, false}).out.to_vector<double>();
      double total = 0;
      for (std::size_t i = 0; i < out.size(); ++i) total += out[i] * weights[i];
      return total;
    };
    for (auto [tensor, grad] :
         {std::pair{&t.q, &r.grads.dq}, std::pair{&t.k, &r.grads.dk}, std::pair{&t.v, &r.grads.dv}}) {
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
        ASSERT_NEAR(analytic[static_cast<std::size_t>(i)], numeric, 1e-6 * (1 + std::fabs(numeric)))
            << describe(p, mask);
      }
    }
  }
}

// A block mask that encodes a dilated pattern computes the dilated attention.
TEST(BlockSparseCpu, BlockMaskOfADilatedPatternGivesTheDilatedResult) {
  const std::int64_t N = 300, H = 4, D = 16;
  const BlockSparseProblem p = problem(N, H, 2, D);
  const BlockSparseTensors t = random_block_sparse_tensors(p, 21);
  for (const bool causal : {false, true}) {
    // (w, r) = (96, 1): segments of 96 positions = 3 key blocks of 32, dense inside.
    DilatedAttentionConfig dilated;
    dilated.segment_lengths = {96};
    dilated.dilation_rates = {1};
    dilated.causal = causal;
    dilated.scale = p.scale;
    const BlockMask segments = dilated_blocks({N, 32, 32, causal}, {3, 1});
    const AttentionOutput a = dilated_attention_forward(dilated, t.q, t.k, t.v);
    const Outcome b = run(segments, t, p.scale);
    EXPECT_LT(relative_l2_error(b.forward.out, a.out), 1e-5);
    EXPECT_LT(relative_l2_error(b.forward.lse, a.lse), 1e-5);
    const AttentionGradients ga = dilated_attention_backward(dilated, t.q, t.k, t.v, a, t.dout);
    EXPECT_LT(relative_l2_error(b.grads.dq, ga.dq), 1e-5);
    EXPECT_LT(relative_l2_error(b.grads.dk, ga.dk), 1e-5);
    EXPECT_LT(relative_l2_error(b.grads.dv, ga.dv), 1e-5);

    // (w, r) = (64, 4) in LongNet mode: the segment's blocks, partial, with a predicate
    // that keeps the head's residue class (offset floor(h / ceil(H / r)) = h here).
    dilated.segment_lengths = {64};
    dilated.dilation_rates = {4};
    BlockMask::Lists lists(1);
    const BlockGrid grid{N, 16, 16, causal};
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      lists[0].emplace_back();
      for (std::int64_t j = i / 4 * 4; j < std::min(i / 4 * 4 + 4, grid.key_blocks()); ++j)
        lists[0].back().push_back(j);
    }
    ElementMask residue;
    residue.predicate = [](std::int64_t h, std::int64_t q, std::int64_t k) {
      return (q % 64) % 4 == kernels::longnet_offset(h, 4, 4) && (k % 64) % 4 == kernels::longnet_offset(h, 4, 4);
    };
    const BlockMask dilated_mask = BlockMask::from_lists(grid, lists, residue);
    const AttentionOutput c = dilated_attention_forward(dilated, t.q, t.k, t.v);
    const Outcome d = run(dilated_mask, t, p.scale);
    EXPECT_LT(relative_l2_error(d.forward.out, c.out), 1e-5);
    EXPECT_LT(relative_l2_error(d.forward.lse, c.lse), 1e-5);
    const AttentionGradients gc = dilated_attention_backward(dilated, t.q, t.k, t.v, c, t.dout);
    EXPECT_LT(relative_l2_error(d.grads.dq, gc.dq), 1e-5);
    EXPECT_LT(relative_l2_error(d.grads.dk, gc.dk), 1e-5);
    EXPECT_LT(relative_l2_error(d.grads.dv, gc.dv), 1e-5);
  }
}

TEST(BlockSparseCpu, StridedAndHalfPrecisionInputs) {
  const BlockSparseProblem p = problem(140, 4, 2, 16);
  const BlockMask mask =
      union_of({local_window_blocks({140, 32, 32, true}, 1), global_blocks({140, 32, 32, true}, {0})});
  const BlockSparseTensors t = random_block_sparse_tensors(p, 9);
  auto strided = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(1), x.size(0), x.size(2), 2 * x.size(3)}, x.dtype());
    Tensor view = big.permute({1, 0, 2, 3}).slice(3, 1, 1 + x.size(3));
    view.copy_from(x);
    return view;
  };
  const BlockSparseTensors s{strided(t.q), strided(t.k), strided(t.v), strided(t.dout)};
  ASSERT_FALSE(s.q.is_contiguous());
  const Outcome a = run(mask, t, p.scale), b = run(mask, s, p.scale);
  EXPECT_EQ(a.forward.out.to_vector<float>(), b.forward.out.to_vector<float>());
  EXPECT_EQ(a.grads.dq.to_vector<float>(), b.grads.dq.to_vector<float>());
  EXPECT_EQ(a.grads.dk.to_vector<float>(), b.grads.dk.to_vector<float>());
  for (const DType dtype : {DType::bf16, DType::f16}) {
    const BlockSparseTensors h = random_block_sparse_tensors(p, 9, dtype);
    const Outcome r = run(mask, h, p.scale);
    EXPECT_EQ(r.forward.out.dtype(), dtype);
    EXPECT_EQ(r.forward.lse.dtype(), DType::f32);
    EXPECT_EQ(r.grads.dk.dtype(), dtype);
    const BlockSparseReference o = block_sparse_reference(mask, p.scale, h.q, h.k, h.v, h.dout);
    EXPECT_LT(relative_l2_error(r.forward.out, o.out), dtype == DType::bf16 ? 4e-3 : 5e-4);
    EXPECT_LT(relative_l2_error(r.forward.lse, o.lse), 1e-5);
    EXPECT_LT(relative_l2_error(r.grads.dv, o.dv), dtype == DType::bf16 ? 1e-2 : 2e-3);
  }
}

TEST(BlockSparseCpu, ResultsDoNotDependOnTheThreadCount) {
  const BlockSparseProblem p = problem(400, 4, 2, 32);
  const BlockMask mask =
      union_of({local_window_blocks({400, 32, 32, true}, 2), random_blocks({400, 32, 32, true}, 2, 4)});
  const BlockSparseTensors t = random_block_sparse_tensors(p, 41);
  const int saved = num_threads();
  set_num_threads(1);
  const Outcome a = run(mask, t, p.scale);
  set_num_threads(std::max(2, saved));
  const Outcome b = run(mask, t, p.scale);
  set_num_threads(saved);
  EXPECT_EQ(a.forward.out.to_vector<float>(), b.forward.out.to_vector<float>());
  EXPECT_EQ(a.forward.lse.to_vector<float>(), b.forward.lse.to_vector<float>());
  EXPECT_EQ(a.grads.dq.to_vector<float>(), b.grads.dq.to_vector<float>());
  EXPECT_EQ(a.grads.dk.to_vector<float>(), b.grads.dk.to_vector<float>());
  EXPECT_EQ(a.grads.dv.to_vector<float>(), b.grads.dv.to_vector<float>());
}

TEST(BlockSparseCpu, OperatorAndFactory) {
  const BlockSparseProblem p = problem(200, 4, 2, 16);
  const BlockSparseTensors t = random_block_sparse_tensors(p, 3);
  BlockSparseConfig config;
  config.block_q = 32;
  config.block_k = 16;
  config.causal = true;
  config.patterns = {BlockPattern::local_window(1), BlockPattern::random(2, 7, true)};
  config.scale = p.scale;
  auto attention = make_attention("auto", config);
  EXPECT_EQ(attention->name(), "block_sparse/auto");
  EXPECT_THROW(attention->backward(t.dout), Error);
  const AttentionOutput r = attention->forward(t.q, t.k, t.v);
  const AttentionGradients g = attention->backward(t.dout);
  const BlockMask mask = config.mask(200, 4);
  EXPECT_EQ(mask.heads(), 4);
  const Outcome direct = run(mask, t, p.scale);
  EXPECT_EQ(r.out.to_vector<float>(), direct.forward.out.to_vector<float>());
  EXPECT_EQ(g.dk.to_vector<float>(), direct.grads.dk.to_vector<float>());
  // Another length rebuilds the mask.
  const BlockSparseProblem shorter = problem(70, 4, 2, 16);
  const BlockSparseTensors u = random_block_sparse_tensors(shorter, 4);
  EXPECT_EQ(attention->forward(u.q, u.k, u.v).out.size(1), 70);
  // A fixed mask.
  BlockSparseAttention fixed(mask, {p.scale, false});
  EXPECT_EQ(fixed.forward(t.q, t.k, t.v).out.to_vector<float>(), r.out.to_vector<float>());
  EXPECT_THROW(fixed.forward(u.q, u.k, u.v), Error);  // N differs from the mask's
  EXPECT_EQ(make_attention("cpu", config)->forward(t.q, t.k, t.v).out.to_vector<float>(), r.out.to_vector<float>());
  EXPECT_THROW(make_attention("tpu", config), Error);
}

TEST(BlockSparseCpu, FlopCountFollowsDesignRule) {
  // N = 64, blocks of 16, each query block attends to its own block: 4 x 16 x 16 pairs.
  const BlockMask diagonal = local_window_blocks({64, 16, 16, false}, 0);
  EXPECT_DOUBLE_EQ(block_sparse_attention_forward_flops(diagonal, 2, 3, 32), 4.0 * 32 * 2 * 3 * 1024);
  const BlockMask causal = local_window_blocks({64, 16, 16, true}, 0);  // 4 x 16 * 17 / 2
  EXPECT_DOUBLE_EQ(block_sparse_attention_forward_flops(causal, 1, 1, 64), 4.0 * 64 * 4 * 136);
}

TEST(BlockSparseCpu, BadInputIsAnError) {
  const BlockSparseProblem p = problem(64, 4, 2, 16);
  const BlockSparseTensors t = random_block_sparse_tensors(p, 1);
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const BlockMask other_length = local_window_blocks({65, 16, 16, false}, 1);
  EXPECT_NE(message([&] {
              block_sparse_attention_forward(other_length, t.q, t.k, t.v);
            }).find("block mask has seq_len 65 but q has seq_len 64"),
            std::string::npos);
  const BlockMask three_heads = random_blocks({64, 16, 16, false}, 1, 0, 3);
  EXPECT_NE(message([&] { block_sparse_attention_forward(three_heads, t.q, t.k, t.v); }).find("block mask has 3 heads"),
            std::string::npos);
  const BlockMask mask = local_window_blocks({64, 16, 16, false}, 1);
  EXPECT_NE(message([&] { block_sparse_attention_forward(mask, t.q, t.k.to(DType::f64), t.v); }).find("dtype mismatch"),
            std::string::npos);
  EXPECT_THROW(block_sparse_attention_forward(mask, t.q, t.k, t.v, {std::nan(""), false}), Error);
  const AttentionOutput out = block_sparse_attention_forward(mask, t.q, t.k, t.v);
  EXPECT_THROW(block_sparse_attention_backward(mask, t.q, t.k, t.v, out, t.k), Error);  // dout shape
  BlockSparseConfig config;
  config.patterns.clear();
  EXPECT_THROW(config.validate(), Error);
  config.patterns = {BlockPattern::local_window(1)};
  config.block_q = 0;
  EXPECT_THROW(config.validate(), Error);
  EXPECT_THROW(BlockSparseAttention{config}, Error);
  if (!cuda_compiled()) {
    EXPECT_THROW(make_attention("cuda", BlockSparseConfig{}), Error);
  }
}

}  // namespace
}  // namespace longnet::testing
