// Sequence-parallel dilated attention's per-rank steps on one GPU (the CUDA task kernel,
// pack and scatter-add kernels), every rank's plan replayed in this process with the
// exchanges played between device buffers (simulated_exchange.hpp). Reference: the fp64
// single-process result of the same bf16/f16 inputs. The bound is FlashAttention's: the
// error may be at most twice that of the single-GPU CUDA engine on the same inputs (which
// rounds P to the input dtype the same way) plus one rounding step (DESIGN 5). Skipped
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "distributed_cases.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/device.hpp"
#include "simulated_exchange.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

class SequenceParallelCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

struct Reference {
  AttentionOutput forward;
  AttentionGradients grads;
};

Reference single_process(const DilatedAttentionConfig& config, const ProblemTensors& t, Device device, DType dtype) {
  const Tensor q = t.q.to(device, dtype), k = t.k.to(device, dtype), v = t.v.to(device, dtype);
  const Tensor dout = t.dout.to(device, dtype);
  const AttentionOutput f = dilated_attention_forward(config, q, k, v);
  const AttentionGradients g = dilated_attention_backward(config, q, k, v, f, dout);
  return {{f.out.to(Device::cpu()), f.lse.to(Device::cpu())},
          {g.dq.to(Device::cpu()), g.dk.to(Device::cpu()), g.dv.to(Device::cpu())}};
}

void expect_close_to_reference(const DistributedCase& c, DType dtype, std::uint64_t seed, bool split_steps = false) {
  SCOPED_TRACE(describe(c) + " dtype=" + std::string(dtype_name(dtype)) + (split_steps ? " split" : ""));
  const ProblemTensors t = random_tensors(c.problem, seed, dtype);
  const DilatedAttentionConfig config = config_of(c.problem);
  const Reference exact = single_process(config, t, Device::cpu(), DType::f64);
  const Reference engine = single_process(config, t, Device::cuda(0), dtype);
  const Distributed d = run_simulated(c, t, Device::cuda(0), split_steps);
  auto check = [&](const Tensor& actual, const Tensor& single_gpu, const Tensor& expected, const char* name) {
    const double error = max_abs_error(actual, expected);
    const double engine_error = max_abs_error(single_gpu, expected);
    EXPECT_LE(error, 2 * engine_error + rounding_tolerance(expected, dtype))
        << name << " max |error| " << error << " (single GPU " << engine_error << ")";
  };
  check(d.forward.out, engine.forward.out, exact.forward.out, "out");
  EXPECT_LE(relative_l2_error(d.forward.lse, exact.forward.lse), 1e-5) << "lse";
  check(d.grads.dq, engine.grads.dq, exact.grads.dq, "dq");
  check(d.grads.dk, engine.grads.dk, exact.grads.dk, "dk");
  check(d.grads.dv, engine.grads.dv, exact.grads.dv, "dv");
}

TEST_F(SequenceParallelCuda, RandomConfigurationsMatchTheSingleProcessResult) {
  for (std::uint64_t seed = 900; seed < 960; ++seed) {
    // Every other case in the two steps that overlap the exchange on GPUs.
    expect_close_to_reference(cuda_distributed_case(seed, 1 + static_cast<int>(seed % 6)), seed % 3 == 0 ? DType::f16 : DType::bf16,
                              seed, seed % 2 == 0);
    if (HasFailure()) return;
  }
}

TEST_F(SequenceParallelCuda, DenseAttentionSpanningEveryRank) {
  for (const bool causal : {false, true}) {
    DistributedCase c;
    c.problem.batch = 2;
    c.problem.seq_len = 700;
    c.problem.heads = 4;
    c.problem.kv_heads = 2;
    c.problem.head_dim = 64;
    c.problem.patterns = {{INT64_MAX, 1}};
    c.problem.causal = causal;
    c.problem.scale = 0.125;
    c.lengths = {130, 300, 70, 200};
    expect_close_to_reference(c, DType::bf16, 11);
  }
}

TEST_F(SequenceParallelCuda, ZigzagCausalLongNetPatterns) {
  DistributedCase c;
  c.problem.batch = 1;
  c.problem.seq_len = 2048;
  c.problem.heads = 8;
  c.problem.kv_heads = 8;
  c.problem.head_dim = 128;
  c.problem.patterns = {{256, 1}, {512, 2}, {2048, 4}};
  c.problem.causal = true;
  c.problem.scale = 1.0 / std::sqrt(128.0);
  c.order = SequenceOrder::zigzag;
  c.lengths = SequenceLayout::zigzag(2048, 4).local_lengths();
  expect_close_to_reference(c, DType::bf16, 12);
  expect_close_to_reference(c, DType::bf16, 12, true);
}

TEST_F(SequenceParallelCuda, UnsupportedDtypeIsAClearError) {
  const DistributedCase c = cuda_distributed_case(5, 2);
  const ProblemTensors t = random_tensors(c.problem, 5, DType::f32);
  try {
    run_simulated(c, t, Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype f32"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet::testing
