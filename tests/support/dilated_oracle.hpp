// The fp64 oracle of dilated attention, written straight from DESIGN 2.1-2.3: for each
// (batch, head) a count matrix C[p][k] of how many patterns put key k in query p's key
// set, then a masked softmax weighted by C. Slow (N^2 per head) and meant to be read:
// every backend and every distributed mode is tested against it.
#pragma once

#include <vector>

#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilation.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::testing {

struct DilatedProblem {
  std::int64_t batch = 1, seq_len = 1, heads = 1, kv_heads = 1, head_dim = 1;
  std::vector<kernels::DilationPattern> patterns;
  kernels::DilatedMode mode = kernels::DilatedMode::longnet;
  bool causal = false;
  double scale = 1.0;
};

// C[p * N + k] for head `head`: the multiplicity of key k in M(p, head).
std::vector<int> dilated_count_matrix(const DilatedProblem& problem, std::int64_t head);

// The output scale of a mode: 1 (LongNet) or 1/G (head-groups).
double dilated_output_scale(const DilatedProblem& problem);

struct OracleOutput {
  Tensor out;  // (B, N, H, D) f64
  Tensor lse;  // (B, H, N) f64
};

struct OracleGradients {
  Tensor dq, dk, dv;  // f64, shapes of q, k, v
};

// Inputs may have any float dtype, device and strides.
OracleOutput dilated_oracle_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k, const Tensor& v);
OracleGradients dilated_oracle_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& dout);

// The same computation done naively in float32 (same formulas, float accumulation): the
// yardstick of FlashAttention's test rule, "error at most 2x that of the naive
// computation in the same precision", for inputs where 1e-5 is out of reach of any fp32
// algorithm (a very peaked softmax whose exact gradient is a cancellation).
OracleOutput dilated_naive_float_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                         const Tensor& v);
OracleGradients dilated_naive_float_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& dout);

// The naive computation in half precision (precision = bf16 or f16): float arithmetic,
// with the probabilities P, dS and the outputs rounded to `precision` — what a plain
// framework implementation in that precision does; DESIGN 5's yardstick for the bf16/f16
// CUDA kernels (error at most 2x this one's, plus 1e-3).
OracleOutput dilated_naive_half_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                        const Tensor& v, DType precision);
OracleGradients dilated_naive_half_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& dout, DType precision);

// Relative L2 error ||a - b|| / max(||b||, floor_rms * sqrt(n)) over the n elements.
// The floor only matters when the expected tensor is (nearly) zero, e.g. the gradients of
// a query that attends to itself alone (exactly 0, computed as a difference of O(1)
// terms); the default is a twentieth of the unit scale of the tests' randn inputs, far
// below the RMS of every tensor that is not degenerate. Infinite entries (lse of rows without keys) must
// match exactly; any mismatch or NaN gives infinity.
double relative_l2_error(const Tensor& actual, const Tensor& expected, double floor_rms = 0.05);

// The largest |actual - expected| (infinite entries must match exactly; NaN counts as
// infinity): the CUDA tests' FlashAttention-style comparison.
double max_abs_error(const Tensor& actual, const Tensor& expected);

// FlashAttention's absolute tolerance: twice the rounding error of representing the
// reference shifted by 0.3 in `dtype` (bf16 or f16; about one ulp at the reference's
// magnitude), and at least DESIGN 5's 1e-3.
double rounding_tolerance(const Tensor& expected, DType dtype);

// delta = rowsum(dout * out) of every (b, h, n) in double, as a contiguous (B, H, N) tensor
// of `dtype` on `device`: what AttentionBackwardOptions::output_deltas holds.
Tensor output_deltas(const Tensor& out, const Tensor& dout, DType dtype, Device device);

// The column sums of [dq | dk | dv] over batch and positions, in double, from the values
// as they are (any dtype, device and strides): what AttentionBackwardOptions'
// gradient_column_sums must add.
std::vector<double> gradient_column_sums(const Tensor& dq, const Tensor& dk, const Tensor& dv);

// M^T g for a contiguous (B, N, heads, D) gradient g and the rotary map `map` (its
// transpose flag ignored), by the rotary kernel of g's device: the positional encoding's
// backward as a separate pass, against which the attention's fused one is tested.
Tensor rotary_transpose(const Tensor& g, const kernels::RotaryParams& map);

}  // namespace longnet::testing
