// Block-sparse attention on CUDA against the fp64 oracle (DESIGN 2.5, 5), with the rules
// of dilated_cuda_test.cpp: exact paths (f32 within 1e-5 or 2x naive float32; f64 within
// 1e-12) and tensor-core paths (bf16/f16: max |error| at most 2x that of the naive
// computation in the same precision plus the rounding tolerance, FlashAttention's rule).
// Seeded random masks (per-head and shared, causal, partial blocks with bands, GQA) with
// GPU block sizes 64 and 128 and odd ones, every generator, head dims 64/128 and 32/96
// (tensor cores, zero-padded tiles) and SIMT ones (f32, head dims not a multiple of 8,
// misaligned rows); the edge cases (rows without keys, all blocks, one block, N not a
// multiple of the block, N smaller than a block, N = 1); deterministic mode bitwise
// repeatable; the operator's cached device lists; the cross-check with dense dilated
// attention. Every test skips itself without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attention/block_sparse_oracle.hpp"
#include "longnet/attention/block_sparse_attention.hpp"
#include "longnet/core/half.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

const Device kGpu = Device::cuda(0);

struct Outcome {
  AttentionOutput forward;
  AttentionGradients grads;
};

BlockSparseTensors on(const BlockSparseTensors& t, Device device) {
  return {t.q.to(device), t.k.to(device), t.v.to(device), t.dout.to(device)};
}

Outcome run(const BlockMask& mask, const BlockSparseTensors& t, double scale, bool deterministic = false) {
  Outcome r;
  const BlockSparseOptions options{scale, deterministic};
  r.forward = block_sparse_attention_forward(mask, t.q, t.k, t.v, options);
  r.grads = block_sparse_attention_backward(mask, t.q, t.k, t.v, r.forward, t.dout, options);
  return r;
}

BlockSparseProblem problem(std::int64_t N, std::int64_t H, std::int64_t Hk, std::int64_t D, std::int64_t B = 1) {
  return {B, N, H, Hk, D, 1.0 / std::sqrt(static_cast<double>(D))};
}

// Exact paths: f32 on the GPU against the oracle, like the CPU kernel.
void expect_exact_float(const BlockSparseProblem& p, const BlockMask& mask, std::uint64_t seed) {
  const BlockSparseTensors host = random_block_sparse_tensors(p, seed, DType::f32);
  const Outcome gpu = run(mask, on(host, kGpu), p.scale);
  const BlockSparseReference o = block_sparse_reference(mask, p.scale, host.q, host.k, host.v, host.dout);
  const BlockSparseReference naive =
      block_sparse_reference(mask, p.scale, host.q, host.k, host.v, host.dout, DType::f32);
  auto check = [&](const Tensor& actual, const Tensor& naive_result, const Tensor& expected, const char* name) {
    const double error = relative_l2_error(actual, expected);
    if (error > 1e-5) {
      EXPECT_LE(error, 2 * relative_l2_error(naive_result, expected)) << name << " f32 " << describe(p, mask);
    }
  };
  check(gpu.forward.out, naive.out, o.out, "out");
  check(gpu.forward.lse, naive.lse, o.lse, "lse");
  check(gpu.grads.dq, naive.dq, o.dq, "dq");
  check(gpu.grads.dk, naive.dk, o.dk, "dk");
  check(gpu.grads.dv, naive.dv, o.dv, "dv");
}

// Tensor-core paths (and bf16/f16 on SIMT): max |error| <= 2 x max |error of the naive
// computation in the same precision| + the rounding tolerance; lse within 1e-5.
void expect_half(const BlockSparseProblem& p, const BlockMask& mask, std::uint64_t seed, DType dtype,
                 bool deterministic = false) {
  const BlockSparseTensors host = random_block_sparse_tensors(p, seed, dtype);
  const Outcome gpu = run(mask, on(host, kGpu), p.scale, deterministic);
  ASSERT_EQ(gpu.forward.out.dtype(), dtype);
  const BlockSparseReference o = block_sparse_reference(mask, p.scale, host.q, host.k, host.v, host.dout);
  const BlockSparseReference naive = block_sparse_reference(mask, p.scale, host.q, host.k, host.v, host.dout, dtype);
  auto check = [&](const Tensor& actual, const Tensor& naive_result, const Tensor& expected, const char* name) {
    const double error = max_abs_error(actual, expected);
    const double naive_error = max_abs_error(naive_result, expected);
    EXPECT_LE(error, 2 * naive_error + rounding_tolerance(expected, dtype))
        << name << " " << dtype_name(dtype) << " max |error| (naive " << naive_error << ", relative L2 "
        << relative_l2_error(actual, expected) << ") " << describe(p, mask);
  };
  check(gpu.forward.out, naive.out, o.out, "out");
  EXPECT_LE(relative_l2_error(gpu.forward.lse, o.lse), 1e-5) << "lse " << describe(p, mask);
  check(gpu.grads.dq, naive.dq, o.dq, "dq");
  check(gpu.grads.dk, naive.dk, o.dk, "dk");
  check(gpu.grads.dv, naive.dv, o.dv, "dv");
}

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

// A random problem and mask for the tensor-core kernels: blocks 64 or 128 (the GPU sizes),
// head dims 64 and 128 and the zero-padded 32 and 96, any N (often not a multiple).
struct RandomCase {
  BlockSparseProblem problem;
  BlockMask mask;
};

RandomCase tensor_core_case(std::mt19937_64& rng) {
  static const std::int64_t dims[] = {64, 128, 32, 96, 64, 128};
  BlockSparseProblem p;
  p.batch = uniform(rng, 1, 2);
  p.seq_len = uniform(rng, 0, 4) == 0 ? uniform(rng, 1, 130) : uniform(rng, 130, 700);
  p.kv_heads = uniform(rng, 1, 2);
  p.heads = p.kv_heads * uniform(rng, 1, 3);
  p.head_dim = dims[uniform(rng, 0, 5)];
  p.scale = (0.5 + 0.1 * static_cast<double>(uniform(rng, 0, 9))) / std::sqrt(static_cast<double>(p.head_dim));
  const std::int64_t Bq = uniform(rng, 0, 1) ? 64 : 128, Bk = uniform(rng, 0, 1) ? 64 : 128;
  return {p, random_block_mask(rng, p.seq_len, p.heads, Bq, Bk)};
}

TEST(BlockSparseCuda, Bf16MatchesOracleOnRandomMasks) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(31);
  for (std::uint64_t c = 0; c < 60; ++c) {
    const RandomCase r = tensor_core_case(rng);
    expect_half(r.problem, r.mask, 100 + c, DType::bf16);
    if (HasFailure()) return;
  }
}

TEST(BlockSparseCuda, F16MatchesOracleOnRandomMasks) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(32);
  for (std::uint64_t c = 0; c < 40; ++c) {
    const RandomCase r = tensor_core_case(rng);
    expect_half(r.problem, r.mask, 200 + c, DType::f16);
    if (HasFailure()) return;
  }
}

TEST(BlockSparseCuda, DeterministicModeMatchesOracle) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(33);
  for (std::uint64_t c = 0; c < 30; ++c) {
    const RandomCase r = tensor_core_case(rng);
    expect_half(r.problem, r.mask, 300 + c, DType::bf16, /*deterministic=*/true);
    if (HasFailure()) return;
  }
}

// The SIMT kernels: f32 with head dims 32, 96, 64 and odd ones, any block size.
TEST(BlockSparseCuda, Float32MatchesOracleOnRandomMasks) {
  SKIP_WITHOUT_GPU();
  static const std::int64_t dims[] = {32, 96, 64, 20, 7, 128};
  std::mt19937_64 rng(34);
  for (std::uint64_t c = 0; c < 40; ++c) {
    BlockSparseProblem p;
    p.batch = uniform(rng, 1, 2);
    p.seq_len = uniform(rng, 1, 300);
    p.kv_heads = uniform(rng, 1, 2);
    p.heads = p.kv_heads * uniform(rng, 1, 3);
    p.head_dim = dims[c % 6];
    p.scale = (0.5 + 0.1 * static_cast<double>(c % 10)) / std::sqrt(static_cast<double>(p.head_dim));
    const bool gpu_sizes = uniform(rng, 0, 1) == 1;
    const std::int64_t Bq = gpu_sizes ? 64 * uniform(rng, 1, 2) : uniform(rng, 1, 90);
    const std::int64_t Bk = gpu_sizes ? 64 * uniform(rng, 1, 2) : uniform(rng, 1, 90);
    const BlockMask mask = random_block_mask(rng, p.seq_len, p.heads, Bq, Bk);
    expect_exact_float(p, mask, 400 + c);
    if (HasFailure()) return;
  }
}

TEST(BlockSparseCuda, Float64IsExactToRounding) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(35);
  for (std::uint64_t c = 0; c < 15; ++c) {
    BlockSparseProblem p = problem(uniform(rng, 1, 200), 2, uniform(rng, 1, 2), 8 * uniform(rng, 1, 8));
    const BlockMask mask = random_block_mask(rng, p.seq_len, p.heads, 64, uniform(rng, 0, 1) ? 64 : 128);
    const BlockSparseTensors host = random_block_sparse_tensors(p, 500 + c, DType::f64);
    const Outcome gpu = run(mask, on(host, kGpu), p.scale);
    const BlockSparseReference o = block_sparse_reference(mask, p.scale, host.q, host.k, host.v, host.dout);
    EXPECT_LE(relative_l2_error(gpu.forward.out, o.out), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(gpu.forward.lse, o.lse), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(gpu.grads.dq, o.dq), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(gpu.grads.dk, o.dk), 1e-12) << describe(p, mask);
    EXPECT_LE(relative_l2_error(gpu.grads.dv, o.dv), 1e-12) << describe(p, mask);
  }
}

// Every generator with the GPU block sizes, causal or not, on both tensor-core head-dim
// tiles and on the SIMT path (f32).
TEST(BlockSparseCuda, EveryGeneratorMatchesOracle) {
  SKIP_WITHOUT_GPU();
  std::uint64_t seed = 600;
  for (const std::int64_t block : {64, 128}) {
    for (const bool causal : {false, true}) {
      const std::int64_t N = 5 * block + 37;  // not a multiple of the block
      const BlockGrid grid{N, block, block, causal};
      const BlockGrid mixed{N, block, 192 - block, causal};  // 64 x 128 or 128 x 64
      const std::pair<const char*, BlockMask> masks[] = {
          {"local", local_window_blocks(grid, 1)},
          {"local mixed blocks", local_window_blocks(mixed, 1)},
          {"sliding window", sliding_window_blocks(grid, 100, 20)},
          {"sliding window causal-style", sliding_window_blocks(mixed, 150, 0)},
          {"dilated shared", dilated_blocks(grid, {4, 2}, 1)},
          {"dilated per head", dilated_blocks(grid, {4, 2}, 4)},
          {"global", global_blocks(mixed, {0, 3 * block + 5})},
          {"random per head", random_blocks(grid, 2, 5, 4)},
          {"hierarchical", hierarchical_blocks(grid, {{2, 1}, {6, 3}}, 4)},
          {"union", union_of({local_window_blocks(grid, 0), global_blocks(grid, {7}), random_blocks(grid, 1, 9)})},
          {"list", BlockMask::from_lists(
                       grid, {std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(grid.query_blocks()),
                                                                     std::vector<std::int64_t>{0, 3})})},
      };
      for (const auto& [name, mask] : masks) {
        SCOPED_TRACE(str(name, " block ", block, causal ? " causal" : ""));
        expect_half(problem(N, 4, 2, 64), mask, ++seed, DType::bf16);
        expect_half(problem(N, 4, 4, 128), mask, ++seed, DType::f16);
        expect_exact_float(problem(N, 4, 2, 32), mask, ++seed);
        if (HasFailure()) return;
      }
    }
  }
}

TEST(BlockSparseCuda, EdgeCases) {
  SKIP_WITHOUT_GPU();
  struct Case {
    const char* name;
    BlockSparseProblem problem;
    BlockMask mask;
  };
  const BlockMask::Lists empty_rows{{{}, {0, 1}, {}, {2}}};  // query blocks 0 and 2 attend to nothing
  const Case cases[] = {
      {"rows with no keys", problem(250, 2, 2, 64), BlockMask::from_lists({250, 64, 64, false}, empty_rows)},
      {"no keys at all", problem(200, 2, 1, 64), BlockMask::from_lists({200, 64, 64, false}, {{{}, {}, {}, {}}})},
      {"all blocks", problem(300, 2, 2, 64), BlockMask::dense({300, 64, 64, false})},
      {"all blocks causal", problem(300, 2, 2, 128), BlockMask::dense({300, 64, 128, true})},
      {"a single block", problem(300, 2, 2, 64), BlockMask::from_lists({300, 128, 128, false}, {{{}, {1}, {}}})},
      {"N smaller than a block", problem(30, 3, 1, 64), BlockMask::dense({30, 64, 64, true})},
      {"N = 1", problem(1, 2, 1, 64), BlockMask::dense({1, 128, 128, true})},
      {"N not a multiple", problem(333, 2, 1, 96), local_window_blocks({333, 128, 64, true}, 1)},
      {"per-head masks with GQA", problem(400, 6, 2, 64), random_blocks({400, 64, 64, false}, 2, 8, 6)},
      {"causal partial blocks", problem(390, 2, 2, 64), sliding_window_blocks({390, 64, 64, true}, 70, 0)},
      {"band inside one block", problem(300, 2, 2, 128), sliding_window_blocks({300, 128, 128, false}, 3, 3)},
      {"odd block sizes", problem(301, 2, 2, 64), random_blocks({301, 48, 80, true}, 2, 4, 2)},
      {"batch of 3", problem(200, 2, 1, 64, 3), random_blocks({200, 64, 64, true}, 2, 4)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    expect_half(c.problem, c.mask, 11, DType::bf16);
    expect_half(c.problem, c.mask, 12, DType::bf16, /*deterministic=*/true);
    expect_exact_float(c.problem, c.mask, 13);
  }
}

// Query blocks that list more key tiles than the Hopper forward decodes in one pass (128
// candidate tiles a pass, into a ring of 256): several passes, the ring wrapping round,
// blocks of 80 keys as two tiles each, and tiles dropped for the CTA's own rows between
// kept ones (after the causal diagonal; the first tile of a block the band cuts).
TEST(BlockSparseCuda, LongKeyListsSpanSeveralSchedulePasses) {
  SKIP_WITHOUT_GPU();
  const std::int64_t N = 80 * 130 + 37;
  for (const bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "band");
    const BlockGrid grid{N, 48, 80, causal};
    BlockMask::Lists lists(1);
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      std::vector<std::int64_t>& keys = lists[0].emplace_back();
      for (std::int64_t j = 0; j < grid.key_blocks(); ++j) {
        const bool long_list = i % 37 == 5 || i == grid.query_blocks() - 1;
        if (long_list || (i % 11 == 0 && j % 3 == 0) || j == i * 48 / 80) keys.push_back(j);
      }
    }
    const BlockMask mask = BlockMask::from_lists(grid, lists, causal ? ElementMask{} : ElementMask::band(9050, 9050));
    expect_half(problem(N, 1, 1, 64), mask, causal ? 21 : 22, DType::bf16);
    if (causal) expect_half(problem(N, 1, 1, 128), mask, 23, DType::f16);
  }
}

TEST(BlockSparseCuda, RowsWithNoKeysGiveZeroAndMinusInfinity) {
  SKIP_WITHOUT_GPU();
  const BlockSparseProblem p = problem(250, 2, 2, 64);
  const BlockMask mask = BlockMask::from_lists({250, 64, 64, false}, {{{}, {0, 1}, {}, {2}}});
  for (const DType dtype : {DType::bf16, DType::f32}) {
    const BlockSparseTensors t = on(random_block_sparse_tensors(p, 3, dtype), kGpu);
    const Outcome r = run(mask, t, p.scale);
    const auto lse = r.forward.lse.to_vector<float>();
    const auto out = r.forward.out.to_vector<float>();
    const auto dq = r.grads.dq.to_vector<float>();
    const auto dk = r.grads.dk.to_vector<float>();
    for (std::int64_t h = 0; h < 2; ++h) {
      for (std::int64_t n = 0; n < 250; ++n) {
        const bool empty = n / 64 == 0 || n / 64 == 2;
        EXPECT_EQ(lse[static_cast<std::size_t>(h * 250 + n)] == -INFINITY, empty) << dtype_name(dtype) << " " << n;
        // Key block 3 is listed by no query block: zero dK.
        const bool unused_key = n / 64 == 3;
        for (std::int64_t d = 0; d < 64; ++d) {
          const auto at = static_cast<std::size_t>((n * 2 + h) * 64 + d);
          if (empty) {
            EXPECT_EQ(out[at], 0.0f);
            EXPECT_EQ(dq[at], 0.0f);
          }
          if (unused_key) {
            EXPECT_EQ(dk[at], 0.0f);
          }
        }
      }
    }
  }
}

TEST(BlockSparseCuda, DeterministicModeIsBitwiseRepeatable) {
  SKIP_WITHOUT_GPU();
  const BlockSparseProblem p = problem(2000, 8, 4, 64);
  const BlockMask mask =
      union_of({local_window_blocks({2000, 64, 64, true}, 2), random_blocks({2000, 64, 64, true}, 4, 1, 8)});
  const BlockSparseTensors t = on(random_block_sparse_tensors(p, 17, DType::bf16), kGpu);
  const Outcome first = run(mask, t, p.scale, /*deterministic=*/true);
  for (int repeat = 0; repeat < 3; ++repeat) {
    const Outcome again = run(mask, t, p.scale, /*deterministic=*/true);
    EXPECT_EQ(first.forward.out.to_vector<float>(), again.forward.out.to_vector<float>());
    EXPECT_EQ(first.forward.lse.to_vector<float>(), again.forward.lse.to_vector<float>());
    EXPECT_EQ(first.grads.dq.to_vector<float>(), again.grads.dq.to_vector<float>());
    EXPECT_EQ(first.grads.dk.to_vector<float>(), again.grads.dk.to_vector<float>());
    EXPECT_EQ(first.grads.dv.to_vector<float>(), again.grads.dv.to_vector<float>());
  }
  const Outcome atomic = run(mask, t, p.scale);  // atomics: same values to rounding
  EXPECT_LT(relative_l2_error(atomic.grads.dq, first.grads.dq), 1e-2);
  EXPECT_EQ(atomic.forward.out.to_vector<float>(), first.forward.out.to_vector<float>());
}

TEST(BlockSparseCuda, StridedInputsAreReadInPlace) {
  SKIP_WITHOUT_GPU();
  const BlockSparseProblem p = problem(300, 4, 2, 64);
  const BlockMask mask = random_blocks({300, 64, 64, true}, 2, 3, 4);
  const BlockSparseTensors dense = on(random_block_sparse_tensors(p, 3, DType::bf16), kGpu);
  auto strided = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(1), x.size(0), x.size(2), 2 * x.size(3)}, x.dtype(), kGpu);
    Tensor view = big.permute({1, 0, 2, 3}).slice(3, 8, 8 + x.size(3));  // 16-byte aligned rows
    view.copy_from(x);
    return view;
  };
  const BlockSparseTensors s{strided(dense.q), strided(dense.k), strided(dense.v), strided(dense.dout)};
  ASSERT_FALSE(s.q.is_contiguous());
  const Outcome a = run(mask, dense, p.scale, true), b = run(mask, s, p.scale, true);
  EXPECT_EQ(a.forward.out.to_vector<float>(), b.forward.out.to_vector<float>());
  EXPECT_EQ(a.forward.lse.to_vector<float>(), b.forward.lse.to_vector<float>());
  EXPECT_EQ(a.grads.dq.to_vector<float>(), b.grads.dq.to_vector<float>());
  EXPECT_EQ(a.grads.dv.to_vector<float>(), b.grads.dv.to_vector<float>());
  // Misaligned rows fall back to the exact SIMT kernels: the same function, float accuracy.
  auto misaligned = [](const Tensor& x) {
    Tensor big = Tensor::zeros({x.size(0), x.size(1), x.size(2), x.size(3) + 1}, x.dtype(), kGpu);
    Tensor view = big.slice(3, 1, 1 + x.size(3));
    view.copy_from(x);
    return view;
  };
  const BlockSparseTensors m{misaligned(dense.q), misaligned(dense.k), misaligned(dense.v), misaligned(dense.dout)};
  const Outcome c = run(mask, m, p.scale);
  EXPECT_LT(relative_l2_error(c.forward.out, a.forward.out), 1e-2);
  EXPECT_LT(relative_l2_error(c.grads.dk, a.grads.dk), 2e-2);
  // bf16 with a head dim the tensor cores do not take (SIMT): the half-precision rule.
  expect_half(problem(200, 2, 1, 20), random_blocks({200, 64, 64, false}, 2, 6), 21, DType::bf16);
}

// A mask listing every block is dense attention: the same kernels' dilated instantiation
// (one segment, rate 1) computes it, so the two agree to rounding.
TEST(BlockSparseCuda, DenseMaskEqualsDenseDilatedAttention) {
  SKIP_WITHOUT_GPU();
  for (const bool causal : {false, true}) {
    const BlockSparseProblem p = problem(777, 4, 2, 128);
    const BlockSparseTensors t = on(random_block_sparse_tensors(p, 8, DType::bf16), kGpu);
    const Outcome sparse = run(BlockMask::dense({777, 128, 128, causal}), t, p.scale);
    const DilatedAttentionConfig config = DilatedAttentionConfig::dense(causal);
    const AttentionOutput dense = dilated_attention_forward(config, t.q, t.k, t.v);
    const AttentionGradients grads = dilated_attention_backward(config, t.q, t.k, t.v, dense, t.dout);
    EXPECT_LT(relative_l2_error(sparse.forward.out, dense.out), 1e-2);
    EXPECT_LT(relative_l2_error(sparse.forward.lse, dense.lse), 1e-5);
    EXPECT_LT(relative_l2_error(sparse.grads.dq, grads.dq), 2e-2);
    EXPECT_LT(relative_l2_error(sparse.grads.dk, grads.dk), 2e-2);
    EXPECT_LT(relative_l2_error(sparse.grads.dv, grads.dv), 2e-2);
  }
}

TEST(BlockSparseCuda, OperatorAndFactoryMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  BlockSparseConfig config;
  config.block_q = config.block_k = 64;
  config.causal = true;
  config.patterns = {BlockPattern::local_window(1), BlockPattern::random(2, 4, /*per_head=*/true)};
  const BlockSparseProblem p = problem(500, 4, 2, 64);
  const BlockSparseTensors host = random_block_sparse_tensors(p, 9, DType::f32);
  const BlockSparseTensors gpu = on(host, kGpu);
  auto attention = make_attention("auto", config);
  const AttentionOutput out = attention->forward(gpu.q, gpu.k, gpu.v);
  EXPECT_EQ(out.out.device(), kGpu);
  const AttentionGradients grads = attention->backward(gpu.dout);
  // Again with the cached device lists, then on the CPU.
  const AttentionOutput again = attention->forward(gpu.q, gpu.k, gpu.v);
  EXPECT_EQ(out.out.to_vector<float>(), again.out.to_vector<float>());
  auto cpu = make_attention("cpu", config);
  const AttentionOutput reference = cpu->forward(host.q, host.k, host.v);
  const AttentionGradients reference_grads = cpu->backward(host.dout);
  EXPECT_LT(relative_l2_error(out.out, reference.out), 1e-5);
  EXPECT_LT(relative_l2_error(out.lse, reference.lse), 1e-5);
  EXPECT_LT(relative_l2_error(grads.dq, reference_grads.dq), 1e-5);
  EXPECT_LT(relative_l2_error(grads.dk, reference_grads.dk), 1e-5);
  EXPECT_LT(relative_l2_error(grads.dv, reference_grads.dv), 1e-5);
  // A new N rebuilds the mask and its device lists.
  const BlockSparseProblem shorter = problem(300, 4, 2, 64);
  const BlockSparseTensors short_host = random_block_sparse_tensors(shorter, 10, DType::f32);
  const AttentionOutput short_gpu =
      attention->forward(short_host.q.to(kGpu), short_host.k.to(kGpu), short_host.v.to(kGpu));
  EXPECT_LT(relative_l2_error(short_gpu.out, cpu->forward(short_host.q, short_host.k, short_host.v).out), 1e-5);
  // The CUDA backend refuses host tensors.
  EXPECT_THROW(make_attention("cuda", config)->forward(host.q, host.k, host.v), Error);
}

TEST(BlockSparseCuda, PredicatesAreRefusedOnTheGpu) {
  SKIP_WITHOUT_GPU();
  ElementMask element;
  element.predicate = [](std::int64_t, std::int64_t q, std::int64_t k) { return (q + k) % 2 == 0; };
  const BlockMask mask = BlockMask::from_lists({128, 64, 64, false}, {{{0, 1}, {1}}}, element);
  const BlockSparseProblem p = problem(128, 2, 2, 64);
  const BlockSparseTensors t = on(random_block_sparse_tensors(p, 1, DType::bf16), kGpu);
  try {
    block_sparse_attention_forward(mask, t.q, t.k, t.v);
    FAIL() << "a predicate mask ran on the GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("predicate"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet::testing
