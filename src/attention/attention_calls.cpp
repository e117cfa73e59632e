// Shared pieces of the attention operators' calls (attention_calls.hpp).
#include "attention/attention_calls.hpp"

#include <string>
#include <utility>

#include "longnet/kernels/precision.hpp"

namespace longnet::attention_calls {

Backend resolve_backend(Backend backend, const Tensor& q) {
  const Backend device_backend = q.device().is_cuda() ? Backend::cuda : Backend::cpu;
  if (backend == Backend::automatic) return device_backend;
  require(backend == device_backend, "backend = ", to_string(backend), " but the tensors are on ",
          to_string(q.device()), ": move them or use backend auto");
  return backend;
}

void validate_backward_inputs(const Tensor& q, const AttentionOutput& forward, const Tensor& dout) {
  require(dout.defined() && dout.shape() == q.shape(), "dout has shape ",
          dout.defined() ? shape_to_string(dout.shape()) : std::string("(undefined)"), ": must equal q's shape ",
          shape_to_string(q.shape()));
  require(dout.dtype() == q.dtype() && dout.device() == q.device(), "dout is ", dtype_name(dout.dtype()), " on ",
          to_string(dout.device()), ": must match q (", dtype_name(q.dtype()), " on ", to_string(q.device()), ")");
  require(forward.out.defined() && forward.out.shape() == q.shape() && forward.out.dtype() == q.dtype() &&
              forward.out.device() == q.device(),
          "forward output does not match q: pass the AttentionOutput of the forward pass of these inputs");
  require(forward.lse.defined() && forward.lse.dtype() == kernels::lse_dtype(q.dtype()) &&
              forward.lse.shape() == Shape{q.size(0), q.size(2), q.size(1)} && forward.lse.device() == q.device(),
          "forward lse must be ", dtype_name(kernels::lse_dtype(q.dtype())),
          " of shape (batch, heads, seq_len) on q's device");
}

Tensor gradient_target(const Tensor& given, const Tensor& like, const char* name) {
  if (!given.defined()) return Tensor::empty(like.shape(), like.dtype(), like.device());
  require(given.shape() == like.shape() && given.dtype() == like.dtype() && given.device() == like.device(),
          "the ", name, " to write into has shape ", shape_to_string(given.shape()), " (", dtype_name(given.dtype()),
          ", ", to_string(given.device()), "): must match the input's ", shape_to_string(like.shape()), " (",
          dtype_name(like.dtype()), ", ", to_string(like.device()), ")");
  require(given.stride(3) == 1, "the ", name, " to write into must have a contiguous head dimension (stride ",
          given.stride(3), ")");
  return given;
}

void validate_gradient_rotations(const AttentionBackwardOptions& options, std::int64_t head_dim) {
  for (const kernels::RotaryParams* map : {options.dq_rotary, options.dk_rotary}) {
    if (!map) continue;
    require(head_dim % 2 == 0, "gradient rotation: head_dim = ", head_dim, ": must be even (rotary pairs)");
    require(map->base > 0 && map->scale_base > 0, "gradient rotation: base = ", map->base,
            ", scale_base = ", map->scale_base, ": must be > 0");
  }
}

void validate_gradient_column_sums(const Tensor& sums, const AttentionGradients& grads) {
  const Tensor& dq = grads.dq;
  const std::int64_t columns = (dq.size(2) + 2 * grads.dk.size(2)) * dq.size(3);
  const DType dtype = kernels::accumulation_dtype(dq.dtype());
  require(
      sums.shape() == Shape{columns} && sums.dtype() == dtype && sums.device() == dq.device() && sums.is_contiguous(),
      "gradient_column_sums has shape ", shape_to_string(sums.shape()), " (", dtype_name(sums.dtype()), ", ",
      to_string(sums.device()), "): must be a contiguous (", columns, ") ", dtype_name(dtype), " tensor on ",
      to_string(dq.device()), ", (heads + 2 kv_heads) * head_dim");
  for (const auto& [gradient, name] :
       {std::pair<const Tensor&, const char*>{grads.dq, "dq"}, {grads.dk, "dk"}, {grads.dv, "dv"}}) {
    const bool heads_adjacent = gradient.size(2) == 1 || gradient.stride(2) == gradient.size(3);
    const bool batches_adjacent = gradient.size(0) == 1 || gradient.stride(0) == gradient.size(1) * gradient.stride(1);
    require(heads_adjacent && batches_adjacent, "gradient_column_sums: the ", name, " to write into has strides (",
            gradient.stride(0), ", ", gradient.stride(1), ", ", gradient.stride(2), ", ", gradient.stride(3),
            "): its column sums need (batch * seq_len, heads * head_dim) rows, head rows adjacent and batches "
            "seq_len positions apart");
  }
}

void validate_output_deltas(const Tensor& deltas, const Tensor& q) {
  const Shape shape{q.size(0), q.size(2), q.size(1)};
  const DType dtype = kernels::lse_dtype(q.dtype());
  require(deltas.shape() == shape && deltas.dtype() == dtype && deltas.device() == q.device() && deltas.is_contiguous(),
          "output_deltas has shape ", shape_to_string(deltas.shape()), " (", dtype_name(deltas.dtype()), ", ",
          to_string(deltas.device()), "): must be a contiguous ", shape_to_string(shape), " ", dtype_name(dtype),
          " tensor on ", to_string(q.device()), " (batch, heads, seq_len)");
}

void validate_dq_accumulator(const Tensor& accumulator, const Tensor& q) {
  const DType dtype = kernels::lse_dtype(q.dtype());
  require(accumulator.shape() == q.shape() && accumulator.dtype() == dtype && accumulator.device() == q.device() &&
              accumulator.is_contiguous(),
          "dq_accumulator has shape ", shape_to_string(accumulator.shape()), " (", dtype_name(accumulator.dtype()),
          ", ", to_string(accumulator.device()), "): must be a contiguous ", shape_to_string(q.shape()), " ",
          dtype_name(dtype), " tensor on ", to_string(q.device()), " (q's shape, the accumulation dtype)");
}

}  // namespace longnet::attention_calls
