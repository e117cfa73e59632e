// Mixed precision on CUDA, kernel by kernel and layer by layer: bf16 activations (and the
// bf16 compute copies of the weights) against fp64 references computed on the CPU from the
// same bf16-rounded inputs. Each kernel computes in f32 and rounds its result to bf16 once,
// so the rule is DESIGN 5's for half precision: an error at most 2x that of rounding the
// exact result once (2 * 2^-8 relative, bf16's unit roundoff being 2^-8), plus a small
// absolute floor for f32 arithmetic; outputs kept in f32 (gradients of the master weights,
// statistics, losses) are held to f32 accuracy. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "longnet/kernels/adamw.hpp"
#include "longnet/kernels/elementwise.hpp"
#include "longnet/nn/activation.hpp"
#include "longnet/nn/embedding.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/positional.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::nn;

constexpr double kBf16UnitRoundoff = 1.0 / 256;  // 2^-8

class MixedPrecisionCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
  const Device gpu = Device::cuda(0);
};

ParameterOptions mixed(Device device) {
  ParameterOptions o;
  o.dtype = DType::f32;
  o.compute_dtype = DType::bf16;
  o.device = device;
  o.seed = 5;
  return o;
}

ParameterOptions exact() {
  ParameterOptions o;
  o.dtype = o.compute_dtype = DType::f64;
  o.seed = 5;
  return o;
}

// x rounded to bf16, as an f64 CPU tensor (the inputs both sides see).
Tensor rounded(const Tensor& x) { return x.to(Device::cpu(), DType::bf16).to(DType::f64); }

// Every element within `roundings` bf16 roundings of the reference, 2x (DESIGN 5).
void expect_bf16_close(const Tensor& actual, const Tensor& reference, const std::string& what, int roundings = 1) {
  ASSERT_EQ(actual.dtype(), DType::bf16) << what;
  const std::vector<double> a = actual.to_vector<double>(), r = reference.to_vector<double>();
  ASSERT_EQ(a.size(), r.size()) << what;
  double scale = 0;
  for (double v : r) scale = std::max(scale, std::abs(v));
  std::size_t bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double bound = 2.0 * roundings * kBf16UnitRoundoff * std::abs(r[i]) + 1e-5 * scale;
    const double error = std::abs(a[i] - r[i]);
    if (!(error <= bound)) ++bad;
    worst = std::max(worst, error / (std::abs(r[i]) + 1e-30));
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << a.size() << " elements off (worst relative " << worst << ")";
}

// Kept in f32 (master-weight gradients, statistics): f32 accuracy on the same inputs.
void expect_f32_close(const Tensor& actual, const Tensor& reference, const std::string& what) {
  EXPECT_EQ(actual.dtype(), DType::f32) << what;
  EXPECT_LE(relative_l2_error(actual.to(Device::cpu()), reference), 2e-5) << what;
}

TEST_F(MixedPrecisionCuda, ElementwiseKernelsRoundOnce) {
  const Tensor x = rounded(Tensor::randn({7, 41}, 1)), y = rounded(Tensor::randn({7, 41}, 2));
  const Tensor xg = x.to(gpu, DType::bf16), yg = y.to(gpu, DType::bf16);
  expect_bf16_close(add(xg, yg, 0.5), add(x, y, 0.5), "add");
  // Misaligned pointers take the single-element path of the same kernel.
  {
    Tensor out = Tensor::empty({7 * 41 - 1}, DType::bf16, gpu);
    kernels::AddParams p{.count = 7 * 41 - 1, .dtype = DType::bf16};
    p.a = static_cast<const std::uint16_t*>(xg.data()) + 1;
    p.b = static_cast<const std::uint16_t*>(yg.data()) + 1;
    p.alpha = -2.0;
    p.out = out.data();
    kernels::add_cuda(p);
    const Tensor expected = add(x.view({-1}).slice(0, 1, 7 * 41), y.view({-1}).slice(0, 1, 7 * 41), -2.0);
    expect_bf16_close(out, expected, "add (unaligned)");
  }
  GELU g_gpu, g_cpu;
  expect_bf16_close(g_gpu.forward(xg), g_cpu.forward(x), "gelu");
  expect_bf16_close(g_gpu.backward(yg), g_cpu.backward(y), "gelu backward");
  Dropout d_gpu(0.3, 4), d_cpu(0.3, 4);
  const ForwardContext context{.training = true, .seed = 2, .step = 3};
  expect_bf16_close(d_gpu.forward(xg, context), d_cpu.forward(x, context), "dropout (the CPU's mask)");
  expect_bf16_close(d_gpu.backward(yg), d_cpu.backward(y), "dropout backward");
  Tensor scaled = xg.clone();
  scale_in_place(scaled, 0.37);
  expect_bf16_close(scaled, add(x, x, -0.63), "scale");
  const PositionalConfig xpos{.kind = PositionalEncoding::xpos, .xpos_scale_base = 16.0};
  const Tensor q = rounded(Tensor::randn({2, 11, 3, 8}, 4));
  for (bool key : {false, true}) {
    for (bool transpose : {false, true}) {
      expect_bf16_close(apply_positional(xpos, q.to(gpu, DType::bf16), 5, 9.0, key, transpose),
                        apply_positional(xpos, q, 5, 9.0, key, transpose), "xpos");
    }
  }
}

TEST_F(MixedPrecisionCuda, CrossEntropyOfBf16LogitsIsComputedInF32) {
  // A warp a row: vocabularies wider than its 32 lanes and narrower (lanes with no logit).
  for (std::int64_t vocab : {300, 20}) {
    SCOPED_TRACE(vocab);
    const Tensor logits = rounded(Tensor::randn({9, vocab}, 3));
    const Tensor targets = Tensor::from_vector<std::int32_t>({0, 5, -100, 19, 2, 2, 7, 1, 0}, {9});
    const CrossEntropyResult a = cross_entropy_forward(logits.to(gpu, DType::bf16), targets.to(gpu), -100);
    const CrossEntropyResult b = cross_entropy_forward(logits, targets, -100);
    EXPECT_EQ(a.lse.dtype(), DType::f32);
    EXPECT_NEAR(a.loss_sum.item(), b.loss_sum.item(), 1e-5 * std::abs(b.loss_sum.item()));
    expect_bf16_close(cross_entropy_backward(logits.to(gpu, DType::bf16), targets.to(gpu), a, -100, 0.25),
                      cross_entropy_backward(logits, targets, b, -100, 0.25), "dlogits");
  }
}

TEST_F(MixedPrecisionCuda, LayerNormKeepsF32StatisticsAndWeights) {
  for (std::int64_t columns : {64, 37}) {  // whole 16-byte packs per lane, and single elements
    SCOPED_TRACE(columns);
    LayerNorm cuda("n", columns, 1e-5, mixed(gpu)), cpu("n", columns, 1e-5, exact());
    cuda.parameters()[0]->value.copy_from(Tensor::randn({columns}, 7));
    cuda.parameters()[1]->value.copy_from(Tensor::randn({columns}, 8));
    for (std::size_t i = 0; i < 2; ++i) cpu.parameters()[i]->value.copy_from(cuda.parameters()[i]->value);
    const Tensor x = rounded(Tensor::randn({3, 5, columns}, 1)), dy = rounded(Tensor::randn({3, 5, columns}, 2));
    expect_bf16_close(cuda.forward(x.to(gpu, DType::bf16)), cpu.forward(x), "layer norm");
    expect_bf16_close(cuda.backward(dy.to(gpu, DType::bf16)), cpu.backward(dy), "layer norm dx");
    for (std::size_t i = 0; i < 2; ++i) {
      expect_f32_close(cuda.parameters()[i]->grad, cpu.parameters()[i]->grad, "layer norm dweight/dbias");
    }
  }
}

TEST_F(MixedPrecisionCuda, LinearUsesBf16CopiesAndAccumulatesF32Gradients) {
  for (std::int64_t in : {64, 40}) {  // aligned rows, and rows of 80 bytes
    SCOPED_TRACE(in);
    Linear cuda("l", in, 24, true, mixed(gpu)), cpu("l", in, 24, true, exact());
    for (std::size_t i = 0; i < 2; ++i) {
      const ParameterPtr p = cuda.parameters()[i];  // a copy: parameters() returns a new vector
      // The GEMM reads the bf16 copy: the reference gets the rounded master weights.
      EXPECT_EQ(p->compute.dtype(), DType::bf16);
      EXPECT_EQ(p->compute.to_vector<double>(), rounded(p->value).to_vector<double>());
      cpu.parameters()[i]->value.copy_from(p->compute);
    }
    const Tensor x = rounded(Tensor::randn({3, 5, in}, 1)), dy = rounded(Tensor::randn({3, 5, 24}, 3));
    const Tensor residual = rounded(Tensor::randn({3, 5, 24}, 4)), residual_gpu = residual.to(gpu, DType::bf16);
    expect_bf16_close(cuda.forward(x.to(gpu, DType::bf16), &residual_gpu), cpu.forward(x, &residual),
                      "linear with a residual (C = residual, D = y)");
    expect_bf16_close(cuda.forward(x.to(gpu, DType::bf16)), cpu.forward(x), "linear (bias in the epilogue)");
    const Tensor dx = cuda.backward(dy.to(gpu, DType::bf16));
    expect_bf16_close(dx, cpu.backward(dy), "linear dx");
    expect_f32_close(cuda.weight()->grad, cpu.weight()->grad, "linear dW");
    expect_f32_close(cuda.bias()->grad, cpu.bias()->grad, "linear db");
    // dx += dy W inside the GEMM: one rounding of the exact sum.
    Tensor sum = dx.clone();
    cuda.backward_accumulate(dy.to(gpu, DType::bf16), sum);
    expect_bf16_close(sum, add(rounded(dx), cpu.backward(dy)), "linear dx accumulated");
  }
}

TEST_F(MixedPrecisionCuda, EmbeddingReadsTheF32TableAndAccumulatesF32) {
  for (std::int64_t dim : {16, 12}) {  // rows of whole 16-byte packs, and single elements
    SCOPED_TRACE(dim);
    Embedding cuda("e", 10, dim, 1.5, mixed(gpu)), cpu("e", 10, dim, 1.5, exact());
    cpu.weight()->value.copy_from(cuda.weight()->value);
    const Tensor tokens = Tensor::from_vector<std::int32_t>({1, 3, 3, 9, 0, 1, 3}, {1, 7});
    expect_bf16_close(cuda.forward(tokens), cpu.forward(tokens), "embedding");
    const Tensor dout = rounded(Tensor::randn({1, 7, dim}, 6));
    cuda.backward(dout.to(gpu, DType::bf16));
    cpu.backward(dout);
    expect_f32_close(cuda.weight()->grad, cpu.weight()->grad, "embedding backward");
  }
}

TEST_F(MixedPrecisionCuda, AdamWWritesTheBf16CopyInTheSamePass) {
  const std::int64_t n = 1000;
  const Tensor start = Tensor::randn({n}, 1).to(gpu), g = Tensor::randn({n}, 2).to(gpu);
  Tensor p1 = start.clone(), p2 = start.clone(), copy = Tensor::empty({n}, DType::bf16, gpu);
  Tensor m1 = Tensor::zeros({n}, DType::f32, gpu), v1 = Tensor::zeros({n}, DType::f32, gpu);
  Tensor m2 = m1.clone(), v2 = v1.clone();
  for (int step = 1; step <= 3; ++step) {
    kernels::AdamWParams k{.count = n, .dtype = DType::f32, .lr = 0.01, .weight_decay = 0.1, .step = step};
    k.grad = g.data();
    k.param = p1.data(), k.m = m1.data(), k.v = v1.data();
    kernels::adamw_step_cuda(k);
    k.param = p2.data(), k.m = m2.data(), k.v = v2.data(), k.param_copy = copy.data();
    kernels::adamw_step_cuda(k);
  }
  EXPECT_EQ(p2.to_vector<float>(), p1.to_vector<float>());  // the master update is unchanged
  EXPECT_EQ(copy.to_vector<double>(), rounded(p2).to_vector<double>());
}

TEST_F(MixedPrecisionCuda, SumOfSquaresOfManyTensorsIsOneRepeatableSum) {
  std::vector<Tensor> cpu, cuda;
  for (int i = 0; i < 70; ++i) {  // more than one launch's worth of tensors
    cpu.push_back(Tensor::randn({(i * 37) % 300}, static_cast<std::uint64_t>(i)));
    cuda.push_back(cpu.back().to(gpu));
  }
  const double a = sum_of_squares(cuda), b = sum_of_squares(cuda), expected = sum_of_squares(cpu);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(a, expected, 1e-12 * expected);
}

}  // namespace
}  // namespace longnet::testing
