// 16-bit floating types on the host: BFloat16 (1 sign, 8 exponent, 7 mantissa bits) and
// Float16 (IEEE binary16: 1, 5, 10). Conversions from float and double round to nearest,
// ties to even, exactly as IEEE 754 specifies (no double rounding from double; subnormals,
// overflow to infinity, signed zeros and NaN handled); conversions to float are exact.
#pragma once

#include <cstdint>

namespace longnet {

namespace detail {
std::uint16_t bfloat16_bits_from_float(float value);
std::uint16_t bfloat16_bits_from_double(double value);
std::uint16_t float16_bits_from_double(double value);
std::uint16_t float16_bits_from_float(float value);
float float_from_bfloat16_bits(std::uint16_t bits);
float float_from_float16_bits(std::uint16_t bits);
}  // namespace detail

struct BFloat16 {
  std::uint16_t bits = 0;

  BFloat16() = default;
  explicit BFloat16(float value) : bits(detail::bfloat16_bits_from_float(value)) {}
  explicit BFloat16(double value) : bits(detail::bfloat16_bits_from_double(value)) {}
  static BFloat16 from_bits(std::uint16_t raw) {
    BFloat16 out;
    out.bits = raw;
    return out;
  }
  explicit operator float() const { return detail::float_from_bfloat16_bits(bits); }
  explicit operator double() const { return detail::float_from_bfloat16_bits(bits); }
};

struct Float16 {
  std::uint16_t bits = 0;

  Float16() = default;
  explicit Float16(float value) : bits(detail::float16_bits_from_float(value)) {}
  explicit Float16(double value) : bits(detail::float16_bits_from_double(value)) {}
  static Float16 from_bits(std::uint16_t raw) {
    Float16 out;
    out.bits = raw;
    return out;
  }
  explicit operator float() const { return detail::float_from_float16_bits(bits); }
  explicit operator double() const { return detail::float_from_float16_bits(bits); }
};

static_assert(sizeof(BFloat16) == 2 && sizeof(Float16) == 2);

}  // namespace longnet
