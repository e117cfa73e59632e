// Exact IEEE 754 round-to-nearest-even conversions to bfloat16 and binary16.
// The generic path rounds a double straight to the target format (one rounding, so no
// double-rounding error via float); float -> bfloat16 has a bit-trick fast path that
// computes the same result.
#include "longnet/core/half.hpp"

#include <cstring>

namespace longnet::detail {
namespace {

std::uint64_t bits_of(double value) {
  std::uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// Rounds `value` to the binary format with `exponent_bits` and `mantissa_bits`
// (explicit fraction bits) and returns its bit pattern.
template <int exponent_bits, int mantissa_bits>
std::uint16_t round_double_to_format(double value) {
  constexpr int bias = (1 << (exponent_bits - 1)) - 1;
  constexpr int min_exponent = 1 - bias;  // exponent of the smallest normal number
  constexpr std::uint32_t infinity_bits = ((1u << exponent_bits) - 1u) << mantissa_bits;
  constexpr std::uint32_t quiet_bit = 1u << (mantissa_bits - 1);

  const std::uint64_t bits = bits_of(value);
  const std::uint32_t sign = static_cast<std::uint32_t>(bits >> 63) << (exponent_bits + mantissa_bits);
  const int raw_exponent = static_cast<int>((bits >> 52) & 0x7FF);
  const std::uint64_t fraction = bits & ((std::uint64_t{1} << 52) - 1);

  if (raw_exponent == 0x7FF) {  // infinity or NaN (NaN keeps its top payload bits, quiet)
    if (fraction == 0) return static_cast<std::uint16_t>(sign | infinity_bits);
    const auto payload = static_cast<std::uint32_t>(fraction >> (52 - mantissa_bits));
    return static_cast<std::uint16_t>(sign | infinity_bits | quiet_bit | payload);
  }
  if (raw_exponent == 0) {
    // Zero or a double subnormal (< 2^-1022): far below half the smallest subnormal of
    // either target, so it rounds to a signed zero.
    return static_cast<std::uint16_t>(sign);
  }
  const int exponent = raw_exponent - 1023;                               // value = sig * 2^(exponent-52)
  const std::uint64_t significand = fraction | (std::uint64_t{1} << 52);  // 53 bits
  const int target_exponent = exponent < min_exponent ? min_exponent : exponent;
  // Bits of the significand below the target's last place.
  const int shift = 52 - mantissa_bits + (target_exponent - exponent);
  if (shift >= 54) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal

  std::uint64_t kept = significand >> shift;
  const std::uint64_t remainder = significand & ((std::uint64_t{1} << shift) - 1);
  const std::uint64_t half = std::uint64_t{1} << (shift - 1);
  if (remainder > half || (remainder == half && (kept & 1u))) ++kept;

  // `kept` counts units in the last place including the implicit bit, so adding it to the
  // biased exponent field (minus one) carries correctly into the exponent when rounding
  // overflows the significand and from subnormal to normal.
  const std::uint64_t magnitude = (static_cast<std::uint64_t>(target_exponent + bias - 1) << mantissa_bits) + kept;
  if (magnitude >= infinity_bits) return static_cast<std::uint16_t>(sign | infinity_bits);
  return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(magnitude));
}

}  // namespace

std::uint16_t bfloat16_bits_from_float(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign and top payload, make quiet
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even, and carries
  // into the exponent (to infinity at the top) exactly as the generic path does.
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

std::uint16_t bfloat16_bits_from_double(double value) { return round_double_to_format<8, 7>(value); }
std::uint16_t float16_bits_from_double(double value) { return round_double_to_format<5, 10>(value); }
std::uint16_t float16_bits_from_float(float value) {
  return round_double_to_format<5, 10>(static_cast<double>(value));  // float -> double is exact
}

float float_from_bfloat16_bits(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
}

float float_from_float16_bits(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  std::uint32_t mantissa = bits & 0x3FFu;
  std::uint32_t out_bits;
  if (exponent == 0x1F) {  // infinity or NaN
    out_bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    out_bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    out_bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    out_bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float out;
  std::memcpy(&out, &out_bits, sizeof out);
  return out;
}

}  // namespace longnet::detail
