// Dilated attention kernels (DESIGN 2.1-2.3, 3.1): raw pointers, sizes and strides in,
// results out. The attention layer validates arguments and allocates; these functions
// assume valid parameters.
//
// Shapes: q (B, N, H, D); k, v (B, N, Hk, D); out (B, N, H, D); lse (B, H, N)
// contiguous, float32 (float64 when dtype is f64, so the fp64 path stays exact). Rows are addressed by per-tensor
// element strides over (batch, sequence, head); the head_dim axis is contiguous. All of q, k, v, out, dout, dq, dk, dv
// share one dtype.
//
// forward:  out and lse of the dilated attention (LongNet or head-groups mode). Rows
//           with no keys get out = 0 and lse = -inf.
// backward: dq, dk, dv (written, not accumulated) from q, k, v, out, lse and dout,
//           exactly per DESIGN 2.3 with the final lse and out; dq and dk optionally
//           leave through the transposed rotary map of a positional encoding (below).
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/dilation.hpp"

namespace longnet::kernels {

struct RotaryParams;  // rotary.hpp

// A tensor argument: base pointer and element strides of (batch, sequence, head).
struct RowTensor {
  void* data = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t seq_stride = 0;
  std::int64_t head_stride = 0;
};

struct DilatedAttentionParams {
  std::int64_t batch = 0;
  std::int64_t seq_len = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::vector<DilationPattern> patterns;
  DilatedMode mode = DilatedMode::longnet;
  bool causal = false;
  double scale = 1.0;
  DType dtype = DType::f32;
  // Bitwise-reproducible results (no atomics); the CPU kernel always is.
  bool deterministic = true;

  RowTensor q, k, v;     // read
  RowTensor out;         // forward: written; backward: read
  void* lse = nullptr;   // (B, H, N) contiguous, lse_dtype(dtype); forward: written; backward: read
  RowTensor dout;        // backward: read
  RowTensor dq, dk, dv;  // backward: written
  // Backward, nullable: dq (dk) is written as M^T dq (M^T dk), M the rotary map of the
  // positional encoding q (k) went through before the attention (rotary.hpp: its kind,
  // base, scale_base, position_start, center and downscale are used; shape, dtype, x, out
  // and transpose are not): the encoding's backward, fused. On CUDA it is applied as the
  // fp32 accumulators are converted, which saves a pass over dq and one over dk.
  const RotaryParams* dq_rotary = nullptr;
  const RotaryParams* dk_rotary = nullptr;
  // Backward, nullable: (H + 2 Hk) * D values in the accumulation dtype (f64 for f64, f32
  // otherwise) on the gradients' device, += the column sums of [dq | dk | dv] as written
  // (after the rotary maps), over batch and positions. dq, dk, dv must then be (B N,
  // heads D) matrices (head_stride = D, batch_stride = N seq_stride). On CUDA: 32-row
  // chunks summed in row order, then the chunks in a fixed order (a Linear's bias order).
  void* gradient_column_sums = nullptr;
  // Backward, nullable: delta = rowsum(dout * out), (B, H, N) in lse_dtype(dtype), given
  // by the caller instead of computed.
  const void* output_deltas = nullptr;
  // Backward on CUDA, nullable: dq's accumulator, (B, N, H, D) contiguous in
  // lse_dtype(dtype), zero-filled by the caller (ordered before this call on the current
  // stream), instead of one allocated and filled here: the fill can then overlap earlier
  // work on another stream. The CPU kernel has no accumulator and ignores it.
  void* dq_accumulator = nullptr;
};

// Applies params' dq_rotary and dk_rotary to dq and dk in place (the backends call it
// where they do not fuse the maps).
void rotate_attention_gradients_cpu(const DilatedAttentionParams& params);
void rotate_attention_gradients_cuda(const DilatedAttentionParams& params, bool dq, bool dk);

// The dtype of lse for inputs of `dtype`: f64 for f64, f32 otherwise.
inline DType lse_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// CPU (always built): fp32 compute for f32/bf16/f16, fp64 for f64; OpenMP-parallel over
// independent tiles; deterministic.
void dilated_attention_forward_cpu(const DilatedAttentionParams& params);
void dilated_attention_backward_cpu(const DilatedAttentionParams& params);

// CUDA (built with the CUDA backend; throws Error otherwise): pointers on the current
// device, work on the current stream.
void dilated_attention_forward_cuda(const DilatedAttentionParams& params);
void dilated_attention_backward_cuda(const DilatedAttentionParams& params);

}  // namespace longnet::kernels
