// Names and sizes of dtypes, in our spelling and in safetensors'.
#include "longnet/core/dtype.hpp"

#include <array>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

struct DTypeEntry {
  DType dtype;
  std::size_t size;
  std::string_view name;
  std::string_view safetensors_name;
};

constexpr std::array<DTypeEntry, 7> kDTypes{{
    {DType::f32, 4, "f32", "F32"},
    {DType::f64, 8, "f64", "F64"},
    {DType::bf16, 2, "bf16", "BF16"},
    {DType::f16, 2, "f16", "F16"},
    {DType::i32, 4, "i32", "I32"},
    {DType::i64, 8, "i64", "I64"},
    {DType::u8, 1, "u8", "U8"},
}};

const DTypeEntry& entry(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  throw Error(str("invalid dtype value ", static_cast<int>(dtype)));
}

}  // namespace

std::size_t dtype_size(DType dtype) { return entry(dtype).size; }
std::string_view dtype_name(DType dtype) { return entry(dtype).name; }
std::string_view safetensors_dtype_name(DType dtype) { return entry(dtype).safetensors_name; }

DType parse_dtype(std::string_view text, std::string_view argument) {
  for (const auto& e : kDTypes) {
    if (e.name == text) return e.dtype;
  }
  throw Error(str(argument, " = '", text, "': must be one of f32, f64, bf16, f16, i32, i64, u8"));
}

bool parse_safetensors_dtype(std::string_view text, DType& out) {
  for (const auto& e : kDTypes) {
    if (e.safetensors_name == text) {
      out = e.dtype;
      return true;
    }
  }
  return false;
}

}  // namespace longnet
