// The model kernels against naive references written from their definitions (fp64):
// layer norm (and the column sums of its dx), GELU (erf form), cross-entropy with an
// ignore index, AdamW (PyTorch's update), gradient norm, RoPE/xPos (torchscale's formulas;
// q·k depends only on the distance), and the counter-based dropout mask.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <numeric>
#include <random>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/kernels/adamw.hpp"
#include "longnet/kernels/counter_rng.hpp"
#include "longnet/kernels/cross_entropy.hpp"
#include "longnet/kernels/embedding.hpp"
#include "longnet/kernels/gelu.hpp"
#include "longnet/kernels/layer_norm.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/rotary.hpp"
#include "longnet/nn/functional.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/positional.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::nn;

ParameterOptions options_of(DType dtype) {
  ParameterOptions options;
  options.dtype = options.compute_dtype = dtype;
  return options;
}

// A LayerNorm over 37 columns with random weight and bias.
LayerNorm random_layer_norm(const ParameterOptions& options) {
  LayerNorm norm("ln", 37, 1e-5, options);
  norm.parameters()[0]->value.copy_from(Tensor::randn({37}, 3));
  norm.parameters()[1]->value.copy_from(Tensor::randn({37}, 4));
  return norm;
}

TEST(ModelKernels, LayerNormMatchesDefinitionInBothPrecisions) {
  for (DType dtype : {DType::f32, DType::f64}) {
    const ParameterOptions options = options_of(dtype);
    LayerNorm norm = random_layer_norm(options);
    const Tensor x = Tensor::randn({5, 37}, 1, dtype);
    const auto y = norm.infer(x).to_vector<double>();
    const auto xv = x.to_vector<double>();
    const auto w = norm.parameters()[0]->value.to_vector<double>(), b = norm.parameters()[1]->value.to_vector<double>();
    for (int r = 0; r < 5; ++r) {
      double mean = 0, var = 0;
      for (int c = 0; c < 37; ++c) mean += xv[static_cast<std::size_t>(r * 37 + c)] / 37;
      for (int c = 0; c < 37; ++c) var += std::pow(xv[static_cast<std::size_t>(r * 37 + c)] - mean, 2) / 37;
      for (int c = 0; c < 37; ++c) {
        const auto i = static_cast<std::size_t>(r * 37 + c);
        const double expected =
            (xv[i] - mean) / std::sqrt(var + 1e-5) * w[static_cast<std::size_t>(c)] + b[static_cast<std::size_t>(c)];
        EXPECT_NEAR(y[i], expected, dtype == DType::f64 ? 1e-12 : 2e-5);
      }
    }
  }
}

// kernels/layer_norm.hpp allows dresidual to alias dx (the residual stream's gradient
// updated in place): the same bits as a separate output.
TEST(ModelKernels, LayerNormResidualGradientMayAliasDx) {
  const std::int64_t rows = 6, columns = 37;
  const Tensor x = Tensor::randn({rows, columns}, 1, DType::f64), dout = Tensor::randn({rows, columns}, 2, DType::f64);
  const Tensor residual = Tensor::randn({rows, columns}, 3, DType::f64);
  const auto run = [&](bool alias) {
    Tensor out = Tensor::empty({rows, columns}, DType::f64), mean = Tensor::empty({rows}, DType::f64);
    Tensor rstd = Tensor::empty({rows}, DType::f64), dx = residual.clone();
    const Tensor separate = residual.clone();
    kernels::LayerNormParams p;
    p.rows = rows, p.columns = columns, p.dtype = DType::f64, p.input = kernels::LayerNormInput::gelu;
    p.x = x.data(), p.x_row_stride = columns, p.out = out.data(), p.out_row_stride = columns;
    p.mean = mean.data(), p.rstd = rstd.data();
    p.dout = dout.data(), p.dout_row_stride = columns, p.dx = dx.data(), p.dx_row_stride = columns;
    p.dresidual = alias ? dx.data() : separate.data(), p.dresidual_row_stride = columns;
    kernels::layer_norm_forward_cpu(p);
    kernels::layer_norm_backward_cpu(p);
    return dx.to_vector<double>();
  };
  EXPECT_EQ(run(true), run(false));
}

// dx_column_sums (kernels/layer_norm.hpp): the column sums of the dx written (the residual
// gradient included), as stored, added onto what the vector held; on the CPU the same bits as
// the Linear bias gradient's pass over that dx. dx, dweight and dbias are as without them.
TEST(ModelKernels, LayerNormSumsTheColumnsOfDx) {
  // 150 rows: two whole reduction chunks and part of a third; padded rows.
  const std::int64_t rows = 150, columns = 37, stride = 40;
  struct Case {
    bool gelu, residual, affine;
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const Case& k :
         {Case{false, false, true}, Case{false, true, true}, Case{true, true, true}, Case{true, false, false}}) {
      SCOPED_TRACE(str(dtype_name(dtype), k.gelu ? " gelu input" : "", k.residual ? " residual gradient" : "",
                       k.affine ? "" : " no affine"));
      const Tensor x = Tensor::randn({rows, stride}, 1, dtype), dout = Tensor::randn({rows, stride}, 2, dtype);
      const Tensor dresidual = Tensor::randn({rows, stride}, 3, dtype);
      const Tensor weight = Tensor::randn({columns}, 4, dtype), bias = Tensor::randn({columns}, 5, dtype);
      const Tensor start = Tensor::randn({columns}, 6, dtype);
      struct Gradients {
        Tensor dx, dweight, dbias, dx_column_sums;
      };
      const auto run = [&](bool dx_column_sums) {
        Gradients g{Tensor::zeros({rows, stride}, dtype), start.clone(), start.clone(), start.clone()};
        Tensor out = Tensor::empty({rows, stride}, dtype), mean = Tensor::empty({rows}, dtype);
        Tensor rstd = Tensor::empty({rows}, dtype);
        kernels::LayerNormParams p;
        p.rows = rows, p.columns = columns, p.dtype = dtype;
        p.input = k.gelu ? kernels::LayerNormInput::gelu : kernels::LayerNormInput::identity;
        p.x = x.data(), p.x_row_stride = stride, p.out = out.data(), p.out_row_stride = stride;
        p.weight = k.affine ? weight.data() : nullptr, p.bias = k.affine ? bias.data() : nullptr;
        p.mean = mean.data(), p.rstd = rstd.data();
        p.dout = dout.data(), p.dout_row_stride = stride, p.dx = g.dx.data(), p.dx_row_stride = stride;
        if (k.residual) p.dresidual = dresidual.data(), p.dresidual_row_stride = stride;
        p.dweight = k.affine ? g.dweight.data() : nullptr, p.dbias = k.affine ? g.dbias.data() : nullptr;
        p.dx_column_sums = dx_column_sums ? g.dx_column_sums.data() : nullptr;
        kernels::layer_norm_forward_cpu(p);
        kernels::layer_norm_backward_cpu(p);
        return g;
      };
      const Gradients with_sums = run(true), without = run(false);
      const std::vector<double> dx = with_sums.dx.to_vector<double>();
      const std::vector<double> sums = with_sums.dx_column_sums.to_vector<double>();
      const std::vector<double> start_values = start.to_vector<double>();
      for (std::int64_t c = 0; c < columns; ++c) {
        double expected = start_values[static_cast<std::size_t>(c)], magnitude = std::abs(expected);
        for (std::int64_t r = 0; r < rows; ++r) {
          expected += dx[static_cast<std::size_t>(r * stride + c)];
          magnitude += std::abs(dx[static_cast<std::size_t>(r * stride + c)]);
        }
        // f32: the sum rounded to f32 and added to the start (two roundings).
        EXPECT_NEAR(sums[static_cast<std::size_t>(c)], expected, (dtype == DType::f64 ? 1e-13 : 2.5e-7) * magnitude)
            << "column " << c;
      }
      EXPECT_EQ(dx, without.dx.to_vector<double>());
      EXPECT_EQ(with_sums.dweight.to_vector<double>(), without.dweight.to_vector<double>());
      EXPECT_EQ(with_sums.dbias.to_vector<double>(), without.dbias.to_vector<double>());
      EXPECT_EQ(without.dx_column_sums.to_vector<double>(), start_values);  // not asked for: untouched
      // What the Linear whose output gradient dx is would have summed for its bias.
      Tensor linear_dbias = start.clone();
      kernels::LinearParams linear;
      linear.rows = rows, linear.in_features = 1, linear.out_features = columns, linear.dtype = dtype;
      linear.dy = with_sums.dx.data(), linear.dy_row_stride = stride, linear.dbias = linear_dbias.data();
      kernels::linear_backward_cpu(linear);
      EXPECT_EQ(sums, linear_dbias.to_vector<double>());
    }
  }
}

// nn::LayerNorm's segment_dots (kernels/layer_norm.hpp): per (batch, segment, position)
// the dot product of the returned gradient and the input over the segment's columns, in
// (B, S, N) order — the attention backward's delta when the input is its output; the
// gradients are those of a call without them; a gelu input or a wrong shape is refused.
TEST(ModelKernels, LayerNormSegmentDotsAreTheGradientsDotTheInput) {
  const std::int64_t B = 2, N = 5, C = 48;
  for (const DType dtype : {DType::f64, DType::f32}) {
    for (const std::int64_t S : {4, 3, 1}) {
      for (const bool residual : {false, true}) {
        SCOPED_TRACE(str(dtype_name(dtype), " segments ", S, residual ? " residual gradient" : ""));
        ParameterOptions options;
        options.dtype = options.compute_dtype = dtype;
        LayerNorm norm("ln", C, 1e-5, options);
        norm.parameters()[0]->value.copy_from(Tensor::randn({C}, 3));
        const Tensor x = Tensor::randn({B, N, C}, 1, dtype), dy = Tensor::randn({B, N, C}, 2, dtype);
        const Tensor dresidual = Tensor::randn({B, N, C}, 4, dtype);
        (void)norm.forward(x);
        const Tensor plain = norm.backward(dy, residual ? &dresidual : nullptr);
        Tensor dots = Tensor::full({B, S, N}, 7.0, dtype);
        const Tensor dx = norm.backward(dy, residual ? &dresidual : nullptr, nullptr, &dots);
        EXPECT_EQ(dx.to_vector<double>(), plain.to_vector<double>());
        const std::vector<double> dxv = dx.to_vector<double>(), xv = x.to_vector<double>(),
                                  got = dots.to_vector<double>();
        const std::int64_t width = C / S;
        for (std::int64_t b = 0; b < B; ++b) {
          for (std::int64_t s = 0; s < S; ++s) {
            for (std::int64_t n = 0; n < N; ++n) {
              double expected = 0, magnitude = 0;
              for (std::int64_t c = s * width; c < (s + 1) * width; ++c) {
                const auto i = static_cast<std::size_t>((b * N + n) * C + c);
                expected += dxv[i] * xv[i];
                magnitude += std::abs(dxv[i] * xv[i]);
              }
              EXPECT_NEAR(got[static_cast<std::size_t>((b * S + s) * N + n)], expected,
                          (dtype == DType::f64 ? 1e-13 : 1e-6) * (1 + magnitude))
                  << "b " << b << " segment " << s << " n " << n;
            }
          }
        }
      }
    }
  }
  ParameterOptions options;
  LayerNorm norm("ln", C, 1e-5, options);
  const Tensor x = Tensor::randn({B, N, C}, 1), dy = Tensor::randn({B, N, C}, 2);
  (void)norm.forward(x);
  Tensor wrong = Tensor::zeros({B, 5, N}, DType::f32);  // 5 does not divide 48
  EXPECT_THROW((void)norm.backward(dy, nullptr, nullptr, &wrong), Error);
  Tensor transposed = Tensor::zeros({B, N, 4}, DType::f32);
  EXPECT_THROW((void)norm.backward(dy, nullptr, nullptr, &transposed), Error);
  (void)norm.forward(x, kernels::LayerNormInput::gelu);
  Tensor dots = Tensor::zeros({B, 4, N}, DType::f32);
  EXPECT_THROW((void)norm.backward(dy, nullptr, nullptr, &dots), Error);
}

TEST(ModelKernels, GeluIsTheErfForm) {
  const Tensor x = Tensor::from_vector<double>({-3.0, -1.0, -0.1, 0.0, 0.5, 2.0}, {6});
  Tensor out = Tensor::empty({6}, DType::f64);
  kernels::GeluParams p{.count = 6, .dtype = DType::f64, .x = x.data(), .out = out.data()};
  kernels::gelu_forward_cpu(p);
  const auto xv = x.to_vector<double>(), y = out.to_vector<double>();
  for (std::size_t i = 0; i < xv.size(); ++i) {
    EXPECT_NEAR(y[i], xv[i] * 0.5 * std::erfc(-xv[i] / std::numbers::sqrt2), 1e-15);
  }
  EXPECT_NEAR(y[5], 1.9544997361036416, 1e-15);  // gelu(2) with erf; the tanh form gives 1.9545976
}

TEST(ModelKernels, CrossEntropyWithIgnoreIndex) {
  const std::int64_t rows = 4, vocab = 7;
  const Tensor logits = Tensor::randn({rows, vocab}, 1, DType::f64);
  const Tensor targets = Tensor::from_vector<std::int32_t>({3, -100, 0, 6}, {rows});
  const CrossEntropyResult r = cross_entropy_forward(logits, targets, -100);
  EXPECT_EQ(r.count, 3);
  const auto l = logits.to_vector<double>();
  double expected = 0;
  const int t[] = {3, -100, 0, 6};
  for (int row = 0; row < rows; ++row) {
    if (t[row] < 0) continue;
    double sum = 0;
    for (int v = 0; v < vocab; ++v) sum += std::exp(l[static_cast<std::size_t>(row * vocab + v)]);
    expected += std::log(sum) - l[static_cast<std::size_t>(row * vocab + t[row])];
  }
  ASSERT_TRUE(r.loss_sum.device().is_cpu());
  EXPECT_NEAR(r.loss_sum.item(), expected, 1e-12);
  // Gradient of 0.5 * summed loss: 0.5 * (softmax - onehot), 0 on the ignored row.
  const auto d = cross_entropy_backward(logits, targets, r, -100, 0.5).to_vector<double>();
  for (int row = 0; row < rows; ++row) {
    double sum = 0;
    for (int v = 0; v < vocab; ++v) sum += std::exp(l[static_cast<std::size_t>(row * vocab + v)]);
    for (int v = 0; v < vocab; ++v) {
      const double p = std::exp(l[static_cast<std::size_t>(row * vocab + v)]) / sum;
      const double e = t[row] < 0 ? 0.0 : 0.5 * (p - (v == t[row] ? 1.0 : 0.0));
      EXPECT_NEAR(d[static_cast<std::size_t>(row * vocab + v)], e, 1e-14);
    }
  }
  EXPECT_THROW(cross_entropy_forward(logits, Tensor::from_vector<std::int32_t>({3, 7, 0, 0}, {rows}), -100), Error);
  // Checked and counted on a host copy of the targets: the same result; a bad id in the
  // copy, or a copy of another length or dtype, is an error.
  const CrossEntropyResult h = cross_entropy_forward(logits, targets, targets.clone(), -100);
  EXPECT_EQ(h.count, r.count);
  EXPECT_EQ(h.loss_sum.item(), r.loss_sum.item());
  EXPECT_THROW(cross_entropy_forward(logits, targets, Tensor::from_vector<std::int32_t>({3, 7, 0, 0}, {rows}), -100),
               Error);
  EXPECT_THROW(cross_entropy_forward(logits, targets, Tensor::from_vector<std::int32_t>({3, 0, 0}, {3}), -100), Error);
  EXPECT_THROW(cross_entropy_forward(logits, targets, targets.to(DType::i64), -100), Error);
}

TEST(ModelKernels, AdamWMatchesPyTorchsUpdate) {
  std::vector<double> param{0.5, -1.0, 2.0}, grad{0.1, -0.2, 0.3}, m(3, 0.0), v(3, 0.0);
  std::vector<double> ref_p = param, ref_m = m, ref_v = v;
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, gs = 0.5;
  for (int step = 1; step <= 3; ++step) {
    kernels::AdamWParams p{.count = 3,
                           .dtype = DType::f64,
                           .param = param.data(),
                           .grad = grad.data(),
                           .m = m.data(),
                           .v = v.data(),
                           .lr = lr,
                           .beta1 = b1,
                           .beta2 = b2,
                           .eps = eps,
                           .weight_decay = wd,
                           .grad_scale = gs,
                           .step = step};
    kernels::adamw_step_cpu(p);
    for (std::size_t i = 0; i < 3; ++i) {
      const double g = grad[i] * gs;
      ref_p[i] *= 1 - lr * wd;
      ref_m[i] = b1 * ref_m[i] + (1 - b1) * g;
      ref_v[i] = b2 * ref_v[i] + (1 - b2) * g * g;
      const double mhat = ref_m[i] / (1 - std::pow(b1, step)), vhat = ref_v[i] / (1 - std::pow(b2, step));
      ref_p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      EXPECT_NEAR(param[i], ref_p[i], 1e-15);
      EXPECT_DOUBLE_EQ(m[i], ref_m[i]);
    }
  }
}

// A clip read from memory (clip_sum_of_squares: what a training step queues) updates with
// the bits of the clip factor passed as grad_scale, in f32 and f64, active or not; a sum
// that is not finite changes nothing.
TEST(ModelKernels, AdamWClipFromMemoryEqualsTheHostFactor) {
  for (const DType dtype : {DType::f32, DType::f64}) {
    for (const double sum : {0.04, 9.0, 1e30}) {  // norms 0.2 (below 1.5), 3 and 1e15 (clipped)
      const Tensor p0 = Tensor::randn({1001}, 3, dtype), g = Tensor::randn({1001}, 4, dtype);
      Tensor pa = p0.clone(), pb = p0.clone();
      Tensor ma = Tensor::zeros({1001}, dtype), va = Tensor::zeros({1001}, dtype);
      Tensor mb = ma.clone(), vb = va.clone();
      for (int step = 1; step <= 2; ++step) {
        kernels::AdamWParams k{.count = 1001, .dtype = dtype, .lr = 0.01, .weight_decay = 0.1, .step = step};
        k.grad = g.data();
        k.param = pa.data(), k.m = ma.data(), k.v = va.data();
        k.grad_scale = 0.5 * kernels::clip_factor(std::sqrt(sum), 1.5);
        kernels::adamw_step_cpu(k);
        k.param = pb.data(), k.m = mb.data(), k.v = vb.data();
        k.grad_scale = 0.5;
        k.clip_sum_of_squares = &sum;
        k.clip_max_norm = 1.5;
        kernels::adamw_step_cpu(k);
      }
      for (const auto& [a, b] : {std::pair{pa, pb}, std::pair{ma, mb}, std::pair{va, vb}}) {
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << dtype_name(dtype) << " sum " << sum;
      }
      EXPECT_NE(std::memcmp(pa.data(), p0.data(), p0.nbytes()), 0);  // it did update
    }
    for (const double sum : {std::nan(""), std::numeric_limits<double>::infinity()}) {
      const Tensor p0 = Tensor::randn({100}, 3, dtype), g = Tensor::randn({100}, 4, dtype);
      Tensor p = p0.clone(), m = Tensor::full({100}, 0.25, dtype), v = Tensor::full({100}, 0.5, dtype);
      kernels::AdamWParams k{.count = 100, .dtype = dtype, .lr = 0.01, .weight_decay = 0.1, .step = 3};
      k.param = p.data(), k.grad = g.data(), k.m = m.data(), k.v = v.data();
      k.clip_sum_of_squares = &sum;
      k.clip_max_norm = 1.0;
      kernels::adamw_step_cpu(k);
      EXPECT_EQ(std::memcmp(p.data(), p0.data(), p0.nbytes()), 0);
      EXPECT_EQ(m.to_vector<double>(), std::vector<double>(100, 0.25));
      EXPECT_EQ(v.to_vector<double>(), std::vector<double>(100, 0.5));
    }
  }
}

TEST(ModelKernels, SumOfSquaresIsIndependentOfThreads) {
  const Tensor x = Tensor::randn({100003}, 9, DType::f32);
  const double a = sum_of_squares(x);
  double expected = 0;
  for (float f : x.to_vector<float>()) expected += static_cast<double>(f) * f;
  EXPECT_NEAR(a, expected, 1e-9 * expected);
  // Queued: the same bits, as an f64 tensor of one element on the tensors' device.
  const Tensor queued = queue_sum_of_squares({x});
  ASSERT_TRUE(queued.device().is_cpu() && queued.dtype() == DType::f64 && queued.numel() == 1);
  EXPECT_EQ(queued.item(), a);
  EXPECT_THROW(queue_sum_of_squares({}), Error);
}

// Rotary encodings from the definition (torchscale's rotate_every_two, interleaved pairs).
double rotated(const std::vector<double>& x, std::int64_t D, std::int64_t i, double pos, double factor) {
  const std::int64_t j = i / 2;
  const double angle = pos * std::pow(10000.0, -2.0 * static_cast<double>(j) / static_cast<double>(D));
  const double x0 = x[static_cast<std::size_t>(2 * j)], x1 = x[static_cast<std::size_t>(2 * j + 1)];
  return factor *
         (i % 2 == 0 ? x0 * std::cos(angle) - x1 * std::sin(angle) : x1 * std::cos(angle) + x0 * std::sin(angle));
}

TEST(ModelKernels, RotaryEncodingsMatchTheirDefinitions) {
  const std::int64_t N = 6, D = 8;
  const Tensor x = Tensor::randn({1, N, 1, D}, 3, DType::f64);
  const auto xv = x.to_vector<double>();
  for (PositionalEncoding kind : {PositionalEncoding::rope, PositionalEncoding::xpos}) {
    for (bool key : {false, true}) {
      const PositionalConfig config{.kind = kind, .xpos_scale_base = 4.0};
      const auto y = apply_positional(config, x, 10, 12.0, key).to_vector<double>();
      for (std::int64_t n = 0; n < N; ++n) {
        const std::vector<double> row(xv.begin() + n * D, xv.begin() + (n + 1) * D);
        for (std::int64_t i = 0; i < D; ++i) {
          const double zeta = (2.0 * static_cast<double>(i / 2) + 0.4 * D) / (1.4 * D);
          const double exponent = (static_cast<double>(10 + n) - 12.0) / 4.0;
          const double factor = kind == PositionalEncoding::rope ? 1.0 : std::pow(zeta, key ? -exponent : exponent);
          EXPECT_NEAR(y[static_cast<std::size_t>(n * D + i)], rotated(row, D, i, static_cast<double>(10 + n), factor),
                      1e-12);
        }
      }
    }
  }
}

TEST(ModelKernels, XposScoresDependOnlyOnDistanceAndTheCenterCancels) {
  const std::int64_t D = 16;
  const Tensor q = Tensor::randn({1, 1, 1, D}, 1, DType::f64);
  const Tensor k = Tensor::randn({1, 1, 1, D}, 2, DType::f64);
  const PositionalConfig config{.kind = PositionalEncoding::xpos, .xpos_scale_base = 32.0};
  auto score = [&](std::int64_t pq, std::int64_t pk, double center) {
    const auto a = apply_positional(config, q, pq, center, false).to_vector<double>();
    const auto b = apply_positional(config, k, pk, center, true).to_vector<double>();
    double s = 0;
    for (std::int64_t i = 0; i < D; ++i) s += a[static_cast<std::size_t>(i)] * b[static_cast<std::size_t>(i)];
    return s;
  };
  EXPECT_NEAR(score(17, 9, 0.0), score(17, 9, 40.0), 1e-10);
  EXPECT_NEAR(score(17, 9, 5.0), score(117, 109, 60.0), 1e-9);
  EXPECT_GT(std::abs(score(17, 9, 0.0) - score(17, 1, 0.0)), 1e-3);  // but the distance matters
}

// q and k through one call: each equals its own apply_positional (k with the key factor),
// for every encoding (none copies), with fewer kv heads and a strided q; mismatched pairs
// are refused naming what differs.
TEST(ModelKernels, QueryKeyPositionsInOneCallEqualTwoCalls) {
  const Tensor qkv = Tensor::randn({2, 7, 5, 8}, 4);
  const Tensor q = qkv.slice(2, 0, 3), k = qkv.slice(2, 3, 4);
  for (PositionalEncoding kind : {PositionalEncoding::none, PositionalEncoding::rope, PositionalEncoding::xpos}) {
    SCOPED_TRACE(to_string(kind));
    const PositionalConfig config{.kind = kind, .xpos_scale_base = 8.0};
    Tensor q_out = Tensor::empty(q.shape(), q.dtype()), k_out = Tensor::empty(k.shape(), k.dtype());
    apply_positional_query_key_into(config, q, q_out, k, k_out, 5, 6.0);
    EXPECT_EQ(q_out.to_vector<float>(), apply_positional(config, q, 5, 6.0, false).to_vector<float>());
    EXPECT_EQ(k_out.to_vector<float>(), apply_positional(config, k, 5, 6.0, true).to_vector<float>());
    const auto [q_new, k_new] = apply_positional_query_key(config, q, k, 5, 6.0);
    EXPECT_EQ(q_new.to_vector<float>(), q_out.to_vector<float>());
    EXPECT_EQ(k_new.to_vector<float>(), k_out.to_vector<float>());
  }
  const PositionalConfig xpos{.kind = PositionalEncoding::xpos};
  const Tensor short_k = Tensor::randn({2, 6, 1, 8}, 5);
  Tensor q_out = Tensor::empty(q.shape(), q.dtype()), k_out = Tensor::empty(short_k.shape(), short_k.dtype());
  try {
    apply_positional_query_key_into(xpos, q, q_out, short_k, k_out, 0, 0.0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seq_len"), std::string::npos) << e.what();
  }
  kernels::RotaryParams query, key;
  query.batch = key.batch = 1, query.seq_len = key.seq_len = 4, query.head_dim = key.head_dim = 8;
  key.downscale = true, key.center = 2.0;
  try {
    kernels::check_query_key_maps(query, key);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key.center = 2 differs from query.center = 0"), std::string::npos)
        << e.what();
  }
  key.center = 0.0, key.downscale = false;
  EXPECT_THROW(kernels::check_query_key_maps(query, key), Error);
  key.downscale = true;
  EXPECT_NO_THROW(kernels::check_query_key_maps(query, key));
}

// Found on the H100: training 131,072 tokens with xPos (scale_base 512) gave a NaN loss at
// step 0, the key factor (7/2)^(65536/512) = e^160 being infinite in float32.
TEST(ModelKernels, XposRefusesSequencesWhoseFactorsOverflow) {
  const PositionalConfig config{.kind = PositionalEncoding::xpos, .xpos_scale_base = 512.0};
  const Tensor x = Tensor::randn({1, 4, 1, 8}, 1);
  // 65,536 tokens (distance 32,768: e^80) still fit float32; 131,072 (e^160) do not.
  EXPECT_NO_THROW(apply_positional(config, x, 0, xpos_center(65536), true));
  try {
    apply_positional(config, x, 0, xpos_center(131072), true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const char* part :
         {"positional = xpos", "65536 tokens from the centre", "range of f32", "rope", "xpos_scale_base"}) {
      EXPECT_NE(what.find(part), std::string::npos) << part << " in: " << what;
    }
  }
  // float64 has room, and so have a larger scale base and RoPE.
  EXPECT_NO_THROW(apply_positional(config, x.to(DType::f64), 0, xpos_center(131072), true));
  EXPECT_NO_THROW(
      apply_positional({.kind = PositionalEncoding::xpos, .xpos_scale_base = 1024.0}, x, 0, xpos_center(131072), true));
  EXPECT_NO_THROW(apply_positional({.kind = PositionalEncoding::rope}, x, 0, xpos_center(1 << 30), true));
  const auto y = apply_positional(config, x, 0, xpos_center(65536), true).to_vector<float>();
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
}

TEST(ModelKernels, DropoutMaskIsAPureFunctionOfItsCounters) {
  const std::uint64_t key = kernels::counter_key(1, 2, 3);
  EXPECT_EQ(key, kernels::counter_key(1, 2, 3));
  EXPECT_NE(key, kernels::counter_key(1, 2, 4));
  EXPECT_NE(key, kernels::counter_key(1, 3, 3));
  EXPECT_NE(key, kernels::counter_key(2, 2, 3));
  double mean = 0;
  for (std::uint64_t i = 0; i < 100000; ++i) {
    const float u = kernels::counter_uniform(key, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    mean += u / 100000.0;
  }
  EXPECT_NEAR(mean, 0.5, 0.01);
}

TEST(ModelKernels, EmbeddingRowsSortedByTokenForTheCudaBackward) {
  const std::vector<std::int32_t> tokens{3, 1, 3, 0, 1};
  std::vector<std::int32_t> order;
  std::vector<std::int64_t> run_starts;
  kernels::embedding_sort_rows(tokens.data(), 5, order, run_starts);
  EXPECT_EQ(order, (std::vector<std::int32_t>{3, 1, 4, 0, 2}));  // stable: equal tokens keep their row order
  EXPECT_EQ(run_starts, (std::vector<std::int64_t>{0, 1, 3, 5}));
}

// The counting sort (ids over a narrow range) and the comparison sort (few ids over a wide
// range) both give what a stable sort by id gives.
TEST(ModelKernels, EmbeddingRowSortMatchesAStableSortOnRandomIds) {
  std::mt19937 rng(7);
  for (const std::int32_t range : {1, 2, 256, 50000, 2000000000}) {
    for (const std::int64_t count : {1, 2, 17, 4096}) {
      std::vector<std::int32_t> tokens(static_cast<std::size_t>(count));
      for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(range));
      std::vector<std::int32_t> expected(tokens.size());
      std::iota(expected.begin(), expected.end(), 0);
      std::stable_sort(expected.begin(), expected.end(),
                       [&](std::int32_t a, std::int32_t b) { return tokens[a] < tokens[b]; });
      std::vector<std::int64_t> expected_runs;
      for (std::int64_t i = 0; i < count; ++i) {
        if (i == 0 || tokens[expected[i]] != tokens[expected[i - 1]]) expected_runs.push_back(i);
      }
      expected_runs.push_back(count);
      std::vector<std::int32_t> order;
      std::vector<std::int64_t> run_starts;
      kernels::embedding_sort_rows(tokens.data(), count, order, run_starts);
      EXPECT_EQ(order, expected) << "range " << range << ", count " << count;
      EXPECT_EQ(run_starts, expected_runs) << "range " << range << ", count " << count;
    }
  }
}

TEST(ModelKernels, LinearBackwardAccumulateAddsDyWIntoTheGradient) {
  ParameterOptions options;
  options.dtype = options.compute_dtype = DType::f64;
  Linear linear("l", 6, 5, true, options);
  const Tensor x = Tensor::randn({2, 3, 6}, 1, DType::f64), dy = Tensor::randn({2, 3, 5}, 2, DType::f64);
  linear.forward(x);
  const Tensor dx = linear.backward(dy);
  Tensor sum = Tensor::randn({2, 3, 6}, 3, DType::f64);
  const std::vector<double> expected = add(sum, dx).to_vector<double>();
  linear.backward_accumulate(dy, sum);
  const std::vector<double> actual = sum.to_vector<double>();
  for (std::size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-13);
  Tensor wrong = Tensor::zeros({2, 3, 5}, DType::f64);
  EXPECT_THROW(linear.backward_accumulate(dy, wrong), Error);
}

// A LayerNorm's output with the ones column (OnesColumn::present): the same values as
// without, each row followed by 1, 0, ..., 0 in memory; a Linear over it gives the outputs
// and gradients of a Linear over a contiguous copy; a Linear refuses a ones column its
// input has no room for.
TEST(ModelKernels, LayerNormOnesColumnFeedsALinear) {
  const std::int64_t kOnes = kernels::kOnesColumns;
  for (DType dtype : {DType::f32, DType::f64}) {
    const ParameterOptions options = options_of(dtype);
    LayerNorm norm = random_layer_norm(options);
    const Tensor x = Tensor::randn({2, 5, 37}, 1, dtype);
    const Tensor plain = norm.forward(x);
    const Tensor padded = norm.forward(x, kernels::LayerNormInput::identity, OnesColumn::present);
    ASSERT_EQ(padded.shape(), plain.shape());
    EXPECT_EQ(padded.stride(1), 37 + kOnes);
    EXPECT_EQ(padded.contiguous().to_vector<double>(), plain.to_vector<double>());
    const std::vector<double> rows = padded.as_strided({10, 37 + kOnes}, {37 + kOnes, 1}, 0).to_vector<double>();
    for (std::int64_t r = 0; r < 10; ++r) {
      for (std::int64_t j = 0; j < kOnes; ++j) {
        EXPECT_EQ(rows[static_cast<std::size_t>(r * (37 + kOnes) + 37 + j)], j == 0 ? 1.0 : 0.0) << r << " " << j;
      }
    }

    Linear with_ones("l", 37, 6, true, options), contiguous("l", 37, 6, true, options);
    const Tensor dy = Tensor::randn({2, 5, 6}, 2, dtype);
    const Tensor y1 = with_ones.forward(padded, nullptr, OnesColumn::present), y2 = contiguous.forward(plain);
    EXPECT_EQ(y1.to_vector<double>(), y2.to_vector<double>());
    const Tensor dx1 = with_ones.backward(dy), dx2 = contiguous.backward(dy);
    const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
    EXPECT_LE(relative_l2_error(dx1.to(DType::f64), dx2.to(DType::f64)), tol);
    for (std::size_t i = 0; i < 2; ++i) {
      const Tensor g1 = with_ones.parameters()[i]->grad.to(DType::f64),
                   g2 = contiguous.parameters()[i]->grad.to(DType::f64);
      EXPECT_LE(relative_l2_error(g1, g2), tol) << with_ones.parameters()[i]->name;
    }
    try {
      Linear("l", 37, 6, true, options).forward(plain, nullptr, OnesColumn::present);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("row stride of at least in_features + 8 = 45; it has 37"), std::string::npos)
          << e.what();
    }
  }
}

// The gradient stream is CUDA's: on the CPU a scope changes nothing, even with the switch
// on (the CUDA behaviour: ModelCuda.ParameterGradientsOnTheGradientStream*).
TEST(ModelKernels, GradientStreamIsInactiveOnTheCpu) {
  const bool was_enabled = gradient_stream_enabled();
  set_gradient_stream(true);
  EXPECT_TRUE(gradient_stream_enabled());
  const ParameterOptions options = options_of(DType::f64);
  Linear inside("l", 9, 4, true, options), outside("l", 9, 4, true, options);
  const Tensor x = Tensor::randn({3, 9}, 1, DType::f64), dy = Tensor::randn({3, 4}, 2, DType::f64);
  (void)inside.forward(x);
  (void)outside.forward(x);
  Tensor dx_inside;
  {
    GradientStream scope(Device::cpu());
    EXPECT_EQ(GradientStream::active(Device::cpu()), nullptr);
    dx_inside = inside.backward(dy);
    scope.join();
  }
  EXPECT_EQ(dx_inside.to_vector<double>(), outside.backward(dy).to_vector<double>());
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(inside.parameters()[i]->grad.to_vector<double>(), outside.parameters()[i]->grad.to_vector<double>());
  }
  set_gradient_stream(false);
  EXPECT_FALSE(gradient_stream_enabled());
  set_gradient_stream(was_enabled);
}

TEST(ModelKernels, SumOfSquaresOfManyTensorsIsTheSumOfEach) {
  std::vector<Tensor> tensors;
  double expected = 0;
  for (int i = 0; i < 5; ++i) {
    tensors.push_back(Tensor::randn({i * 1000 + 3}, static_cast<std::uint64_t>(i)));
    expected += sum_of_squares(tensors.back());
  }
  EXPECT_EQ(sum_of_squares(tensors), expected);  // the same additions in the same order
  EXPECT_EQ(sum_of_squares(std::vector<Tensor>{}), 0.0);
  tensors.push_back(Tensor::randn({3}, 9, DType::f64));
  EXPECT_THROW(sum_of_squares(tensors), Error);  // one dtype for all
}

}  // namespace
}  // namespace longnet::testing
