// The oracle itself: its gradients agree with finite differences of its forward, and it
// reduces to dense attention where DESIGN says it must.
#include <gtest/gtest.h>

#include <cmath>

#include "support/dilated_oracle.hpp"
#include "support/random_problems.hpp"

namespace longnet::testing {
namespace {

// sum(out * weights): a scalar loss whose gradient w.r.t. out is `weights`.
double loss(const DilatedProblem& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weights) {
  const auto out = dilated_oracle_forward(p, q, k, v).out.to_vector<double>();
  const auto w = weights.to_vector<double>();
  double total = 0;
  for (std::size_t i = 0; i < out.size(); ++i) total += out[i] * w[i];
  return total;
}

void check_gradient(const DilatedProblem& p, std::uint64_t seed) {
  ProblemTensors t = random_tensors(p, seed, DType::f64);
  const OracleGradients g = dilated_oracle_backward(p, t.q, t.k, t.v, t.dout);
  const double h = 1e-6;
  struct Input {
    Tensor* tensor;
    const Tensor* grad;
    const char* name;
  };
  for (const Input& input : {Input{&t.q, &g.dq, "q"}, Input{&t.k, &g.dk, "k"}, Input{&t.v, &g.dv, "v"}}) {
    double* x = input.tensor->data<double>();
    const auto analytic = input.grad->to_vector<double>();
    for (std::int64_t i = 0; i < input.tensor->numel(); ++i) {
      const double saved = x[i];
      x[i] = saved + h;
      const double up = loss(p, t.q, t.k, t.v, t.dout);
      x[i] = saved - h;
      const double down = loss(p, t.q, t.k, t.v, t.dout);
      x[i] = saved;
      const double numeric = (up - down) / (2 * h);
      ASSERT_NEAR(analytic[static_cast<std::size_t>(i)], numeric, 1e-6 * (1 + std::fabs(numeric)))
          << input.name << "[" << i << "] " << describe(p);
    }
  }
}

TEST(DilatedOracle, GradientsMatchFiniteDifferences) {
  ProblemLimits tiny;
  tiny.max_batch = 2;
  tiny.max_seq_len = 12;
  tiny.max_heads = 4;
  tiny.max_head_dim = 3;
  tiny.max_patterns = 3;
  tiny.max_rate = 4;
  for (std::uint64_t seed = 0; seed < 25; ++seed) check_gradient(random_problem(seed, tiny), seed);
}

// Plain softmax attention with an optional causal mask, from scratch.
Tensor dense_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal) {
  const std::int64_t B = q.size(0), N = q.size(1), H = q.size(2), D = q.size(3), Hk = k.size(2);
  const auto Q = q.to_vector<double>(), K = k.to_vector<double>(), V = v.to_vector<double>();
  Tensor out = Tensor::zeros(q.shape(), DType::f64);
  double* o = out.data<double>();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < N; ++i) {
        const std::int64_t g = h / (H / Hk);
        std::vector<double> s(static_cast<std::size_t>(N));
        double m = -INFINITY, z = 0;
        for (std::int64_t j = 0; j < N; ++j) {
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d)
            dot += Q[((b * N + i) * H + h) * D + d] * K[((b * N + j) * Hk + g) * D + d];
          s[j] = (causal && j > i) ? -INFINITY : scale * dot;
          m = std::max(m, s[j]);
        }
        for (std::int64_t j = 0; j < N; ++j) z += std::exp(s[j] - m);
        for (std::int64_t j = 0; j < N; ++j)
          for (std::int64_t d = 0; d < D; ++d)
            o[((b * N + i) * H + h) * D + d] += std::exp(s[j] - m) / z * V[((b * N + j) * Hk + g) * D + d];
      }
  return out;
}

TEST(DilatedOracle, SinglePatternSpanningTheSequenceIsDenseAttention) {
  for (bool causal : {false, true}) {
    for (auto mode : {kernels::DilatedMode::longnet, kernels::DilatedMode::head_groups}) {
      DilatedProblem p;
      p.batch = 2;
      p.seq_len = 23;
      p.heads = 4;
      p.kv_heads = 2;
      p.head_dim = 5;
      p.patterns = {{23, 1}};
      p.mode = mode;
      p.causal = causal;
      p.scale = 0.4;
      const ProblemTensors t = random_tensors(p, 7, DType::f64);
      const Tensor expected = dense_attention(t.q, t.k, t.v, p.scale, causal);
      EXPECT_LT(relative_l2_error(dilated_oracle_forward(p, t.q, t.k, t.v).out, expected), 1e-14);
    }
  }
}

TEST(DilatedOracle, CountMatrixOfAHandWorkedExample) {
  // N = 8, one pattern (w = 4, r = 2), H = 2: head 0 offset 0, head 1 offset 1.
  DilatedProblem p;
  p.seq_len = 8;
  p.heads = 2;
  p.patterns = {{4, 2}};
  const auto head0 = dilated_count_matrix(p, 0);
  const auto head1 = dilated_count_matrix(p, 1);
  auto at = [](const std::vector<int>& c, int row, int col) { return c[static_cast<std::size_t>(row * 8 + col)]; };
  // Head 0: rows 0, 2 see keys {0, 2}; rows 4, 6 see {4, 6}; odd rows see nothing.
  EXPECT_EQ(at(head0, 0, 0), 1);
  EXPECT_EQ(at(head0, 0, 2), 1);
  EXPECT_EQ(at(head0, 0, 4), 0);
  EXPECT_EQ(at(head0, 6, 4), 1);
  for (int k = 0; k < 8; ++k) EXPECT_EQ(at(head0, 1, k), 0);
  // Head 1: rows 1, 3 see {1, 3}.
  EXPECT_EQ(at(head1, 3, 1), 1);
  EXPECT_EQ(at(head1, 3, 0), 0);
  // Two identical patterns count each key twice (the multiset union).
  p.patterns = {{4, 2}, {4, 2}};
  EXPECT_EQ(at(dilated_count_matrix(p, 0), 2, 0), 2);
}

}  // namespace
}  // namespace longnet::testing
