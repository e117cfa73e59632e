// Positional encodings of the attention: none, RoPE, or xPos (LongNet's default; see
// kernels/rotary.hpp for the formulas). Applied to q (B, N, H, D) and k (B, N, Hk, D),
// any strides with the head dimension contiguous, at positions start .. start + N - 1.
// Keys use xPos's inverse factor, so q·k depends only on the positions' distance.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

#include "longnet/core/tensor.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::nn {

enum class PositionalEncoding { none, rope, xpos };
std::string_view to_string(PositionalEncoding kind);
PositionalEncoding parse_positional_encoding(std::string_view text, std::string_view argument = "positional");

struct PositionalConfig {
  PositionalEncoding kind = PositionalEncoding::xpos;
  double rope_base = 10000.0;
  double xpos_scale_base = 512.0;
  void validate(std::int64_t head_dim) const;
};

// The position whose xPos factor is 1 for a sequence of length N, as torchscale centres
// it: ceil(N / 2). It cancels in q·k.
double xpos_center(std::int64_t seq_len);

// xPos multiplies queries by zeta^(d / scale_base) and keys by its inverse, d the distance
// from the centre; with zeta down to 2/7 the factors reach e^(1.2528 d / scale_base), which
// leaves float32/bf16 (and float64) range for long sequences: about 68K tokens at the
// default scale_base 512 in float32/bf16 (torchscale has the same limit). Throws Error
// naming the sequence, the factor and the ways out when positions up to `max_distance`
// from the centre would overflow `dtype`; nothing to check for RoPE or none.
void check_xpos_range(const PositionalConfig& config, double max_distance, DType dtype);

// A new contiguous tensor: x with the encoding applied (a copy of x for `none`).
// `is_key` selects xPos's inverse factor; `transpose` applies the transposed map (backward).
Tensor apply_positional(const PositionalConfig& config, const Tensor& x, std::int64_t position_start, double center,
                        bool is_key, bool transpose = false);
// The same written into `out` (x's shape, dtype and device; any strides with contiguous
// head dims, e.g. a slice of a fused qkv gradient), which must not overlap x.
void apply_positional_into(const PositionalConfig& config, const Tensor& x, Tensor& out, std::int64_t position_start,
                           double center, bool is_key, bool transpose = false);
// Queries q and keys k of the same positions at once (the forward map; k takes xPos's
// inverse factor), into q_out and k_out as apply_positional_into would write them, bit for
// bit: on CUDA one launch for both. q and k may differ in their head counts (grouped kv
// heads) and strides, not in batch, length, head_dim, dtype or device.
void apply_positional_query_key_into(const PositionalConfig& config, const Tensor& q, Tensor& q_out, const Tensor& k,
                                     Tensor& k_out, std::int64_t position_start, double center);
// The same into new contiguous tensors: {encoded q, encoded k}.
std::pair<Tensor, Tensor> apply_positional_query_key(const PositionalConfig& config, const Tensor& q, const Tensor& k,
                                                     std::int64_t position_start, double center);

// The encoding's rotary map for rows starting at `position_start` (kernels/rotary.hpp: kind,
// base, scale_base, position_start, center, downscale = is_key; no shape or tensors), e.g.
// for the attention backward to apply its transpose (AttentionBackwardOptions). kind must not be
// none.
kernels::RotaryParams positional_map(const PositionalConfig& config, std::int64_t position_start, double center,
                                     bool is_key);
// positional_map for `batch` x `seq_len` rows of `heads` heads of head_dim in `dtype` (the
// shape fields set; x and out left for the caller), after the checks apply_positional makes:
// the config against head_dim, xPos's range over those positions. kind must not be none.
kernels::RotaryParams checked_positional_map(const PositionalConfig& config, std::int64_t batch, std::int64_t seq_len,
                                             std::int64_t heads, std::int64_t head_dim, DType dtype,
                                             std::int64_t position_start, double center, bool is_key);

}  // namespace longnet::nn
