// The vectorised exp of the CPU kernels: accuracy against libm, and exact zeros for the
// causal mask value (-inf) and deep underflow.
#include "kernels/cpu/vector_exp.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace longnet::kernels::cpu {
namespace {

TEST(VectorExp, MatchesLibmToAFewUlp) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-87.0f, 88.0f);
  std::vector<float> x(100003);
  for (auto& value : x) value = dist(rng);
  x[0] = 0.0f;
  x[1] = -1e-8f;
  x[2] = 88.0f;
  std::vector<float> y = x;
  exp_subtract_sum(y.data(), static_cast<std::int64_t>(y.size()), 0.0f);
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double reference = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::fabs(y[i] - reference) / reference);
  }
  EXPECT_LT(worst, 4e-7);
  // In the kernels the arguments are scores minus their row maximum (<= 0); check the sum there.
  std::vector<float> z(1000);
  double expected_sum = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    z[i] = -static_cast<float>(i) * 0.05f;
    expected_sum += std::exp(static_cast<double>(z[i]) - 0.25);
  }
  const float sum = exp_subtract_sum(z.data(), static_cast<std::int64_t>(z.size()), 0.25f);
  EXPECT_NEAR(sum / expected_sum, 1.0, 1e-6);
}

TEST(VectorExp, MaskedAndUnderflowingInputsGiveZero) {
  std::vector<float> y = {-std::numeric_limits<float>::infinity(), -100.0f, -87.5f, -1e30f, 0.0f};
  exp_subtract_sum(y.data(), 5, 0.0f);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], 1.0f);
}

}  // namespace
}  // namespace longnet::kernels::cpu
