// Element types of tensors: floating f32, f64, bf16, f16 (what attention computes on) and
// the integer types i32, i64, u8 (token ids, indices, masks). Names follow safetensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace longnet {

enum class DType : std::uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
// "f32", "f64", "bf16", "f16", "i32", "i64", "u8".
std::string_view dtype_name(DType dtype);
// Parses a dtype_name(); throws Error naming `argument` otherwise.
DType parse_dtype(std::string_view text, std::string_view argument = "dtype");
// The safetensors spelling: "F32", "F64", "BF16", "F16", "I32", "I64", "U8".
std::string_view safetensors_dtype_name(DType dtype);
// Parses a safetensors dtype string; returns false when it is not one we support.
bool parse_safetensors_dtype(std::string_view text, DType& out);

inline bool is_floating(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16 || dtype == DType::f16;
}

}  // namespace longnet
