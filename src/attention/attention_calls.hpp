// What every attention operator of this layer does around its kernel call (internal to
// the attention layer): pick the backend from the tensors' device, hand the kernels rows
// with a contiguous head_dim axis, and check a backward call's dout and saved forward
// against q (DESIGN 6: each error names the argument and the rule).
#pragma once

#include "longnet/attention/attention.hpp"
#include "longnet/attention/dilated_attention.hpp"  // Backend
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::attention_calls {

// `automatic` becomes the backend of q's device; an explicit backend must match it.
Backend resolve_backend(Backend backend, const Tensor& q);

inline kernels::RowTensor row_tensor(const Tensor& t) { return {t.data(), t.stride(0), t.stride(1), t.stride(2)}; }

// The head_dim axis must be contiguous for the kernels; anything else is copied.
inline Tensor with_contiguous_rows(const Tensor& t) {
  return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous();
}

// dout has q's shape, dtype and device; forward.out likewise; forward.lse is
// lse_dtype(q) of shape (batch, heads, seq_len) on q's device.
void validate_backward_inputs(const Tensor& q, const AttentionOutput& forward, const Tensor& dout);

// Where a backward writes the gradient `name` of the input `like`: `given` when defined
// (checked: like's shape, dtype and device, a contiguous head dim), else a new tensor.
Tensor gradient_target(const Tensor& given, const Tensor& like, const char* name);

// The rotary maps of AttentionBackwardOptions need even head dims and positive bases.
void validate_gradient_rotations(const AttentionBackwardOptions& options, std::int64_t head_dim);

// AttentionBackwardOptions::gradient_column_sums: contiguous ((H + 2 Hk) D) in the
// accumulation dtype on the gradients' device, and gradients that lie as (B N, heads D)
// matrices.
void validate_gradient_column_sums(const Tensor& sums, const AttentionGradients& grads);

// AttentionBackwardOptions::output_deltas: contiguous (B, H, N) in lse's dtype on q's device.
void validate_output_deltas(const Tensor& deltas, const Tensor& q);
void validate_dq_accumulator(const Tensor& accumulator, const Tensor& q);

}  // namespace longnet::attention_calls
