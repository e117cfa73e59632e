// Calls f(T{}) with the host element type T of a dtype: one switch for the host loops that
// work on every dtype (tensor copies, random tensors).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/half.hpp"

namespace longnet::detail {

template <class F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      f(float{});
      return;
    case DType::f64:
      f(double{});
      return;
    case DType::bf16:
      f(BFloat16{});
      return;
    case DType::f16:
      f(Float16{});
      return;
    case DType::i32:
      f(std::int32_t{});
      return;
    case DType::i64:
      f(std::int64_t{});
      return;
    case DType::u8:
      f(std::uint8_t{});
      return;
  }
  throw Error("invalid dtype");
}

}  // namespace longnet::detail
