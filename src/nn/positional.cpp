// Positional encodings (positional.hpp) over kernels/rotary.hpp.
#include "longnet/nn/positional.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "longnet/kernels/rotary.hpp"

namespace longnet::nn {

std::string_view to_string(PositionalEncoding kind) {
  switch (kind) {
    case PositionalEncoding::none:
      return "none";
    case PositionalEncoding::rope:
      return "rope";
    case PositionalEncoding::xpos:
      return "xpos";
  }
  return "?";
}

PositionalEncoding parse_positional_encoding(std::string_view text, std::string_view argument) {
  if (text == "none") return PositionalEncoding::none;
  if (text == "rope") return PositionalEncoding::rope;
  if (text == "xpos") return PositionalEncoding::xpos;
  throw Error(str(argument, " = '", text, "': must be none, rope or xpos"));
}

void PositionalConfig::validate(std::int64_t head_dim) const {
  if (kind == PositionalEncoding::none) return;
  require(head_dim % 2 == 0, "positional = ", to_string(kind), " with head_dim = ", head_dim,
          ": rotary encodings need an even head_dim");
  require(rope_base > 1 && std::isfinite(rope_base), "rope_base = ", rope_base, ": must be > 1 and finite");
  require(xpos_scale_base > 0 && std::isfinite(xpos_scale_base), "xpos_scale_base = ", xpos_scale_base,
          ": must be positive and finite");
}

double xpos_center(std::int64_t seq_len) { return static_cast<double>((seq_len + 1) / 2); }

void check_xpos_range(const PositionalConfig& config, double max_distance, DType dtype) {
  if (config.kind != PositionalEncoding::xpos) return;
  // ln of the largest factor, zeta = 2/7 (pair 0); the limit keeps the factor (e^84 ~ 3e36
  // in float32/bf16) a few orders below the largest finite value, for the values it scales.
  const double log_factor = std::log(3.5) * max_distance / config.xpos_scale_base;
  const double limit = dtype == DType::f64 ? 700.0 : 84.0;
  if (log_factor <= limit) return;
  const double longest = 2.0 * limit * config.xpos_scale_base / std::log(3.5);
  throw Error(str("positional = xpos: positions ", static_cast<std::int64_t>(max_distance),
                  " tokens from the centre need factors up to e^", static_cast<std::int64_t>(log_factor),
                  ", beyond the range of ", dtype_name(dtype), " (xpos_scale_base = ", config.xpos_scale_base,
                  " allows sequences up to about ", static_cast<std::int64_t>(longest),
                  " tokens); use positional = rope, raise xpos_scale_base to at least ",
                  std::ceil(std::log(3.5) * max_distance / limit), ", or use shorter sequences"));
}

Tensor apply_positional(const PositionalConfig& config, const Tensor& x, std::int64_t position_start, double center,
                        bool is_key, bool transpose) {
  require(x.defined() && x.dim() == 4, "apply_positional: x must be (batch, seq_len, heads, head_dim)");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  apply_positional_into(config, x, out, position_start, center, is_key, transpose);
  return out;
}

kernels::RotaryParams positional_map(const PositionalConfig& config, std::int64_t position_start, double center,
                                     bool is_key) {
  require(config.kind != PositionalEncoding::none, "positional_map: the encoding is none (no rotary map)");
  kernels::RotaryParams p;
  p.kind = config.kind == PositionalEncoding::xpos ? kernels::RotaryKind::xpos : kernels::RotaryKind::rope;
  p.base = config.rope_base;
  p.scale_base = config.xpos_scale_base;
  p.position_start = position_start;
  p.center = center;
  p.downscale = is_key;
  return p;
}

kernels::RotaryParams checked_positional_map(const PositionalConfig& config, std::int64_t batch, std::int64_t seq_len,
                                             std::int64_t heads, std::int64_t head_dim, DType dtype,
                                             std::int64_t position_start, double center, bool is_key) {
  config.validate(head_dim);
  const double first = static_cast<double>(position_start) - center;
  const double last = static_cast<double>(position_start + seq_len - 1) - center;
  if (seq_len > 0) check_xpos_range(config, std::max(std::fabs(first), std::fabs(last)), dtype);
  kernels::RotaryParams p = positional_map(config, position_start, center, is_key);
  p.batch = batch;
  p.seq_len = seq_len;
  p.heads = heads;
  p.head_dim = head_dim;
  p.dtype = dtype;
  return p;
}

namespace {

// The kernels' parameters for x -> out (checked), or none when there is nothing to rotate
// (kind none: out is then a copy of x).
std::optional<kernels::RotaryParams> rotary_params(const PositionalConfig& config, const Tensor& x, Tensor& out,
                                                   std::int64_t position_start, double center, bool is_key,
                                                   bool transpose, Tensor& in) {
  require(x.defined() && x.dim() == 4, "apply_positional: x must be (batch, seq_len, heads, head_dim)");
  require(out.shape() == x.shape() && out.dtype() == x.dtype() && out.device() == x.device(),
          "apply_positional: out has shape ", shape_to_string(out.shape()), " (", dtype_name(out.dtype()),
          "): must match x's ", shape_to_string(x.shape()), " (", dtype_name(x.dtype()), ") on the same device");
  require(out.dim() == 4 && out.stride(3) == 1, "apply_positional: out's head dimension must be contiguous");
  in = x.stride(3) == 1 ? x : x.contiguous();
  if (config.kind == PositionalEncoding::none) {
    out.copy_from(in);
    return std::nullopt;
  }
  kernels::RotaryParams p = checked_positional_map(config, in.size(0), in.size(1), in.size(2), in.size(3), in.dtype(),
                                                   position_start, center, is_key);
  p.transpose = transpose;
  p.x = {in.data(), in.stride(0), in.stride(1), in.stride(2)};
  p.out = {out.data(), out.stride(0), out.stride(1), out.stride(2)};
  return p;
}

}  // namespace

void apply_positional_into(const PositionalConfig& config, const Tensor& x, Tensor& out, std::int64_t position_start,
                           double center, bool is_key, bool transpose) {
  Tensor in;
  const auto p = rotary_params(config, x, out, position_start, center, is_key, transpose, in);
  if (!p) return;
  if (in.device().is_cuda()) {
    kernels::rotary_apply_cuda(*p);
  } else {
    kernels::rotary_apply_cpu(*p);
  }
}

void apply_positional_query_key_into(const PositionalConfig& config, const Tensor& q, Tensor& q_out, const Tensor& k,
                                     Tensor& k_out, std::int64_t position_start, double center) {
  require(q.defined() && k.defined() && q.dim() == 4 && k.dim() == 4,
          "apply_positional_query_key: q and k must be (batch, seq_len, heads, head_dim)");
  require(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) && q.dtype() == k.dtype() &&
              q.device() == k.device(),
          "apply_positional_query_key: k is ", shape_to_string(k.shape()), " (", dtype_name(k.dtype()), ") and q ",
          shape_to_string(q.shape()), " (", dtype_name(q.dtype()),
          "): they must match in batch, seq_len and head_dim, dtype and device");
  Tensor q_in, k_in;
  const auto query = rotary_params(config, q, q_out, position_start, center, /*is_key=*/false, false, q_in);
  const auto key = rotary_params(config, k, k_out, position_start, center, /*is_key=*/true, false, k_in);
  if (!query) return;  // none: both copied
  if (q_in.device().is_cuda()) {
    kernels::rotary_apply_query_key_cuda(*query, *key);
  } else {
    kernels::rotary_apply_query_key_cpu(*query, *key);
  }
}

std::pair<Tensor, Tensor> apply_positional_query_key(const PositionalConfig& config, const Tensor& q, const Tensor& k,
                                                     std::int64_t position_start, double center) {
  require(q.defined() && k.defined(), "apply_positional_query_key: q and k must be defined");
  Tensor q_out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor k_out = Tensor::empty(k.shape(), k.dtype(), k.device());
  apply_positional_query_key_into(config, q, q_out, k, k_out, position_start, center);
  return {q_out, k_out};
}

}  // namespace longnet::nn
