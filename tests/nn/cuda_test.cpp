// The CUDA model kernels and the nn/model layers on CUDA against the CPU (DESIGN 5): every
// kernel on random inputs in f32 and f64, then whole layers, a LongNetLM training step,
// cached decoding and a checkpoint loaded onto the GPU. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/kernels/adamw.hpp"
#include "longnet/kernels/dilated_decode.hpp"
#include "longnet/model/longnet_lm.hpp"
#include "longnet/model/optimizer.hpp"
#include "longnet/nn/activation.hpp"
#include "longnet/nn/embedding.hpp"
#include "longnet/nn/feed_forward.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/positional.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::nn;

class ModelCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

double tolerance(DType dtype) { return dtype == DType::f64 ? 1e-12 : 2e-5; }

ParameterOptions options(DType dtype, Device device) {
  ParameterOptions o;
  o.dtype = o.compute_dtype = dtype;
  o.device = device;
  o.seed = 5;
  return o;
}

// Copies a module's parameter values from `from` to `to` (the same architecture).
void copy_parameters(const Module& from, const Module& to) {
  const auto a = from.parameters(), b = to.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) b[i]->value.copy_from(a[i]->value);
}

void expect_close(const Tensor& cuda, const Tensor& cpu, double tol, const std::string& what) {
  EXPECT_LE(relative_l2_error(cuda.to(Device::cpu()), cpu), tol) << what;
}

TEST_F(ModelCuda, ElementwiseKernelsMatchTheCpu) {
  for (DType dtype : {DType::f32, DType::f64}) {
    const Device gpu = Device::cuda(0);
    const Tensor x = Tensor::randn({7, 33}, 1, dtype), y = Tensor::randn({7, 33}, 2, dtype);
    expect_close(add(x.to(gpu), y.to(gpu), 0.5), add(x, y, 0.5), tolerance(dtype), "add");
    EXPECT_NEAR(sum_of_squares(x.to(gpu)), sum_of_squares(x), 1e-9 * sum_of_squares(x));
    GELU g1, g2;
    expect_close(g1.forward(x.to(gpu)), g2.forward(x), tolerance(dtype), "gelu");
    expect_close(g1.backward(y.to(gpu)), g2.backward(y), tolerance(dtype), "gelu backward");
    Dropout d1(0.3, 4), d2(0.3, 4);
    const ForwardContext context{.training = true, .seed = 2, .step = 3};
    EXPECT_EQ(d1.forward(x.to(gpu), context).to(Device::cpu()).to_vector<double>(),
              d2.forward(x, context).to_vector<double>());  // the same mask, bit for bit
    EXPECT_EQ(d1.backward(y.to(gpu)).to(Device::cpu()).to_vector<double>(), d2.backward(y).to_vector<double>());
    const Tensor logits = Tensor::randn({9, 40}, 3, dtype);
    const Tensor targets = Tensor::from_vector<std::int32_t>({0, 5, -100, 39, 2, 2, 7, 1, 0}, {9});
    const CrossEntropyResult a = cross_entropy_forward(logits.to(gpu), targets.to(gpu), -100);
    const CrossEntropyResult b = cross_entropy_forward(logits, targets, -100);
    ASSERT_TRUE(a.loss_sum.device().is_cuda());  // left on the device
    EXPECT_NEAR(a.loss_sum.item(), b.loss_sum.item(), tolerance(dtype) * 10);
    const CrossEntropyResult c = cross_entropy_forward(logits.to(gpu), targets.to(gpu), targets, -100);
    EXPECT_EQ(c.loss_sum.item(), a.loss_sum.item());  // the host copy only checks and counts
    EXPECT_EQ(c.count, a.count);
    expect_close(cross_entropy_backward(logits.to(gpu), targets.to(gpu), a, -100, 0.25),
                 cross_entropy_backward(logits, targets, b, -100, 0.25), tolerance(dtype), "cross-entropy backward");
    const PositionalConfig xpos{.kind = PositionalEncoding::xpos, .xpos_scale_base = 16.0};
    const Tensor q = Tensor::randn({2, 11, 3, 8}, 4, dtype);
    for (bool key : {false, true}) {
      for (bool transpose : {false, true}) {
        expect_close(apply_positional(xpos, q.to(gpu), 5, 9.0, key, transpose),
                     apply_positional(xpos, q, 5, 9.0, key, transpose), tolerance(dtype), "xpos");
      }
    }
  }
}

TEST_F(ModelCuda, LayersMatchTheCpu) {
  for (DType dtype : {DType::f32, DType::f64}) {
    const Device gpu = Device::cuda(0);
    const Tensor x = Tensor::randn({3, 5, 16}, 1, dtype), dy16 = Tensor::randn({3, 5, 16}, 2, dtype);
    {
      Linear cpu("l", 16, 24, true, options(dtype, Device::cpu())), cuda("l", 16, 24, true, options(dtype, gpu));
      const Tensor dy = Tensor::randn({3, 5, 24}, 3, dtype);
      expect_close(cuda.forward(x.to(gpu)), cpu.forward(x), tolerance(dtype), "linear");
      expect_close(cuda.backward(dy.to(gpu)), cpu.backward(dy), tolerance(dtype), "linear dx");
      expect_close(cuda.weight()->grad, cpu.weight()->grad, tolerance(dtype), "linear dW");
      expect_close(cuda.bias()->grad, cpu.bias()->grad, tolerance(dtype), "linear db");
      // A residual added by the GEMM (C = residual, D = y; f64: the fallback without the
      // bias epilogue), with and without a bias.
      const Tensor residual = Tensor::randn({3, 5, 24}, 4, dtype), residual_gpu = residual.to(gpu);
      expect_close(cuda.forward(x.to(gpu), &residual_gpu), cpu.forward(x, &residual), tolerance(dtype),
                   "linear with a residual");
      Linear cpu_nb("l", 16, 24, false, options(dtype, Device::cpu())),
          cuda_nb("l", 16, 24, false, options(dtype, gpu));
      expect_close(cuda_nb.forward(x.to(gpu), &residual_gpu), cpu_nb.forward(x, &residual), tolerance(dtype),
                   "linear without bias with a residual");
    }
    {
      LayerNorm cpu("n", 16, 1e-5, options(dtype, Device::cpu())), cuda("n", 16, 1e-5, options(dtype, gpu));
      expect_close(cuda.forward(x.to(gpu)), cpu.forward(x), tolerance(dtype), "layer norm");
      expect_close(cuda.backward(dy16.to(gpu)), cpu.backward(dy16), tolerance(dtype), "layer norm dx");
      for (std::size_t i = 0; i < 2; ++i) {
        expect_close(cuda.parameters()[i]->grad, cpu.parameters()[i]->grad, tolerance(dtype), "layer norm dparams");
      }
    }
    {
      Embedding cpu("e", 10, 16, 1.5, options(dtype, Device::cpu())), cuda("e", 10, 16, 1.5, options(dtype, gpu));
      const Tensor tokens = Tensor::from_vector<std::int32_t>({1, 3, 3, 9, 0, 1}, {2, 3});
      const Tensor dout = Tensor::randn({2, 3, 16}, 6, dtype);
      expect_close(cuda.forward(tokens), cpu.forward(tokens), tolerance(dtype), "embedding");
      cuda.backward(dout.to(gpu));
      cpu.backward(dout);
      expect_close(cuda.weight()->grad, cpu.weight()->grad, tolerance(dtype), "embedding backward");
    }
    {
      std::vector<double> param{0.5, -1.0, 2.0}, grad{0.1, -0.2, 0.3};
      const Tensor p_cpu = Tensor::from_vector(param, {3}).to(dtype), g = Tensor::from_vector(grad, {3}).to(dtype);
      Tensor p_gpu = p_cpu.to(gpu), m_gpu = Tensor::zeros({3}, dtype, gpu), v_gpu = Tensor::zeros({3}, dtype, gpu);
      Tensor m_cpu = Tensor::zeros({3}, dtype), v_cpu = Tensor::zeros({3}, dtype);
      const Tensor g_gpu = g.to(gpu);
      for (int step = 1; step <= 3; ++step) {
        kernels::AdamWParams k{
            .count = 3, .dtype = dtype, .lr = 0.01, .weight_decay = 0.1, .grad_scale = 0.5, .step = step};
        k.param = p_gpu.data(), k.grad = g_gpu.data(), k.m = m_gpu.data(), k.v = v_gpu.data();
        kernels::adamw_step_cuda(k);
        k.param = p_cpu.data(), k.grad = g.data(), k.m = m_cpu.data(), k.v = v_cpu.data();
        kernels::adamw_step_cpu(k);
      }
      expect_close(p_gpu, p_cpu, tolerance(dtype), "adamw");
    }
  }
}

// A batch of many parameters gives every parameter exactly the bits of stepping it alone
// (the batch's chunk-to-parameter mapping and grouping): sizes around a block's chunk,
// empty parameters, with and without a bf16 copy, two weight decays, and more parameters
// than one launch holds. (LayersMatchTheCpu checks the arithmetic against the CPU.)
// Parameter gradients on the gradient stream (GradientStream): a Linear's weight and bias
// gradients, with and without a bias and the ones column, and a LayerNorm backward's column
// totals (its parameters' and dx's column sums) have the bits of one stream, under mixed
// precision. Between each backward and the join the current stream frees dy and writes new
// tensors of its size (memory the pool would hand out again if the side stream's reads
// were not waited for).
TEST_F(ModelCuda, ParameterGradientsOnTheGradientStreamHaveTheBitsOfOneStream) {
  const Device gpu = Device::cuda(0);
  ParameterOptions o = options(DType::f32, gpu);
  o.compute_dtype = DType::bf16;
  const std::int64_t rows = 8192, in = 512, out = 1024;
  const bool was_enabled = gradient_stream_enabled();
  for (bool ones : {false, true}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE(str(ones ? "ones column" : "plain input", bias ? ", bias" : ", no bias"));
      std::vector<std::vector<double>> results[2];
      for (int overlap = 0; overlap < 2; ++overlap) {
        set_gradient_stream(overlap == 1);
        LayerNorm norm("n", in, 1e-5, o);
        Linear linear("l", in, out, bias, o);
        const Tensor x = Tensor::randn({2, rows / 2, in}, 1, DType::f32).to(gpu).to(DType::bf16);
        const Tensor normed =
            norm.forward(x, kernels::LayerNormInput::identity, ones ? OnesColumn::present : OnesColumn::absent);
        (void)linear.forward(normed, nullptr, ones ? OnesColumn::present : OnesColumn::absent);
        Tensor dx;
        Tensor dx_norm, dx_column_sums = Tensor::zeros({in}, DType::f32, gpu);
        {
          GradientStream scope(gpu);
          EXPECT_EQ(GradientStream::active(gpu), overlap == 1 ? &scope : nullptr);
          for (int pass = 0; pass < 2; ++pass) {  // two passes: the gradients accumulate
            Tensor dy = Tensor::randn({2, rows / 2, out}, 2 + pass, DType::f32).to(gpu).to(DType::bf16);
            dx = linear.backward(dy);
            dy = Tensor();  // freed (on the current stream) while the side stream may still read it
            dx_norm = norm.backward(dx, nullptr, &dx_column_sums);
            for (int k = 0; k < 3; ++k) (void)Tensor::full({2, rows / 2, out}, 7.0 + k, DType::bf16, gpu);
          }
        }
        EXPECT_EQ(GradientStream::active(gpu), nullptr);
        results[overlap].push_back(dx.to(Device::cpu()).to_vector<double>());
        results[overlap].push_back(dx_norm.to(Device::cpu()).to_vector<double>());
        results[overlap].push_back(dx_column_sums.to_vector<double>());
        for (const ParameterPtr& p : linear.parameters()) results[overlap].push_back(p->grad.to_vector<double>());
        for (const ParameterPtr& p : norm.parameters()) results[overlap].push_back(p->grad.to_vector<double>());
      }
      set_gradient_stream(was_enabled);
      ASSERT_EQ(results[1].size(), results[0].size());
      for (std::size_t i = 0; i < results[0].size(); ++i) EXPECT_EQ(results[1][i], results[0][i]) << "tensor " << i;
    }
  }
}

// A scope opened inside another is part of it (LongNetLM's scope around stack_backward's):
// the open one stays active, takes the inner one's work and joins it at its own end.
TEST_F(ModelCuda, ANestedGradientStreamIsPartOfTheOpenOne) {
  const Device gpu = Device::cuda(0);
  const bool was_enabled = gradient_stream_enabled();
  set_gradient_stream(true);
  ParameterOptions o = options(DType::f32, gpu);
  Linear nested("l", 64, 32, true, o), plain("l", 64, 32, true, o);
  for (std::size_t i = 0; i < 2; ++i) plain.parameters()[i]->value.copy_from(nested.parameters()[i]->value);
  const Tensor x = Tensor::randn({128, 64}, 1, DType::f32).to(gpu);
  const Tensor dy = Tensor::randn({128, 32}, 2, DType::f32).to(gpu);
  (void)nested.forward(x);
  (void)plain.forward(x);
  {
    GradientStream outer(gpu);
    {
      GradientStream inner(gpu);
      EXPECT_EQ(GradientStream::active(gpu), &outer);
      (void)nested.backward(dy);  // its dW on the outer scope's side stream
    }
    EXPECT_EQ(GradientStream::active(gpu), &outer);
  }
  EXPECT_EQ(GradientStream::active(gpu), nullptr);
  (void)plain.backward(dy);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(nested.parameters()[i]->grad.to_vector<double>(), plain.parameters()[i]->grad.to_vector<double>());
  }
  set_gradient_stream(was_enabled);
}

TEST_F(ModelCuda, BatchedAdamWMatchesOneLaunchPerParameterBitwise) {
  const Device gpu = Device::cuda(0);
  for (const DType dtype : {DType::f32, DType::f64}) {
    const std::vector<std::int64_t> sizes{1, 0, 767, 8192, 8193, 100003, 3, 24577};
    std::vector<Tensor> batched, single, grads, m_b, v_b, m_s, v_s, copy_b, copy_s;
    std::vector<kernels::AdamWParams> batch, alone;
    for (int i = 0; i < 90; ++i) {
      const std::int64_t n = sizes[static_cast<std::size_t>(i) % sizes.size()];
      const Tensor p = Tensor::randn({n}, 100 + static_cast<std::uint64_t>(i), dtype);
      batched.push_back(p.to(gpu));
      single.push_back(p.to(gpu));
      grads.push_back(Tensor::randn({n}, 500 + static_cast<std::uint64_t>(i), dtype).to(gpu));
      for (auto* state : {&m_b, &v_b, &m_s, &v_s}) state->push_back(Tensor::zeros({n}, dtype, gpu));
      const bool copy = dtype == DType::f32 && i % 3 != 0;
      copy_b.push_back(copy ? Tensor::zeros({n}, DType::bf16, gpu) : Tensor());
      copy_s.push_back(copy ? Tensor::zeros({n}, DType::bf16, gpu) : Tensor());
    }
    for (int step = 1; step <= 3; ++step) {
      batch.clear();
      for (std::size_t i = 0; i < batched.size(); ++i) {
        kernels::AdamWParams k{.count = batched[i].numel(),
                               .dtype = dtype,
                               .lr = 0.01,
                               .weight_decay = i % 2 ? 0.1 : 0.0,
                               .grad_scale = 0.5,
                               .step = step};
        k.grad = grads[i].data();
        k.param = batched[i].data(), k.m = m_b[i].data(), k.v = v_b[i].data();
        if (copy_b[i].defined()) k.param_copy = copy_b[i].data();
        batch.push_back(k);
        k.param = single[i].data(), k.m = m_s[i].data(), k.v = v_s[i].data();
        k.param_copy = copy_s[i].defined() ? copy_s[i].data() : nullptr;
        kernels::adamw_step_cuda(k);
      }
      kernels::adamw_step_many_cuda(batch.data(), batch.size());
    }
    for (std::size_t i = 0; i < batched.size(); ++i) {
      const Tensor pairs[][2] = {{batched[i], single[i]}, {m_b[i], m_s[i]}, {v_b[i], v_s[i]}, {copy_b[i], copy_s[i]}};
      for (const auto& pair : pairs) {
        if (!pair[0].defined()) continue;
        const Tensor a = pair[0].to(Device::cpu()), b = pair[1].to(Device::cpu());
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << dtype_name(dtype) << " parameter " << i;
      }
    }
  }
}

// The clip factor computed by the kernels from a sum of squares in device memory (what a
// training step queues) has the host's bits: a batch of parameters updated so equals the
// same batch with the host's factor as grad_scale, clipped or not, f32 (with and without
// a bf16 copy) and f64. A sum that is not finite changes no parameter, moment or copy.
TEST_F(ModelCuda, AdamWClipReadOnTheDeviceEqualsTheHostFactor) {
  const Device gpu = Device::cuda(0);
  for (const DType dtype : {DType::f32, DType::f64}) {
    for (const double sum : {0.04, 9.0, 1e30, std::nan(""), std::numeric_limits<double>::infinity()}) {
      SCOPED_TRACE(str(dtype_name(dtype), " sum ", sum));
      const Tensor on_device = Tensor::full({1}, sum, DType::f64).to(gpu);
      const std::vector<std::int64_t> sizes{1, 767, 8192, 100003, 5};
      std::vector<Tensor> host_p, device_p, grads, state, copies;
      std::vector<kernels::AdamWParams> by_host, by_device;
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        const std::int64_t n = sizes[i];
        const Tensor p = Tensor::randn({n}, 40 + i, dtype).to(gpu);
        host_p.push_back(p.clone());
        device_p.push_back(p.clone());
        grads.push_back(Tensor::randn({n}, 60 + i, dtype).to(gpu));
        for (int s = 0; s < 4; ++s) state.push_back(Tensor::full({n}, 0.25, dtype, gpu));
        const bool copy = dtype == DType::f32 && i % 2 == 0;
        for (int s = 0; s < 2; ++s) copies.push_back(copy ? Tensor::zeros({n}, DType::bf16, gpu) : Tensor());
        kernels::AdamWParams k{.count = n, .dtype = dtype, .lr = 0.01, .weight_decay = i % 2 ? 0.1 : 0.0, .step = 2};
        k.grad = grads.back().data();
        k.param = host_p.back().data(), k.m = state[4 * i].data(), k.v = state[4 * i + 1].data();
        k.param_copy = copy ? copies[2 * i].data() : nullptr;
        k.grad_scale = 0.5 * kernels::clip_factor(std::sqrt(sum), 1.5);
        by_host.push_back(k);
        k.param = device_p.back().data(), k.m = state[4 * i + 2].data(), k.v = state[4 * i + 3].data();
        k.param_copy = copy ? copies[2 * i + 1].data() : nullptr;
        k.grad_scale = 0.5;
        k.clip_sum_of_squares = on_device.data<double>();
        k.clip_max_norm = 1.5;
        by_device.push_back(k);
      }
      const bool finite = std::isfinite(sum);
      if (finite) kernels::adamw_step_many_cuda(by_host.data(), by_host.size());
      kernels::adamw_step_many_cuda(by_device.data(), by_device.size());
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        const Tensor pairs[][2] = {{host_p[i], device_p[i]},
                                   {state[4 * i], state[4 * i + 2]},
                                   {state[4 * i + 1], state[4 * i + 3]},
                                   {copies[2 * i], copies[2 * i + 1]}};
        for (const auto& pair : pairs) {
          if (!pair[0].defined()) continue;
          const Tensor a = pair[0].to(Device::cpu()), b = pair[1].to(Device::cpu());
          ASSERT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << "parameter " << i;
        }
        if (!finite) {  // the host side did not run: both are as they started
          EXPECT_EQ(state[4 * i + 2].to_vector<double>(),
                    std::vector<double>(static_cast<std::size_t>(sizes[i]), 0.25));
        }
      }
    }
  }
}

// Parameters whose pointers are 16-byte aligned take the kernel's packed loop (four f32 or
// two f64 a thread); the same values one element off alignment take the scalar loop: the
// same bits (parameter, moments, the f32 parameters' bf16 copy), for sizes with and without
// a tail shorter than a pack.
TEST_F(ModelCuda, AdamWPackedAndScalarPathsAgreeBitwise) {
  const Device gpu = Device::cuda(0);
  for (const DType dtype : {DType::f32, DType::f64}) {
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{4}, std::int64_t{767}, std::int64_t{8192},
                                 std::int64_t{8195}, std::int64_t{100003}}) {
      for (const bool copy : {false, true}) {
        if (copy && dtype != DType::f32) continue;  // bf16 copies are of f32 parameters
        // Buffers of n + 1: the aligned view starts at element 0, the other at element 1.
        auto pair_of = [&](const Tensor& values, DType type) {
          Tensor a = Tensor::zeros({n + 1}, type, gpu), b = Tensor::zeros({n + 1}, type, gpu);
          Tensor aligned = a.as_strided({n}, {1}, 0), shifted = b.as_strided({n}, {1}, 1);
          if (values.defined()) {
            aligned.copy_from(values);
            shifted.copy_from(values);
          }
          return std::pair{aligned, shifted};
        };
        const auto param = pair_of(Tensor::randn({n}, 7, dtype), dtype);
        const auto grad = pair_of(Tensor::randn({n}, 8, dtype), dtype);
        const auto m = pair_of(Tensor(), dtype), v = pair_of(Tensor(), dtype);
        const auto copies = pair_of(Tensor(), DType::bf16);
        for (int step = 1; step <= 3; ++step) {
          for (const bool first : {true, false}) {
            kernels::AdamWParams k{
                .count = n, .dtype = dtype, .lr = 0.01, .weight_decay = 0.1, .grad_scale = 0.5, .step = step};
            auto pick = [&](const std::pair<Tensor, Tensor>& x) { return first ? x.first.data() : x.second.data(); };
            k.param = pick(param), k.grad = pick(grad), k.m = pick(m), k.v = pick(v);
            if (copy) k.param_copy = pick(copies), k.copy_dtype = DType::bf16;
            kernels::adamw_step_cuda(k);
          }
        }
        for (const auto* x : {&param, &m, &v, &copies}) {
          const Tensor a = x->first.contiguous().to(Device::cpu()), b = x->second.contiguous().to(Device::cpu());
          ASSERT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0)
              << dtype_name(dtype) << " n " << n << " copy " << copy;
        }
      }
    }
  }
}

model::LongNetLMConfig gpu_config(DType dtype, double dropout = 0.1) {
  model::LongNetLMConfig c;
  c.vocab_size = 37;
  c.d_model = 64;
  c.heads = 4;
  c.kv_heads = 2;
  c.layers = 2;
  c.ffn_dim = 96;
  c.segment_lengths = {8, 16, 64};
  c.dilation_rates = {1, 2, 4};
  c.dropout = dropout;
  c.dtype = c.compute_dtype = dtype;
  return c;
}

// A forward/backward/AdamW step of LongNetLM on CUDA equals the CPU's within DESIGN 5's
// tolerances (needs the CUDA dilated attention for f32/f64). Without dropout the LayerNorm
// backwards sum out_proj's and fc2's bias gradients (nn::LayerGradientSums).
TEST_F(ModelCuda, LongNetLMTrainingStepMatchesTheCpu) {
  for (const auto& [dtype, dropout] : {std::pair{DType::f32, 0.1}, std::pair{DType::f64, 0.1},
                                       std::pair{DType::f32, 0.0}, std::pair{DType::f64, 0.0}}) {
    SCOPED_TRACE(str(dtype_name(dtype), " dropout ", dropout));
    model::LongNetLM cpu(gpu_config(dtype, dropout), Device::cpu(), 3);
    model::LongNetLM cuda(gpu_config(dtype, dropout), Device::cuda(0), 3);
    copy_parameters(cpu, cuda);
    const Tensor tokens = Tensor::from_vector<std::int32_t>(std::vector<std::int32_t>(2 * 70, 5), {2, 70});
    std::vector<std::int32_t> ids(2 * 70);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 7 + i / 3) % 37);
    const model::Batch batch{Tensor::from_vector(ids, {2, 70}), tokens, Tensor()};
    const nn::ForwardContext context{.training = true, .seed = 1, .step = 2};
    const double loss_cpu = cpu.forward_loss(batch, context).loss;
    const double loss_gpu = cuda.forward_loss(batch, context).loss;
    EXPECT_NEAR(loss_gpu, loss_cpu, dtype == DType::f64 ? 1e-10 : 1e-4);
    cpu.backward();
    cuda.backward();
    const auto pc = cpu.parameters(), pg = cuda.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) {
      expect_close(pg[i]->grad, pc[i]->grad, dtype == DType::f64 ? 1e-9 : 1e-4, pc[i]->name);
    }
    model::AdamW ocpu(pc, {}), ogpu(pg, {});
    ocpu.step(1e-3);
    ogpu.step(1e-3);
    for (std::size_t i = 0; i < pc.size(); ++i) {
      expect_close(pg[i]->value, pc[i]->value, dtype == DType::f64 ? 1e-10 : 1e-5, pc[i]->name);
    }
  }
}

TEST_F(ModelCuda, CachedDecodeMatchesTheCpu) {
  for (DType dtype : {DType::f32, DType::f64}) {
    model::LongNetLM cpu(gpu_config(dtype), Device::cpu(), 3), cuda(gpu_config(dtype), Device::cuda(0), 3);
    copy_parameters(cpu, cuda);
    auto state_cpu = cpu.make_decode_state(2, 40), state_gpu = cuda.make_decode_state(2, 40);
    std::vector<std::int32_t> prompt;
    for (std::int32_t i = 0; i < 2 * 11; ++i) prompt.push_back((5 * i) % 37);
    const Tensor prompt_tokens = Tensor::from_vector(prompt, {2, 11});
    expect_close(cuda.prefill(prompt_tokens, state_gpu), cpu.prefill(prompt_tokens, state_cpu),
                 dtype == DType::f64 ? 1e-10 : 1e-4, "prefill");
    for (std::int32_t p = 11; p < 40; ++p) {
      const Tensor tokens = Tensor::from_vector<std::int32_t>({p % 37, (3 * p) % 37}, {2});
      expect_close(cuda.decode(tokens, state_gpu), cpu.decode(tokens, state_cpu), dtype == DType::f64 ? 1e-10 : 1e-4,
                   str("position ", p));
    }
  }
}

}  // namespace
}  // namespace longnet::testing
