// The capacity planner (estimate_sequence_parallel_run): its FLOPs equal DESIGN 4's count
// from the attention layer, its traffic equals the plans' rows, more GPUs mean less memory
// each, zigzag removes the causal imbalance, and bad input is an Error.
#include "longnet/dist/planner.hpp"

#include <gtest/gtest.h>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/sequence_parallel_plan.hpp"

namespace longnet {
namespace {

PlannerInput small_model() {
  PlannerInput in;
  in.seq_len = 1 << 14;
  in.gpus = 4;
  in.layers = 2;
  in.heads = 8;
  in.kv_heads = 4;
  in.head_dim = 32;
  in.vocab = 1000;
  in.attention.segment_lengths = {1024, 4096, 16384};
  in.attention.dilation_rates = {1, 4, 16};
  return in;
}

TEST(Planner, AttentionFlopsFollowDesignSection4) {
  PlannerInput in = small_model();
  in.gpus = 1;
  in.batch = 3;
  const PlannerEstimate e = estimate_sequence_parallel_run(in);
  const double forward = dilated_attention_forward_flops(in.attention, in.batch, in.seq_len, in.heads, in.head_dim);
  EXPECT_DOUBLE_EQ(e.attention_flops, in.layers * 3.5 * forward);  // forward + 2.5x backward
  EXPECT_EQ(e.forward_bytes_per_layer, 0);                         // one GPU: nothing to exchange
  EXPECT_EQ(e.gradient_allreduce_bytes, 0);
  in.training = false;
  EXPECT_DOUBLE_EQ(estimate_sequence_parallel_run(in).attention_flops, in.layers * forward);
}

TEST(Planner, TrafficEqualsThePlansRows) {
  PlannerInput in = small_model();
  in.attention.causal = false;
  const PlannerEstimate e = estimate_sequence_parallel_run(in);
  // Non-causal and symmetric: every rank sends and receives the same, so the busiest is any.
  const SequenceParallelPlan plan = make_sequence_parallel_plan(SequenceLayout::contiguous(in.seq_len, in.gpus), 0,
                                                                in.attention, in.heads, in.kv_heads);
  ASSERT_GT(plan.receive_rows, 0);
  const double rows = static_cast<double>(plan.send_rows + plan.receive_rows);
  EXPECT_DOUBLE_EQ(e.forward_bytes_per_layer, 2 * rows * in.head_dim * 2);   // bf16 K and V
  EXPECT_DOUBLE_EQ(e.backward_bytes_per_layer, 2 * rows * in.head_dim * 4);  // fp32 gradients
  EXPECT_GT(e.communication_seconds, 0);
  EXPECT_GE(e.step_seconds, e.step_seconds_overlapped);
}

TEST(Planner, MoreGpusNeedLessMemoryEach) {
  PlannerInput in = small_model();
  double previous = 0;
  for (int gpus : {8, 4, 2, 1}) {
    in.gpus = gpus;
    const PlannerEstimate e = estimate_sequence_parallel_run(in);
    EXPECT_GT(e.total_bytes, previous) << gpus;
    EXPECT_EQ(e.max_local_tokens, in.seq_len / gpus);
    previous = e.total_bytes;
  }
}

TEST(Planner, ZigzagRemovesTheCausalImbalance) {
  PlannerInput in = small_model();
  in.attention.causal = true;
  in.attention.segment_lengths = {16384};
  in.attention.dilation_rates = {1};
  const double contiguous = estimate_sequence_parallel_run(in).attention_imbalance;
  in.order = SequenceOrder::zigzag;
  const double zigzag = estimate_sequence_parallel_run(in).attention_imbalance;
  EXPECT_NEAR(contiguous, 7.0 / 4.0, 0.01);  // (2P - 1) / P for dense causal attention
  EXPECT_NEAR(zigzag, 1.0, 0.01);
}

TEST(Planner, RejectsBadInput) {
  PlannerInput in = small_model();
  in.gpus = 0;
  EXPECT_THROW(estimate_sequence_parallel_run(in), Error);
  in = small_model();
  in.kv_heads = 3;
  EXPECT_THROW(estimate_sequence_parallel_run(in), Error);
  in = small_model();
  in.constants.gemm_tflops = 0;
  EXPECT_THROW(estimate_sequence_parallel_run(in), Error);
  in = small_model();
  in.constants.memory_gbytes_per_second = -1;
  try {
    estimate_sequence_parallel_run(in);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("memory_gbytes_per_second = -1"), std::string::npos) << e.what();
  }
  in = small_model();
  in.seq_len = 3;  // fewer tokens than GPUs
  EXPECT_THROW(estimate_sequence_parallel_run(in), Error);
}

// The issue-5 training configuration: d = H D = 768, f = 3072, bf16 (b = 2, a = 4). Per
// token and layer the norms see 2d + HD + f = 5376 elements; forward 2 (5376) + 2 (1536)
// + 2 (768) elements x 2 bytes = 30,720 B (GELU inside the feed-forward's norm, the
// residuals read by the GEMMs); backward 5 (5376) + 2 (1536) + 2 (768) + (768 + 1536 +
// 1536 + 3072) = 38,400 elements x 2 B, plus 6 B x 2304 for the fp32 -> bf16 gradients
// and 2 B x 2 x 768 for delta: 93,696 B.
TEST(Planner, MemoryBoundBytesFollowTheStatedPasses) {
  PlannerInput in;
  in.heads = in.kv_heads = 12;
  in.head_dim = 64;
  in.ffn_dim = 3072;
  in.training = false;
  EXPECT_DOUBLE_EQ(memory_bound_bytes_per_token_layer(in), 30720.0);
  in.training = true;
  EXPECT_DOUBLE_EQ(memory_bound_bytes_per_token_layer(in), 30720.0 + 76800.0 + 13824.0 + 3072.0);
}

TEST(Planner, MemoryBoundTimeScalesWithTheBandwidth) {
  PlannerInput in = small_model();
  const PlannerEstimate base = estimate_sequence_parallel_run(in);
  in.constants.memory_gbytes_per_second *= 2;
  const PlannerEstimate faster = estimate_sequence_parallel_run(in);
  EXPECT_GT(base.memory_bound_bytes, 0);
  EXPECT_DOUBLE_EQ(faster.memory_bound_bytes, base.memory_bound_bytes);
  EXPECT_LT(faster.compute_seconds, base.compute_seconds);
  // Half the bandwidth-bound time is saved (and half the optimizer's, which is not counted here).
  const double saved = base.compute_seconds - faster.compute_seconds;
  EXPECT_GE(saved, base.memory_bound_bytes / (in.constants.memory_gbytes_per_second * 1e9) * (1 - 1e-9));
}

TEST(Planner, ReportNamesTheNumbers) {
  const PlannerInput in = small_model();
  const std::string text = describe_estimate(in, estimate_sequence_parallel_run(in));
  for (const char* needle : {"memory per GPU", "communication per layer", "time per step", "tokens/s"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
}

}  // namespace
}  // namespace longnet
