// bf16/f16 conversions: exact round-to-nearest-even against independent references
// (hardware F16C where present, exhaustive neighbour checks otherwise).
#include "longnet/core/half.hpp"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace longnet {
namespace {

float from_bits(std::uint32_t bits) { return std::bit_cast<float>(bits); }

double as_double(Float16 h) { return static_cast<double>(static_cast<float>(h)); }
double as_double(BFloat16 h) { return static_cast<double>(static_cast<float>(h)); }

// Checks that `bits` is a correctly rounded (nearest, ties to even) image of x by
// comparing with its two neighbours in the target format.
template <class Half>
void expect_nearest_even(double x, std::uint16_t bits, std::uint16_t infinity_bits) {
  const Half r = Half::from_bits(bits);
  const double value = as_double(r);
  const std::uint16_t magnitude = bits & 0x7FFF;
  if (std::isinf(value)) {
    // Overflow: x must be at least the midpoint between the largest finite and 2^(emax+1).
    const double largest = as_double(Half::from_bits(infinity_bits - 1));
    const double next = std::ldexp(1.0, std::ilogb(largest) + 1);
    EXPECT_GE(std::fabs(x), (largest + next) / 2) << "x = " << x;
    return;
  }
  const double error = std::fabs(x - value);
  if (magnitude < infinity_bits - 1) {
    const double up = as_double(Half::from_bits(static_cast<std::uint16_t>(bits + 1)));
    const double up_error = std::fabs(x - up);
    EXPECT_LE(error, up_error) << "x = " << x;
    if (error == up_error) {
      EXPECT_EQ(bits & 1, 0) << "tie not to even, x = " << x;
    }
  }
  if (magnitude > 0) {
    const double down = as_double(Half::from_bits(static_cast<std::uint16_t>(bits - 1)));
    const double down_error = std::fabs(x - down);
    EXPECT_LE(error, down_error) << "x = " << x;
    if (error == down_error) {
      EXPECT_EQ(bits & 1, 0) << "tie not to even, x = " << x;
    }
  }
  if (x != 0) {
    EXPECT_EQ(std::signbit(x), (bits & 0x8000) != 0);
  }
}

TEST(Half, EveryFloat16RoundTripsExactly) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const Float16 h = Float16::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(Float16(f))));
      continue;
    }
    EXPECT_EQ(Float16(f).bits, b) << "bits " << b;
    EXPECT_EQ(Float16(static_cast<double>(f)).bits, b) << "bits " << b;
  }
}

TEST(Half, EveryBFloat16RoundTripsExactly) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const BFloat16 h = BFloat16::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(h);
    EXPECT_EQ(std::bit_cast<std::uint32_t>(f), b << 16);
    if (std::isnan(f)) continue;
    EXPECT_EQ(BFloat16(f).bits, b);
    EXPECT_EQ(BFloat16(static_cast<double>(f)).bits, b);
  }
}

__attribute__((target("f16c"))) std::uint16_t hardware_float16(float x) {
  return static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

TEST(Half, Float16MatchesHardwareF16C) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU has no F16C";
  std::mt19937_64 rng(1234);
  int mismatches = 0;
  for (int i = 0; i < 2'000'000; ++i) {
    // Mostly values in and around the binary16 range, some arbitrary bit patterns.
    std::uint32_t bits = static_cast<std::uint32_t>(rng());
    if (i % 4 != 0) bits = (bits & 0x807FFFFFu) | (static_cast<std::uint32_t>(100 + rng() % 60) << 23);
    const float x = from_bits(bits);
    if (std::isnan(x)) continue;
    if (Float16(x).bits != hardware_float16(x) && ++mismatches < 10) {
      ADD_FAILURE() << "x = " << x << " ours " << Float16(x).bits << " hardware " << hardware_float16(x);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Half, BFloat16FromFloatIsNearestEven) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 1'000'000; ++i) {
    const float x = from_bits(static_cast<std::uint32_t>(rng()));
    if (std::isnan(x)) continue;
    expect_nearest_even<BFloat16>(x, BFloat16(x).bits, 0x7F80);
    EXPECT_EQ(BFloat16(x).bits, BFloat16(static_cast<double>(x)).bits);
  }
}

TEST(Half, FromDoubleIsNearestEven) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mantissa(1.0, 2.0);
  for (int i = 0; i < 500'000; ++i) {
    const double x = std::ldexp(mantissa(rng), static_cast<int>(rng() % 80) - 40) * (rng() % 2 ? 1 : -1);
    expect_nearest_even<Float16>(x, Float16(x).bits, 0x7C00);
    expect_nearest_even<BFloat16>(x, BFloat16(x).bits, 0x7F80);
  }
}

TEST(Half, DoubleRoundsOnceNotTwice) {
  // Through float these would round to the midpoint first and then to even (down).
  const double above_bf16_midpoint = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  EXPECT_EQ(BFloat16(above_bf16_midpoint).bits, 0x3F81);
  EXPECT_EQ(BFloat16(static_cast<float>(above_bf16_midpoint)).bits, 0x3F80);
  const double above_f16_midpoint = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(Float16(above_f16_midpoint).bits, 0x3C01);
  EXPECT_EQ(Float16(static_cast<float>(above_f16_midpoint)).bits, 0x3C00);
}

TEST(Half, Float16EdgeValues) {
  EXPECT_EQ(Float16(0.0f).bits, 0x0000);
  EXPECT_EQ(Float16(-0.0f).bits, 0x8000);
  EXPECT_EQ(Float16(1.0f).bits, 0x3C00);
  EXPECT_EQ(Float16(65504.0f).bits, 0x7BFF);
  EXPECT_EQ(Float16(65519.0f).bits, 0x7BFF);
  EXPECT_EQ(Float16(65520.0f).bits, 0x7C00);  // tie with 65536 goes to even: infinity
  EXPECT_EQ(Float16(std::numeric_limits<float>::infinity()).bits, 0x7C00);
  EXPECT_EQ(Float16(-std::numeric_limits<float>::infinity()).bits, 0xFC00);
  EXPECT_EQ(Float16(std::ldexp(1.0f, -24)).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(Float16(std::ldexp(1.0f, -25)).bits, 0x0000);  // tie with 0 goes to even
  EXPECT_EQ(Float16(std::ldexp(1.5f, -25)).bits, 0x0001);
  EXPECT_EQ(Float16(std::ldexp(1.0f, -14)).bits, 0x0400);     // smallest normal
  EXPECT_EQ(Float16(std::ldexp(1023.0f, -24)).bits, 0x03FF);  // largest subnormal
  EXPECT_EQ(Float16(std::ldexp(2047.0f, -25)).bits, 0x0400);  // rounds up into the normals
  EXPECT_TRUE(std::isnan(static_cast<float>(Float16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(static_cast<float>(Float16::from_bits(0x0001)), std::ldexp(1.0f, -24));
  EXPECT_EQ(static_cast<float>(Float16::from_bits(0xC000)), -2.0f);
}

TEST(Half, BFloat16EdgeValues) {
  EXPECT_EQ(BFloat16(1.0f).bits, 0x3F80);
  EXPECT_EQ(BFloat16(-2.0f).bits, 0xC000);
  EXPECT_EQ(BFloat16(std::numeric_limits<float>::max()).bits, 0x7F80);  // rounds up to infinity
  EXPECT_EQ(BFloat16(from_bits(0x7F7F7FFFu)).bits, 0x7F7F);             // just below the midpoint
  EXPECT_EQ(BFloat16(from_bits(0x3F808000u)).bits, 0x3F80);             // tie, down to even
  EXPECT_EQ(BFloat16(from_bits(0x3F818000u)).bits, 0x3F82);             // tie, up to even
  EXPECT_EQ(BFloat16(from_bits(0x00000001u)).bits, 0x0000);             // float subnormal
  EXPECT_EQ(BFloat16(from_bits(0x00008000u)).bits, 0x0000);             // tie to even zero
  EXPECT_EQ(BFloat16(from_bits(0x00018000u)).bits, 0x0002);
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(from_bits(0x7F800001u)))));  // signalling NaN stays NaN
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(std::numeric_limits<double>::quiet_NaN()))));
}

}  // namespace
}  // namespace longnet
