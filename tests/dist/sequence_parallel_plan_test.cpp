// The communication plan and the per-rank steps of sequence-parallel dilated attention,
// without MPI: every rank's plan is built in this one process and the exchanges are
// played by copying rows from the sender's buffer to the receiver's, exactly as the plan
// says (a test double for the communicator, not a transport). Checks: the layouts, that
// sender and receiver agree on every message, that only the rows DESIGN 2.6 allows travel
// (counted independently by brute force), that attended pairs add up to the
// single-process count, that a configuration with no crossing segment communicates
// nothing, and that the ranks' results put together equal the single-process forward and
// backward (fp64 to 1e-12, fp32 to 1e-5) on random configurations for P = 1..6.
#include "longnet/dist/sequence_parallel_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "distributed_cases.hpp"
#include "simulated_exchange.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_parallel_attention.hpp"
#include "longnet/dist/sequence_parallel_local.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

struct Errors {
  double out, lse, dq, dk, dv;
  double worst() const { return std::max({out, lse, dq, dk, dv}); }
};

Errors compare(const Distributed& d, const AttentionOutput& f, const AttentionGradients& g) {
  return {relative_l2_error(d.forward.out, f.out), relative_l2_error(d.forward.lse, f.lse),
          relative_l2_error(d.grads.dq, g.dq), relative_l2_error(d.grads.dk, g.dk),
          relative_l2_error(d.grads.dv, g.dv)};
}

Errors simulated_error(const DistributedCase& c, DType dtype, std::uint64_t seed) {
  const ProblemTensors t = random_tensors(c.problem, seed, dtype);
  const DilatedAttentionConfig config = config_of(c.problem);
  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
  return compare(run_simulated(c, t), f, g);
}

TEST(SequenceLayout, ContiguousAndZigzagBlocks) {
  const SequenceLayout even = SequenceLayout::contiguous(10, 3);
  EXPECT_EQ(even.local_lengths(), (std::vector<std::int64_t>{4, 3, 3}));
  const SequenceLayout zigzag = SequenceLayout::zigzag(13, 3);  // blocks 3,2,2,2,2,2
  ASSERT_EQ(zigzag.blocks().size(), 6u);
  EXPECT_EQ(zigzag.local_lengths(), (std::vector<std::int64_t>{5, 4, 4}));
  const std::vector<int> owners = {0, 1, 2, 2, 1, 0};
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(zigzag.blocks()[i].rank, owners[i]) << i;
  EXPECT_EQ(zigzag.blocks()[5].local_begin, 3);  // after rank 0's first block of 3 rows
  EXPECT_EQ(zigzag.block_of(12), 5u);
  EXPECT_EQ(zigzag.block_of(0), 0u);
}

TEST(SequenceLayout, ShardAndUnshardAreInverse) {
  const Tensor global = Tensor::randn({2, 23, 3, 4}, 9);
  for (const SequenceLayout& layout :
       {SequenceLayout::contiguous({5, 1, 17}), SequenceLayout::zigzag(23, 4), SequenceLayout::contiguous(23, 1)}) {
    std::vector<Tensor> parts;
    for (int r = 0; r < layout.world_size(); ++r) parts.push_back(layout.shard(global, r));
    EXPECT_EQ(relative_l2_error(layout.unshard(parts), global), 0.0);
  }
}

TEST(SequenceLayout, RejectsEmptySlices) {
  EXPECT_THROW(SequenceLayout::contiguous({3, 0, 2}), Error);
  EXPECT_THROW(SequenceLayout::zigzag(7, 4), Error);
  EXPECT_THROW(SequenceLayout::contiguous(2, 3), Error);
  try {
    SequenceLayout::contiguous({3, 0, 2});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("local_lengths[1] = 0"), std::string::npos) << e.what();
  }
}

TEST(SequenceParallelPlan, SendersAndReceiversAgree) {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 2 + static_cast<int>(seed % 5));
    SCOPED_TRACE(describe(c));
    const auto plans = all_plans(c);
    for (std::size_t a = 0; a < plans.size(); ++a) {
      std::int64_t rows = 0;
      for (const PeerRows& s : plans[a].sends) {
        const PeerRows* r = find_peer(plans[static_cast<std::size_t>(s.peer)].receives, static_cast<int>(a));
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->rows, s.rows);
        std::int64_t run_rows = 0;
        for (const KvRowRun& run : s.runs) run_rows += run.count;
        EXPECT_EQ(run_rows, s.rows);
        EXPECT_NE(s.peer, static_cast<int>(a));
        rows += s.rows;
      }
      EXPECT_EQ(rows, plans[a].send_rows);
    }
  }
}

// Brute force, from DESIGN 2.6: receiver b needs key row (kv head kh, position p) of
// another rank under pattern i and offset o (used by a query head of kh) iff b holds a
// query position q of the same virtual sequence (same segment, same residue) and, when
// causal, p < q. Rows are counted once per (pattern, offset).
std::int64_t expected_receive_rows(const DistributedCase& c, int b) {
  const SequenceLayout layout = c.layout();
  const DilatedProblem& p = c.problem;
  const auto owner = [&](std::int64_t position) { return layout.blocks()[layout.block_of(position)].rank; };
  const auto G = static_cast<std::int64_t>(p.patterns.size());
  std::int64_t rows = 0;
  for (std::int64_t i = 0; i < G; ++i) {
    const auto [w, r] = p.patterns[static_cast<std::size_t>(i)];
    for (std::int64_t kh = 0; kh < p.kv_heads; ++kh) {
      std::set<std::int64_t> offsets;
      const std::int64_t group = p.heads / p.kv_heads;
      for (std::int64_t h = kh * group; h < (kh + 1) * group; ++h) {
        const std::int64_t o = kernels::pattern_offset(p.mode, i, G, r, h, p.heads);
        if (o >= 0) offsets.insert(o);
      }
      for (std::int64_t o : offsets) {
        for (std::int64_t key = 0; key < p.seq_len; ++key) {
          if (owner(key) == b || (key % w) % r != o) continue;
          bool needed = false;
          for (std::int64_t query = 0; query < p.seq_len && !needed; ++query) {
            needed = owner(query) == b && query / w == key / w && (query % w) % r == o && (!p.causal || key < query);
          }
          rows += needed;
        }
      }
    }
  }
  return rows;
}

TEST(SequenceParallelPlan, SendsOnlyTheRowsDesignAllows) {
  for (std::uint64_t seed = 100; seed < 140; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 2 + static_cast<int>(seed % 4), 90);
    SCOPED_TRACE(describe(c));
    const auto plans = all_plans(c);
    for (std::size_t b = 0; b < plans.size(); ++b) {
      EXPECT_EQ(plans[b].receive_rows, expected_receive_rows(c, static_cast<int>(b))) << "rank " << b;
    }
  }
}

TEST(SequenceParallelPlan, AttendedPairsAddUpToTheSingleProcessCount) {
  for (std::uint64_t seed = 200; seed < 260; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 1 + static_cast<int>(seed % 6));
    SCOPED_TRACE(describe(c));
    std::int64_t total = 0;
    for (const SequenceParallelPlan& plan : all_plans(c)) total += plan.attended_pairs;
    const DilatedProblem& p = c.problem;
    EXPECT_EQ(total, kernels::attended_pairs(1, p.seq_len, p.heads, p.patterns.data(),
                                             static_cast<std::int64_t>(p.patterns.size()), p.mode, p.causal));
  }
}

TEST(SequenceParallelPlan, SegmentsInsideSlicesCommunicateNothing) {
  // Slices of 64 rows; segments of 16 and 32 (and 64 with rate 4) never cross a slice.
  DilatedAttentionConfig config;
  config.segment_lengths = {16, 32, 64};
  config.dilation_rates = {1, 2, 4};
  const SequenceLayout layout = SequenceLayout::contiguous(256, 4);
  for (int r = 0; r < 4; ++r) {
    const SequenceParallelPlan plan = make_sequence_parallel_plan(layout, r, config, 8, 2);
    EXPECT_EQ(plan.send_rows, 0);
    EXPECT_EQ(plan.receive_rows, 0);
    // Every segment of a pattern is one repeated task per (kv head, offset).
    for (const auto& task : plan.tasks) EXPECT_GE(task.repeats, 1);
    EXPECT_LE(plan.tasks.size(), 3u * 8u);
  }
}

TEST(SequenceParallelPlan, CausalRowsTravelForwardOnly) {
  DilatedAttentionConfig config;
  config.segment_lengths = {100, 400};
  config.dilation_rates = {1, 4};
  config.causal = true;
  const SequenceLayout layout = SequenceLayout::contiguous({50, 120, 30, 200});
  for (int r = 0; r < 4; ++r) {
    const SequenceParallelPlan plan = make_sequence_parallel_plan(layout, r, config, 4, 4);
    for (const PeerRows& s : plan.sends) EXPECT_GT(s.peer, r);
    for (const PeerRows& s : plan.receives) EXPECT_LT(s.peer, r);
  }
  // Rank 0 receives nothing; the last rank sends nothing.
  EXPECT_EQ(make_sequence_parallel_plan(layout, 0, config, 4, 4).receive_rows, 0);
  EXPECT_EQ(make_sequence_parallel_plan(layout, 3, config, 4, 4).send_rows, 0);
}

TEST(SequenceParallelPlan, OnlyTheDilatedRowsOfASegmentTravel) {
  // One pattern (w = N = 64, r = 4), 4 heads: offsets 0..3, one kv head each. Non-causal,
  // 2 ranks of 32 rows: each receives, per kv head, the 8 rows of its residue class.
  DilatedAttentionConfig config;
  config.segment_lengths = {64};
  config.dilation_rates = {4};
  const SequenceLayout layout = SequenceLayout::contiguous(64, 2);
  const SequenceParallelPlan plan = make_sequence_parallel_plan(layout, 0, config, 4, 4);
  EXPECT_EQ(plan.receive_rows, 4 * 8);
  ASSERT_EQ(plan.sends.size(), 1u);
  for (const KvRowRun& run : plan.sends[0].runs) {
    EXPECT_EQ(run.row_step, 4);
    EXPECT_EQ(run.first_row, run.kv_head);  // offset o = kv head here
    EXPECT_EQ(run.count, 8);
  }
}

TEST(SequenceParallelPlan, WorkedExampleOfTheGuide) {
  // docs/guides/distributed.md: N = 16 on slices of 7 and 9, pattern (8, 2), two query
  // heads on one kv head (offsets 0 and 1). Causal: rank 0 sends rows 1, 3, 5 to rank 1.
  DilatedAttentionConfig config;
  config.segment_lengths = {8};
  config.dilation_rates = {2};
  config.causal = true;
  const SequenceLayout layout = SequenceLayout::contiguous({7, 9});
  const SequenceParallelPlan rank0 = make_sequence_parallel_plan(layout, 0, config, 2, 1);
  ASSERT_EQ(rank0.sends.size(), 1u);
  ASSERT_EQ(rank0.sends[0].runs.size(), 1u);
  const KvRowRun run = rank0.sends[0].runs[0];
  EXPECT_EQ(rank0.sends[0].peer, 1);
  EXPECT_EQ(run.kv_head, 0);
  EXPECT_EQ(run.first_row, 1);
  EXPECT_EQ(run.row_step, 2);
  EXPECT_EQ(run.count, 3);
  EXPECT_EQ(rank0.receive_rows, 0);
  EXPECT_EQ(make_sequence_parallel_plan(layout, 1, config, 2, 1).receive_rows, 3);
  // Not causal: rank 1 also sends row 7 (its local row 0) back.
  config.causal = false;
  const SequenceParallelPlan rank1 = make_sequence_parallel_plan(layout, 1, config, 2, 1);
  ASSERT_EQ(rank1.sends.size(), 1u);
  EXPECT_EQ(rank1.send_rows, 1);
  EXPECT_EQ(rank1.sends[0].runs[0].first_row, 0);
}

TEST(SequenceParallelPlan, ZigzagBalancesCausalWork) {
  // Causal attention over segments as long as the sequence: with contiguous slices the
  // last rank attends ~(2P-1) times what the first does; zigzag evens it out.
  DilatedAttentionConfig config;
  config.segment_lengths = {1024, 512};
  config.dilation_rates = {2, 1};
  config.causal = true;
  auto imbalance = [&](const SequenceLayout& layout) {
    std::int64_t most = 0, total = 0;
    for (int r = 0; r < layout.world_size(); ++r) {
      const std::int64_t pairs = make_sequence_parallel_plan(layout, r, config, 4, 2).attended_pairs;
      most = std::max(most, pairs);
      total += pairs;
    }
    return static_cast<double>(most) * layout.world_size() / static_cast<double>(total);
  };
  const double contiguous = imbalance(SequenceLayout::contiguous(1024, 4));
  const double zigzag = imbalance(SequenceLayout::zigzag(1024, 4));
  EXPECT_GT(contiguous, 1.5);
  EXPECT_LT(zigzag, 1.05);
}

TEST(SequenceParallelPlan, RejectsBadArguments) {
  DilatedAttentionConfig config;
  config.segment_lengths = {8};
  config.dilation_rates = {2};
  const SequenceLayout layout = SequenceLayout::contiguous(16, 2);
  EXPECT_THROW(make_sequence_parallel_plan(layout, 2, config, 4, 4), Error);
  EXPECT_THROW(make_sequence_parallel_plan(layout, 0, config, 4, 3), Error);
  config.dilation_rates = {0};
  EXPECT_THROW(make_sequence_parallel_plan(layout, 0, config, 4, 4), Error);
}

TEST(SequenceParallelSimulated, Float64EqualsSingleProcess) {
  for (std::uint64_t seed = 300; seed < 420; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 1 + static_cast<int>(seed % 6));
    SCOPED_TRACE(describe(c));
    const Errors e = simulated_error(c, DType::f64, seed);
    EXPECT_LE(e.worst(), 1e-12) << "out " << e.out << " lse " << e.lse << " dq " << e.dq << " dk " << e.dk << " dv "
                                << e.dv;
    if (HasFailure()) return;
  }
}

TEST(SequenceParallelSimulated, Float32EqualsSingleProcess) {
  for (std::uint64_t seed = 500; seed < 560; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 1 + static_cast<int>(seed % 6));
    SCOPED_TRACE(describe(c));
    const Errors e = simulated_error(c, DType::f32, seed);
    EXPECT_LE(e.worst(), 1e-5) << "out " << e.out << " lse " << e.lse << " dq " << e.dq << " dk " << e.dk << " dv "
                               << e.dv;
    if (HasFailure()) return;
  }
}

TEST(SequenceParallelSimulated, TwoStepFunctionsEqualTheOneCallOnes) {
  // On the CPU the steps that overlap the exchange on GPUs run everything in one of them.
  for (std::uint64_t seed = 600; seed < 620; ++seed) {
    const DistributedCase c = random_distributed_case(seed, 1 + static_cast<int>(seed % 4));
    SCOPED_TRACE(describe(c));
    const ProblemTensors t = random_tensors(c.problem, seed, DType::f64);
    const Distributed one = run_simulated(c, t), two = run_simulated(c, t, Device::cpu(), true);
    EXPECT_EQ(max_abs_error(two.forward.out, one.forward.out), 0.0);
    EXPECT_EQ(max_abs_error(two.grads.dq, one.grads.dq), 0.0);
    EXPECT_EQ(max_abs_error(two.grads.dk, one.grads.dk), 0.0);
    EXPECT_EQ(max_abs_error(two.grads.dv, one.grads.dv), 0.0);
  }
}

TEST(SequenceParallelSimulated, DenseAttentionAsOneHugeSegment) {
  // DilatedAttentionConfig::dense uses w = INT64_MAX: one segment over every rank.
  for (const bool causal : {false, true}) {
    DistributedCase c;
    c.problem.batch = 2;
    c.problem.seq_len = 50;
    c.problem.heads = 4;
    c.problem.kv_heads = 2;
    c.problem.head_dim = 8;
    c.problem.patterns = {{INT64_MAX, 1}};
    c.problem.causal = causal;
    c.problem.scale = 0.35;
    c.lengths = {9, 30, 11};
    SCOPED_TRACE(describe(c));
    EXPECT_LE(simulated_error(c, DType::f64, 3).worst(), 1e-12);
  }
}

TEST(SequenceParallelSimulated, HalfPrecisionInputsMatchTheSingleProcessKernel) {
  // bf16 inputs: both compute in fp32 from the same bf16 values; outputs round once.
  const DistributedCase c = random_distributed_case(42, 3);
  SCOPED_TRACE(describe(c));
  EXPECT_LE(simulated_error(c, DType::bf16, 42).worst(), 1e-2);
}

TEST(SequenceParallelDilatedAttention, OneRankEqualsSingleProcess) {
  const DistributedCase c = random_distributed_case(7, 1);
  const ProblemTensors t = random_tensors(c.problem, 7, DType::f64);
  const DilatedAttentionConfig config = config_of(c.problem);
  SequenceParallelDilatedAttention attention(config, self_communicator());
  const AttentionOutput out = attention.forward(t.q, t.k, t.v);
  const AttentionGradients grads = attention.backward(t.dout);
  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
  EXPECT_LE(compare({out, grads}, f, g).worst(), 1e-12);
  EXPECT_EQ(attention.name(), "dilated/sequence_parallel/self");
}

TEST(SelfCommunicator, CollectivesCopy) {
  auto comm = self_communicator();
  const Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3});
  const Tensor y = Tensor::empty({3}, DType::f32);
  comm->all_gather(x, y);
  EXPECT_EQ(y.to_vector<float>(), x.to_vector<float>());
  comm->all_reduce(y, ReduceOp::sum);
  EXPECT_EQ(y.to_vector<float>(), x.to_vector<float>());
  EXPECT_THROW(comm->send(x, 1), Error);
  EXPECT_THROW(comm->all_gather(x, Tensor::empty({4}, DType::f32)), Error);
  EXPECT_EQ(comm->split(-1, 0), nullptr);
  // A failure on the only rank is reported as rank 0's.
  try {
    run_collectively(*comm, [] { throw Error("boom"); });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "rank 0: boom");
  }
}

}  // namespace
}  // namespace longnet::testing
