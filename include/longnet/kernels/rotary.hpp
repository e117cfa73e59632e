// Rotary position embeddings, RoPE (Su et al.) and xPos (Sun et al., LongNet's default),
// applied to interleaved pairs (2j, 2j+1) of the head dimension, as torchscale does:
//   theta_j = base^(-2j / D),  angle = pos * theta_j
//   out[2j]   = f_j(pos) * (x[2j] cos(angle) - x[2j+1] sin(angle))
//   out[2j+1] = f_j(pos) * (x[2j+1] cos(angle) + x[2j] sin(angle))
// with f_j = 1 for RoPE and, for xPos, f_j(pos) = zeta_j^((pos - center) / scale_base),
// zeta_j = (2j + 0.4 D) / (1.4 D), inverted (zeta_j^-(...)) when `downscale` (keys), so
// q·k depends only on the distance of the positions. `center` is the position whose factor
// is 1 (torchscale centres the sequence: ceil(N / 2)); it cancels in q·k and only keeps
// the factors in range. pos = position_start + row index.
// The map is linear in x, per pair a scaled rotation M; backward (`transpose`) applies M^T.
// x and out: (batch, seq_len, heads, D) with element strides of (batch, sequence, head),
// the head dimension contiguous; D even. out may alias x. dtype: f32 or f64 (on CUDA also
// bf16; the factors are computed in double and applied in f32).
#pragma once

#include <cmath>
#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/dilated_attention.hpp"
#include "longnet/kernels/dilation.hpp"

namespace longnet::kernels {

enum class RotaryKind : std::int32_t { rope = 0, xpos = 1 };

struct RotaryParams {
  std::int64_t batch = 0;
  std::int64_t seq_len = 0;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  DType dtype = DType::f32;
  RotaryKind kind = RotaryKind::xpos;
  double base = 10000.0;
  double scale_base = 512.0;  // xPos
  std::int64_t position_start = 0;
  double center = 0.0;     // xPos
  bool downscale = false;  // xPos: keys use the inverse factor
  bool transpose = false;  // backward: apply M^T
  RowTensor x;
  RowTensor out;
};

// theta_j = base^(-2j / D) and xPos's zeta_j = (2j + 0.4 D) / (1.4 D) of pair j, in
// double: what every implementation of the map takes them from (the CPU kernel, the CUDA
// factors, the gradient conversion's host table, decode).
LONGNET_HOST_DEVICE inline double rotary_theta(double base, std::int64_t pair, std::int64_t head_dim) {
  return pow(base, -2.0 * static_cast<double>(pair) / static_cast<double>(head_dim));
}
LONGNET_HOST_DEVICE inline double xpos_zeta(std::int64_t pair, std::int64_t head_dim) {
  const double D = static_cast<double>(head_dim);
  return (2.0 * static_cast<double>(pair) + 0.4 * D) / (1.4 * D);
}

// The xPos factor zeta_j^(distance / scale_base), for tests and the decode kernel.
double xpos_factor(std::int64_t pair, std::int64_t head_dim, double distance, double scale_base);

// `map` (its kind, base, scale_base, position_start, center and downscale) as the
// transposed map applied in place to `rows`, gradients of the attention's shape with
// `heads` heads (rotate_attention_gradients_*, dilated_attention.hpp).
RotaryParams transposed_rotary_in_place(const RotaryParams& map, const DilatedAttentionParams& attention,
                                        const RowTensor& rows, std::int64_t heads);

void rotary_apply_cpu(const RotaryParams& p);
void rotary_apply_cuda(const RotaryParams& p);

// A query map and its key map in one pass: `key` is `query` with downscale set (the xPos
// factor inverted) over its own rows and head count; every other field must match
// (check_query_key_maps throws naming the first that does not). The results are the bits of
// two rotary_apply calls; on CUDA it is one launch, both maps' factors from one angle.
void check_query_key_maps(const RotaryParams& query, const RotaryParams& key);
void rotary_apply_query_key_cpu(const RotaryParams& query, const RotaryParams& key);
void rotary_apply_query_key_cuda(const RotaryParams& query, const RotaryParams& key);

}  // namespace longnet::kernels
