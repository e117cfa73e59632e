// The precisions of the model kernels. Activations (a kernel's `dtype`) are f32 or f64 on
// the CPU and f32, f64 or bf16 on CUDA (mixed precision). What must stay wide is kept in
// accumulation_dtype(dtype) — f64 for f64, f32 otherwise: master weights read directly by
// a kernel (LayerNorm's weight and bias, the embedding table), every parameter gradient
// (accumulated, so bf16 rounding would swallow small updates), normalisation statistics,
// log-sum-exps and losses. With f32 or f64 activations the two dtypes coincide, so the
// full-precision paths are unchanged.
#pragma once

#include "longnet/core/dtype.hpp"

namespace longnet::kernels {

inline DType accumulation_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace longnet::kernels
