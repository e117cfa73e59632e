// The vectorised normal CDF and density of the CPU's f32 GELU: accuracy against libm's
// double erfc and exp (relative, so the tails count as much as the middle), at the points
// where the formulas change, and the values at the ends of float's range.
#include "kernels/cpu/vector_normal.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace longnet::kernels::cpu {
namespace {

double reference_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double reference_density(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

struct Terms {
  std::vector<float> cdf, density;
};

using NormalTerms = void (*)(const float*, std::int64_t, float*, float*);

// The build the kernels take on this CPU (AVX2 where it has it), and the generic one.
Terms terms_of(const std::vector<float>& x, NormalTerms function = normal_terms) {
  Terms t{std::vector<float>(x.size()), std::vector<float>(x.size())};
  function(x.data(), static_cast<std::int64_t>(x.size()), t.cdf.data(), t.density.data());
  return t;
}

class VectorNormal : public ::testing::TestWithParam<NormalTerms> {};

TEST_P(VectorNormal, MatchesLibmToAFewUlpOverTheRangeGeluMeets) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> wide(-13.0f, 13.0f), narrow(-3.0f, 3.0f);
  std::vector<float> x;
  for (int i = 0; i < 50000; ++i) x.push_back(wide(rng));
  for (int i = 0; i < 50003; ++i) x.push_back(narrow(rng));  // not a multiple of 8: the padded tail
  // Where the formulas meet (z = |x| / sqrt 2 = 0.75) and where the tails end.
  for (const float edge : {1.06066017f, 13.1f, 13.4f, 0.0f, 1e-30f}) {
    for (const float sign : {1.0f, -1.0f}) {
      x.push_back(sign * edge);
      x.push_back(std::nextafter(sign * edge, 0.0f));
      x.push_back(std::nextafter(sign * edge, sign * 20.0f));
    }
  }
  const Terms t = terms_of(x, GetParam());
  double worst_cdf = 0, worst_density = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double cdf = reference_cdf(x[i]), density = reference_density(x[i]);
    // Below 1e-30 (|x| > 11.4; denormal from 13.1, 0 from 13.2) compared absolutely.
    worst_cdf = std::max(worst_cdf, std::fabs(t.cdf[i] - cdf) / std::max(cdf, 1e-30));
    worst_density = std::max(worst_density, std::fabs(t.density[i] - density) / std::max(density, 1e-30));
  }
  EXPECT_LT(worst_cdf, 7e-7);      // ~5 ulp (5.4e-7 measured)
  EXPECT_LT(worst_density, 4e-7);  // 2.2e-7 measured
}

TEST_P(VectorNormal, EndsOfTheRange) {
  const float inf = std::numeric_limits<float>::infinity();
  const Terms t = terms_of({0.0f, 20.0f, -20.0f, inf, -inf, -5.0f}, GetParam());
  EXPECT_EQ(t.cdf[0], 0.5f);
  EXPECT_NEAR(t.density[0], 0.3989422804, 1e-7);
  EXPECT_EQ(t.cdf[1], 1.0f);
  EXPECT_EQ(t.density[1], 0.0f);
  EXPECT_EQ(t.cdf[2], 0.0f);
  EXPECT_EQ(t.cdf[3], 1.0f);
  EXPECT_EQ(t.cdf[4], 0.0f);
  EXPECT_EQ(t.density[4], 0.0f);
  // Deep in the lower tail Phi keeps its relative precision (1 + erf would give 0 or 6e-8 steps).
  EXPECT_NEAR(t.cdf[5] / reference_cdf(-5.0), 1.0, 5e-7);
}

TEST_P(VectorNormal, NanStaysNanThroughGelu) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Terms t = terms_of({nan}, GetParam());
  EXPECT_TRUE(std::isnan(nan * t.cdf[0]));  // gelu(x) = x Phi(x)
}

INSTANTIATE_TEST_SUITE_P(Builds, VectorNormal,
                         ::testing::Values(NormalTerms{normal_terms}, NormalTerms{generic::normal_terms}),
                         [](const auto& build) { return build.index == 0 ? "Dispatched" : "Generic"; });

}  // namespace
}  // namespace longnet::kernels::cpu
