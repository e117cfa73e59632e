// Positional encodings (positional.hpp) over kernels/rotary.hpp.
#include "longnet/nn/positional.hpp"

#include <cmath>

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

Tensor apply_positional(const PositionalConfig& config, const Tensor& x, std::int64_t position_start, double center,
                        bool is_key, bool transpose) {
  require(x.defined() && x.dim() == 4, "apply_positional: x must be (batch, seq_len, heads, head_dim)");
  const Tensor in = x.stride(3) == 1 ? x : x.contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
  if (config.kind == PositionalEncoding::none) {
    out.copy_from(in);
    return out;
  }
  config.validate(in.size(3));
  kernels::RotaryParams p;
  p.batch = in.size(0);
  p.seq_len = in.size(1);
  p.heads = in.size(2);
  p.head_dim = in.size(3);
  p.dtype = in.dtype();
  p.kind = config.kind == PositionalEncoding::xpos ? kernels::RotaryKind::xpos : kernels::RotaryKind::rope;
  p.base = config.rope_base;
  p.scale_base = config.xpos_scale_base;
  p.position_start = position_start;
  p.center = center;
  p.downscale = is_key;
  p.transpose = transpose;
  p.x = {in.data(), in.stride(0), in.stride(1), in.stride(2)};
  p.out = {out.data(), out.stride(0), out.stride(1), out.stride(2)};
  if (in.device().is_cuda()) {
    kernels::rotary_apply_cuda(p);
  } else {
    kernels::rotary_apply_cpu(p);
  }
  return out;
}

}  // namespace longnet::nn
