// DilatedAttention: validation (DESIGN 6), backend choice, and the calls into the kernels.
#include "longnet/attention/dilated_attention.hpp"

#include <cmath>

#include "attention/attention_calls.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet {

std::string_view to_string(DilatedMode mode) { return mode == DilatedMode::longnet ? "longnet" : "head_groups"; }

DilatedMode parse_dilated_mode(std::string_view text, std::string_view argument) {
  if (text == "longnet") return DilatedMode::longnet;
  if (text == "head_groups") return DilatedMode::head_groups;
  throw Error(str(argument, " = '", text, "': must be longnet or head_groups"));
}

std::string_view to_string(Backend backend) {
  switch (backend) {
    case Backend::automatic:
      return "auto";
    case Backend::cpu:
      return "cpu";
    case Backend::cuda:
      return "cuda";
  }
  return "?";
}

void DilatedAttentionConfig::validate() const {
  require(!segment_lengths.empty(), "segment_lengths is empty: give at least one segment length");
  require(!dilation_rates.empty(), "dilation_rates is empty: give one dilation rate per segment length");
  require(segment_lengths.size() == dilation_rates.size(), "segment_lengths has ", segment_lengths.size(),
          " entries but dilation_rates has ", dilation_rates.size(), ": they must have the same length");
  for (std::size_t i = 0; i < segment_lengths.size(); ++i) {
    require(segment_lengths[i] >= 1, "segment_lengths[", i, "] = ", segment_lengths[i], ": must be >= 1");
    require(dilation_rates[i] >= 1, "dilation_rates[", i, "] = ", dilation_rates[i], ": must be >= 1");
    require(dilation_rates[i] <= segment_lengths[i], "dilation_rates[", i, "] = ", dilation_rates[i],
            ": must be <= segment_lengths[", i, "] = ", segment_lengths[i]);
  }
  if (scale) require(std::isfinite(*scale), "scale = ", *scale, ": must be finite");
}

std::vector<DilationPattern> DilatedAttentionConfig::patterns() const {
  validate();
  std::vector<DilationPattern> out;
  for (std::size_t i = 0; i < segment_lengths.size(); ++i) out.push_back({segment_lengths[i], dilation_rates[i]});
  return out;
}

DilatedAttentionConfig DilatedAttentionConfig::dense(bool causal) {
  DilatedAttentionConfig config;
  config.segment_lengths = {INT64_MAX};
  config.dilation_rates = {1};
  config.causal = causal;
  return config;
}

namespace {

void require_float_tensor(const Tensor& t, const char* name) {
  require(t.defined(), name, " is undefined");
  require(is_floating(t.dtype()), name, " has dtype ", dtype_name(t.dtype()), ": must be f32, f64, bf16 or f16");
  require(t.dim() == 4, name, " has shape ", shape_to_string(t.shape()), ": must be (batch, seq_len, heads, head_dim)");
}

using attention_calls::row_tensor;
using attention_calls::with_contiguous_rows;

Backend resolve(Backend backend, const Tensor& q) { return attention_calls::resolve_backend(backend, q); }

kernels::DilatedAttentionParams make_params(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k) {
  kernels::DilatedAttentionParams p;
  p.batch = q.size(0);
  p.seq_len = q.size(1);
  p.heads = q.size(2);
  p.kv_heads = k.size(2);
  p.head_dim = q.size(3);
  p.patterns = config.patterns();
  p.mode = config.mode;
  p.causal = config.causal;
  p.scale = config.scale.value_or(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  p.dtype = q.dtype();
  p.deterministic = config.deterministic;
  return p;
}

}  // namespace

void validate_attention_inputs(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k,
                               const Tensor& v) {
  config.validate();
  require_float_tensor(q, "q");
  require_float_tensor(k, "k");
  require_float_tensor(v, "v");
  require(k.shape() == v.shape(), "k has shape ", shape_to_string(k.shape()), " but v has shape ",
          shape_to_string(v.shape()), ": they must be equal");
  require(q.size(0) == k.size(0), "q has batch ", q.size(0), " but k has batch ", k.size(0), ": they must be equal");
  require(q.size(1) == k.size(1), "q has seq_len ", q.size(1), " but k has seq_len ", k.size(1),
          ": they must be equal");
  require(q.size(3) == k.size(3), "q has head_dim ", q.size(3), " but k has head_dim ", k.size(3),
          ": they must be equal");
  require(q.size(0) >= 1, "batch = ", q.size(0), ": must be >= 1");
  require(q.size(1) >= 1, "seq_len = ", q.size(1), ": must be >= 1");
  require(q.size(3) >= 1, "head_dim = ", q.size(3), ": must be >= 1");
  require(k.size(2) >= 1 && q.size(2) % k.size(2) == 0, "q has ", q.size(2), " heads and k has ", k.size(2),
          ": the number of query heads must be a multiple of the number of key/value heads");
  require(k.dtype() == q.dtype() && v.dtype() == q.dtype(), "dtype mismatch: q is ", dtype_name(q.dtype()), ", k is ",
          dtype_name(k.dtype()), ", v is ", dtype_name(v.dtype()), ": they must be equal");
  require(k.device() == q.device() && v.device() == q.device(), "device mismatch: q is on ", to_string(q.device()),
          ", k on ", to_string(k.device()), ", v on ", to_string(v.device()), ": they must be equal");
  const auto groups = static_cast<std::int64_t>(config.segment_lengths.size());
  if (config.mode == DilatedMode::head_groups) {
    require(q.size(2) >= groups, "head_groups mode with ", groups, " patterns needs at least ", groups,
            " heads, q has ", q.size(2));
  }
}

AttentionOutput dilated_attention_forward(const DilatedAttentionConfig& config, const Tensor& q_in, const Tensor& k_in,
                                          const Tensor& v_in, Backend backend) {
  validate_attention_inputs(config, q_in, k_in, v_in);
  backend = resolve(backend, q_in);
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  AttentionOutput result{Tensor::empty(q.shape(), q.dtype(), q.device()),
                         Tensor::empty({q.size(0), q.size(2), q.size(1)}, kernels::lse_dtype(q.dtype()), q.device())};
  kernels::DilatedAttentionParams p = make_params(config, q, k);
  p.q = row_tensor(q);
  p.k = row_tensor(k);
  p.v = row_tensor(v);
  p.out = row_tensor(result.out);
  p.lse = result.lse.data();
  if (backend == Backend::cuda) {
    kernels::dilated_attention_forward_cuda(p);
  } else {
    kernels::dilated_attention_forward_cpu(p);
  }
  return result;
}

AttentionGradients dilated_attention_backward(const DilatedAttentionConfig& config, const Tensor& q,
                                              const Tensor& k, const Tensor& v, const AttentionOutput& forward,
                                              const Tensor& dout, Backend backend) {
  return dilated_attention_backward(config, q, k, v, forward, dout, AttentionBackwardOptions{}, backend);
}

AttentionGradients dilated_attention_backward(const DilatedAttentionConfig& config, const Tensor& q_in,
                                              const Tensor& k_in, const Tensor& v_in, const AttentionOutput& forward,
                                              const Tensor& dout_in, const AttentionBackwardOptions& options,
                                              Backend backend) {
  validate_attention_inputs(config, q_in, k_in, v_in);
  backend = resolve(backend, q_in);
  attention_calls::validate_backward_inputs(q_in, forward, dout_in);
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  const Tensor out = with_contiguous_rows(forward.out), dout = with_contiguous_rows(dout_in);
  const Tensor lse = forward.lse.contiguous();
  attention_calls::validate_gradient_rotations(options, q.size(3));
  AttentionGradients grads{attention_calls::gradient_target(options.dq, q, "dq"),
                           attention_calls::gradient_target(options.dk, k, "dk"),
                           attention_calls::gradient_target(options.dv, v, "dv")};
  kernels::DilatedAttentionParams p = make_params(config, q, k);
  p.q = row_tensor(q);
  p.k = row_tensor(k);
  p.v = row_tensor(v);
  p.out = row_tensor(out);
  p.lse = lse.data();
  p.dout = row_tensor(dout);
  p.dq = row_tensor(grads.dq);
  p.dk = row_tensor(grads.dk);
  p.dv = row_tensor(grads.dv);
  p.dq_rotary = options.dq_rotary;
  p.dk_rotary = options.dk_rotary;
  if (options.gradient_column_sums.defined()) {
    attention_calls::validate_gradient_column_sums(options.gradient_column_sums, grads);
    p.gradient_column_sums = options.gradient_column_sums.data();
  }
  if (options.output_deltas.defined()) {
    attention_calls::validate_output_deltas(options.output_deltas, q);
    p.output_deltas = options.output_deltas.data();
  }
  if (options.dq_accumulator.defined()) {
    attention_calls::validate_dq_accumulator(options.dq_accumulator, q);
    p.dq_accumulator = options.dq_accumulator.data();
  }
  if (backend == Backend::cuda) {
    kernels::dilated_attention_backward_cuda(p);
  } else {
    kernels::dilated_attention_backward_cpu(p);
  }
  return grads;
}

double dilated_attention_forward_flops(const DilatedAttentionConfig& config, std::int64_t batch, std::int64_t seq_len,
                                       std::int64_t heads, std::int64_t head_dim) {
  const auto patterns = config.patterns();
  const std::int64_t pairs = kernels::attended_pairs(
      batch, seq_len, heads, patterns.data(), static_cast<std::int64_t>(patterns.size()), config.mode, config.causal);
  return 4.0 * static_cast<double>(head_dim) * static_cast<double>(pairs);
}

DilatedAttention::DilatedAttention(DilatedAttentionConfig config, Backend backend)
    : config_(std::move(config)), backend_(backend) {
  config_.validate();
}

std::string DilatedAttention::name() const { return str("dilated/", to_string(backend_)); }

AttentionOutput DilatedAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v) {
  AttentionOutput result = dilated_attention_forward(config_, q, k, v, backend_);
  q_ = q;
  k_ = k;
  v_ = v;
  saved_ = result;
  return result;
}

AttentionGradients DilatedAttention::backward(const Tensor& dout) {
  require(q_.defined(), "DilatedAttention::backward called before forward");
  return dilated_attention_backward(config_, q_, k_, v_, saved_, dout, backend_);
}

std::unique_ptr<Attention> make_attention(std::string_view name, const DilatedAttentionConfig& config) {
  if (name == "auto") return std::make_unique<DilatedAttention>(config, Backend::automatic);
  if (name == "cpu") return std::make_unique<DilatedAttention>(config, Backend::cpu);
  if (name == "cuda") {
    require(cuda_compiled(), "make_attention: name = 'cuda' but this build has no CUDA backend");
    return std::make_unique<DilatedAttention>(config, Backend::cuda);
  }
  throw Error(str("make_attention: name = '", name, "': must be auto, cpu or cuda"));
}

}  // namespace longnet
