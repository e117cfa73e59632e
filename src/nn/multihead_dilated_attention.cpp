// nn::MultiheadDilatedAttention (multihead_dilated_attention.hpp).
#include "longnet/nn/multihead_dilated_attention.hpp"

#include <cmath>
#include <tuple>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/core/runtime_switch.hpp"
#include "longnet/kernels/dilated_decode.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::nn {

void MultiheadDilatedAttentionConfig::validate() const {
  require(d_model >= 1, "d_model = ", d_model, ": must be >= 1");
  require(heads >= 1, "heads = ", heads, ": must be >= 1");
  require(d_model % heads == 0, "d_model = ", d_model, " is not a multiple of heads = ", heads);
  require(kv_heads >= 0, "kv_heads = ", kv_heads, ": must be >= 0 (0 means equal to heads)");
  require(heads % key_value_heads() == 0, "heads = ", heads, " is not a multiple of kv_heads = ", key_value_heads());
  attention.validate();
  positional.validate(head_dim());
  require(gamma > 0 && std::isfinite(gamma), "gamma = ", gamma, ": must be positive and finite");
  require(layer_norm_eps > 0, "layer_norm_eps = ", layer_norm_eps, ": must be positive");
  if (attention.mode == DilatedMode::head_groups) {
    require(heads >= static_cast<std::int64_t>(attention.segment_lengths.size()), "head_groups mode with ",
            attention.segment_lengths.size(), " patterns needs at least as many heads, heads = ", heads);
  }
}

std::size_t AttentionCache::bytes() const {
  std::size_t total = 0;
  for (const Tensor& t : keys) total += t.nbytes();
  for (const Tensor& t : values) total += t.nbytes();
  return total;
}

namespace {

const MultiheadDilatedAttentionConfig& validated(const MultiheadDilatedAttentionConfig& config) {
  config.validate();
  return config;
}

// Concatenates (rows_i, in) blocks of f64 initial values along the rows.
Tensor concat_rows(const std::vector<Tensor>& blocks) {
  std::int64_t rows = 0;
  for (const Tensor& b : blocks) rows += b.size(0);
  Tensor out = Tensor::empty({rows, blocks.front().size(1)}, DType::f64);
  std::int64_t at = 0;
  for (const Tensor& b : blocks) {
    out.slice(0, at, at + b.size(0)).copy_from(b);
    at += b.size(0);
  }
  return out;
}

Tensor times(Tensor t, double factor) {
  double* data = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) data[i] *= factor;
  return t;
}

std::unique_ptr<Linear> make_linear(const std::string& name, const Tensor& weight, bool bias,
                                    const ParameterOptions& options) {
  ParameterPtr w = make_parameter(name + ".weight", weight, options);
  ParameterPtr b =
      bias ? make_parameter(name + ".bias", Tensor::zeros({weight.size(0)}, DType::f64), options, false) : nullptr;
  return std::make_unique<Linear>(std::move(w), std::move(b));
}

double resolved_scale(const MultiheadDilatedAttentionConfig& c) {
  return c.attention.scale.value_or(1.0 / std::sqrt(static_cast<double>(c.head_dim())));
}

RuntimeSwitch& fused_projection_switch() {
  static RuntimeSwitch on{"LONGNET_FUSED_PROJECTION", RuntimeSwitch::Unset::off};
  return on;
}

}  // namespace

bool fused_projection_enabled() { return fused_projection_switch().enabled(); }
void set_fused_projection(bool enabled) { fused_projection_switch().set(enabled); }

MultiheadDilatedAttention::MultiheadDilatedAttention(const std::string& name,
                                                     const MultiheadDilatedAttentionConfig& config,
                                                     const ParameterOptions& options)
    : config_(validated(config)),
      out_proj_(make_parameter(name + ".out_proj.weight",
                               times(xavier_uniform_init(config.d_model, config.d_model,
                                                         parameter_seed(options.seed, name + ".out_proj.weight"), 1.0),
                                     config.gamma),
                               options),
                config.bias ? make_parameter(name + ".out_proj.bias", Tensor::zeros({config.d_model}, DType::f64),
                                             options, false)
                            : nullptr) {
  const std::int64_t d = config.d_model, D = config.head_dim();
  const std::int64_t q_rows = config.heads * D, kv_rows = config.key_value_heads() * D;
  const double gain = 1.0 / std::sqrt(2.0);
  auto init = [&](const std::string& param, std::int64_t rows) {
    return xavier_uniform_init(rows, d, parameter_seed(options.seed, name + param), gain);
  };
  if (config.fused_qkv) {
    qkv_proj_ = make_linear(name + ".qkv_proj",
                            concat_rows({init(".q_proj.weight", q_rows), init(".k_proj.weight", kv_rows),
                                         times(init(".v_proj.weight", kv_rows), config.gamma)}),
                            config.bias, options);
  } else {
    q_proj_ = make_linear(name + ".q_proj", init(".q_proj.weight", q_rows), config.bias, options);
    k_proj_ = make_linear(name + ".k_proj", init(".k_proj.weight", kv_rows), config.bias, options);
    v_proj_ = make_linear(name + ".v_proj", times(init(".v_proj.weight", kv_rows), config.gamma), config.bias, options);
    // Three parameters (torchscale's names) in adjacent memory: self-attention runs them as
    // one GEMM of d_model x (H + 2 Hk) D (project()), which cuBLASLt runs faster than three.
    pack_parameters({q_proj_->weight(), k_proj_->weight(), v_proj_->weight()});
    if (config.bias) pack_parameters({q_proj_->bias(), k_proj_->bias(), v_proj_->bias()});
  }
  if (config.sub_layer_norm) {
    inner_attn_ln_ = std::make_unique<LayerNorm>(name + ".inner_attn_ln", d, config.layer_norm_eps, options);
  }
}

MultiheadDilatedAttention::Projected MultiheadDilatedAttention::project(const Tensor& x, const Tensor* memory_in,
                                                                        bool rotate) {
  const Tensor& memory = memory_in ? *memory_in : x;
  const Tensor& w = out_proj_.weight()->compute_value();
  require_floating(x, "attention input", w.dtype(), w.device());
  require(x.dim() == 3 && x.size(2) == config_.d_model, "attention input has shape ", shape_to_string(x.shape()),
          ": must be (batch, seq_len, d_model = ", config_.d_model, ")");
  require(memory.shape() == x.shape(), "cross-attention memory has shape ", shape_to_string(memory.shape()),
          ": must equal the input's shape ", shape_to_string(x.shape()), " (dilated attention needs equal lengths)");
  const std::int64_t B = x.size(0), N = x.size(1), H = config_.heads, Hk = config_.key_value_heads();
  const std::int64_t D = config_.head_dim();
  // Self-attention over q, k, v's packed parameters (still adjacent: nothing replaced
  // them) takes one GEMM, saved in packed_qkv_ for backward.
  packed_qkv_.reset();
  if (!qkv_proj_ && !memory_in) {
    const ParameterPtr weight = adjacent_parameter({q_proj_->weight(), k_proj_->weight(), v_proj_->weight()}, "qkv");
    const ParameterPtr bias =
        config_.bias ? adjacent_parameter({q_proj_->bias(), k_proj_->bias(), v_proj_->bias()}, "qkv.bias") : nullptr;
    if (weight && (bias || !config_.bias)) packed_qkv_ = std::make_unique<Linear>(weight, bias);
  }
  if (Linear* fused = fused_projection()) {
    const PositionalConfig& pos = config_.positional;
    Tensor qkv;
    if (rotate && !memory_in && pos.kind != PositionalEncoding::none && x.device().is_cuda() &&
        fused_projection_enabled()) {
      // The query map encode_query_key_positions would apply to the whole sequence.
      const kernels::RotaryParams map =
          checked_positional_map(pos, B, N, H, D, x.dtype(), 0, xpos_center(N), /*is_key=*/false);
      qkv = fused->forward_rotated(x, H * D, Hk * D, map);
    }
    const bool rotated = qkv.defined();
    if (!rotated) qkv = fused->forward(x);
    const Tensor heads = qkv.view({B, N, H + 2 * Hk, D});
    return {heads.slice(2, 0, H), heads.slice(2, H, H + Hk), heads.slice(2, H + Hk, H + 2 * Hk), rotated};
  }
  return {q_proj_->forward(x).view({B, N, H, D}), k_proj_->forward(memory).view({B, N, Hk, D}),
          v_proj_->forward(memory).view({B, N, Hk, D})};
}

Tensor MultiheadDilatedAttention::encode_positions(const Tensor& x, bool is_key, bool transpose, Tensor out) const {
  const PositionalConfig& pos = config_.positional;
  if (pos.kind == PositionalEncoding::none) {
    if (!out.defined()) return x;
    out.copy_from(x);
    return out;
  }
  if (!out.defined()) out = Tensor::empty(x.shape(), x.dtype(), x.device());
  for (const SequenceBlock& run : positions_) {
    const std::int64_t first = run.local_begin, last = run.local_begin + run.length();
    Tensor rows = positions_.size() == 1 ? out : out.slice(1, first, last);
    apply_positional_into(pos, positions_.size() == 1 ? x : x.slice(1, first, last), rows, run.begin, xpos_center_,
                          is_key, transpose);
  }
  return out;
}

std::pair<Tensor, Tensor> MultiheadDilatedAttention::encode_query_key_positions(const Tensor& q,
                                                                                const Tensor& k) const {
  if (config_.positional.kind == PositionalEncoding::none) return {q, k};
  Tensor q_out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor k_out = Tensor::empty(k.shape(), k.dtype(), k.device());
  for (const SequenceBlock& run : positions_) {
    const auto rows = [&](const Tensor& t) {
      return positions_.size() == 1 ? t : t.slice(1, run.local_begin, run.local_begin + run.length());
    };
    Tensor q_rows = rows(q_out), k_rows = rows(k_out);
    apply_positional_query_key_into(config_.positional, rows(q), q_rows, rows(k), k_rows, run.begin, xpos_center_);
  }
  return {q_out, k_out};
}

Tensor MultiheadDilatedAttention::attend_and_project(const Projected& projected, std::int64_t seq_len,
                                                     const SequenceSharding* sequence, const Tensor* residual) {
  sharded_ = sequence != nullptr;
  require(!projected.rotated || !sharded_,
          "MultiheadDilatedAttention: q and k rotated for a whole sequence cannot be sharded");
  auto encode = [&] {
    if (projected.rotated) {
      q_ = projected.q, k_ = projected.k;
    } else {
      std::tie(q_, k_) = encode_query_key_positions(projected.q, projected.k);
    }
    v_ = projected.v;
  };
  if (!sharded_) {
    positions_ = {SequenceBlock{0, seq_len, 0, 0}};
    xpos_center_ = xpos_center(seq_len);
    encode();
    attention_ = dilated_attention_forward(config_.attention, q_, k_, v_);
  } else {
    require(sequence->comm != nullptr, "MultiheadDilatedAttention: the sequence sharding has no communicator");
    if (!sequence_parallel_ || &sequence_parallel_->communicator() != sequence->comm.get() ||
        sequence_parallel_->order() != sequence->layout.order()) {
      sequence_parallel_ = std::make_unique<SequenceParallelDilatedAttention>(config_.attention, sequence->comm,
                                                                              sequence->layout.order());
    }
    // Steps that can fail on one rank alone end on every rank (the attention's own are collective).
    run_collectively(*sequence->comm, [&] {
      require(seq_len == sequence->local_length(), "attention input holds ", seq_len, " rows but rank ",
              sequence->comm->rank(), " holds ", sequence->local_length(), " of the ", sequence->seq_len(),
              " positions of the sequence layout (", to_string(sequence->layout.order()), " over ",
              sequence->comm->size(), " ranks)");
      positions_ = sequence->local_blocks();
      xpos_center_ = xpos_center(sequence->seq_len());  // of the whole sequence
      encode();
    });
    attention_ = sequence_parallel_->forward(q_, k_, v_);
  }
  Tensor o = attention_.out.view({attention_.out.size(0), seq_len, config_.d_model});
  if (inner_attn_ln_) o = inner_attn_ln_->forward(o);
  return out_proj_.forward(o, residual);
}

Tensor MultiheadDilatedAttention::forward(const Tensor& x, const ForwardContext& context, const Tensor* residual) {
  cross_ = false;
  deterministic_ = context.deterministic;
  return attend_and_project(project(x, nullptr, /*rotate=*/context.sequence == nullptr), x.size(1), context.sequence,
                            residual);
}

Tensor MultiheadDilatedAttention::forward(const Tensor& x, const Tensor& memory, const ForwardContext& context) {
  require(!qkv_proj_, "cross-attention needs separate q/k/v projections (fused_qkv = false)");
  cross_ = true;
  deterministic_ = context.deterministic;
  return attend_and_project(project(x, &memory), x.size(1), context.sequence);
}

// Back through out_proj, the sub-LN, the attention and the positional encoding: the
// gradients of the projections' outputs, (B, N, heads, D) each, written into dq, dk, dv
// where they are defined on entry (slices of a fused qkv gradient), else new tensors.
Tensor MultiheadDilatedAttention::backward_to_projections(const Tensor& dy, Tensor& dq, Tensor& dk, Tensor& dv,
                                                          BiasGradient out_proj_bias, Tensor* qkv_column_sums) {
  require(attention_.out.defined(), "MultiheadDilatedAttention: backward called before forward");
  require(!sharded_ || qkv_column_sums == nullptr, "backward_to_projections: sharded gradients are not summed here");
  const Tensor& out = attention_.out;
  Tensor dout = out_proj_.backward(dy, out_proj_bias);
  // The sub-LN's input is the attention's output: as it writes dout, its backward takes
  // the attention's delta = rowsum(dout * out) per head (a pass over both fewer; unsharded).
  Tensor deltas;
  if (inner_attn_ln_) {
    if (!sharded_) {
      deltas = Tensor::empty({out.size(0), out.size(2), out.size(1)}, kernels::lse_dtype(out.dtype()), out.device());
    }
    dout = inner_attn_ln_->backward(dout, nullptr, nullptr, deltas.defined() ? &deltas : nullptr);
  }
  const Tensor dattention = dout.view({out.size(0), out.size(1), out.size(2), out.size(3)});
  if (sharded_) {
    const AttentionGradients g = sequence_parallel_->backward(dattention);  // collective
    dq = encode_positions(g.dq, false, /*transpose=*/true, dq);
    dk = encode_positions(g.dk, true, /*transpose=*/true, dk);
    if (dv.defined()) {
      dv.copy_from(g.dv);
    } else {
      dv = g.dv;
    }
    return dout;
  }
  // Unsharded, the positional encoding's backward is fused into the attention's (its
  // transposed maps applied as dq and dk are converted on CUDA: a pass over each saved),
  // and the gradients are written straight into dq, dk, dv when given.
  DilatedAttentionConfig attention = config_.attention;
  attention.deterministic = attention.deterministic || deterministic_;
  AttentionBackwardOptions options;
  kernels::RotaryParams q_map, k_map;
  if (config_.positional.kind != PositionalEncoding::none) {
    q_map = positional_map(config_.positional, positions_.front().begin, xpos_center_, /*is_key=*/false);
    k_map = positional_map(config_.positional, positions_.front().begin, xpos_center_, /*is_key=*/true);
    options.dq_rotary = &q_map;
    options.dk_rotary = &k_map;
  }
  options.dq = dq, options.dk = dk, options.dv = dv;
  if (qkv_column_sums) options.gradient_column_sums = *qkv_column_sums;
  options.output_deltas = deltas;
  if (dq_accumulator_.defined()) {  // filled on the gradient stream (prepare_backward)
    dq_accumulator_ready_.wait_on(current_stream(q_.device().index));
    options.dq_accumulator = dq_accumulator_;
  }
  const AttentionGradients g = dilated_attention_backward(attention, q_, k_, v_, attention_, dattention, options);
  dq_accumulator_ = Tensor();
  dq_accumulator_ready_ = StreamEvent();
  dq = g.dq, dk = g.dk, dv = g.dv;
  return dout;
}

void MultiheadDilatedAttention::prepare_backward() {
  dq_accumulator_ = Tensor();
  dq_accumulator_ready_ = StreamEvent();
  if (!attention_.out.defined() || sharded_ || cross_) return;
  GradientStream* side = GradientStream::active(q_.device());
  if (side == nullptr) return;
  dq_accumulator_ = Tensor::empty(q_.shape(), kernels::lse_dtype(q_.dtype()), q_.device());
  dq_accumulator_ready_ = side->run_ahead([&] { dq_accumulator_.zero(); }, {dq_accumulator_});
}

Tensor* MultiheadDilatedAttention::output_bias_gradient() {
  return out_proj_.bias() && !cross_ ? &out_proj_.bias()->grad : nullptr;
}

Tensor MultiheadDilatedAttention::backward(const Tensor& dy, BiasGradient out_proj_bias) {
  require(!cross_, "MultiheadDilatedAttention: the last forward was cross-attention; use backward_cross");
  require(out_proj_bias == BiasGradient::compute || out_proj_.bias(), out_proj_.weight()->name,
          ": its bias gradient summed by the caller, but out_proj has no bias");
  Tensor dq, dk, dv;
  if (Linear* fused = fused_projection()) {
    require(attention_.out.defined(), "MultiheadDilatedAttention: backward called before forward");
    const Tensor& q = q_;
    const std::int64_t B = q.size(0), N = q.size(1), H = config_.heads, Hk = config_.key_value_heads();
    const Tensor dqkv = Tensor::empty({B, N, H + 2 * Hk, config_.head_dim()}, q.dtype(), q.device());
    dq = dqkv.slice(2, 0, H), dk = dqkv.slice(2, H, H + Hk), dv = dqkv.slice(2, H + Hk, H + 2 * Hk);
    // The attention sums the fused bias gradient as it writes dqkv (a pass over dqkv fewer).
    Tensor* bias_gradient = fused->bias() && !sharded_ ? &fused->bias()->grad : nullptr;
    backward_to_projections(dy, dq, dk, dv, out_proj_bias, bias_gradient);
    return fused->backward(dqkv.view({B, N, -1}),
                           bias_gradient ? BiasGradient::summed_by_caller : BiasGradient::compute);
  }
  backward_to_projections(dy, dq, dk, dv, out_proj_bias);
  const std::int64_t B = dq.size(0), N = dq.size(1);
  Tensor dx = q_proj_->backward(dq.contiguous().view({B, N, -1}));
  k_proj_->backward_accumulate(dk.contiguous().view({B, N, -1}), dx);
  v_proj_->backward_accumulate(dv.contiguous().view({B, N, -1}), dx);
  return dx;
}

CrossAttentionGradients MultiheadDilatedAttention::backward_cross(const Tensor& dy) {
  require(cross_, "MultiheadDilatedAttention: the last forward was self-attention; use backward");
  Tensor dq, dk, dv;
  backward_to_projections(dy, dq, dk, dv);
  const std::int64_t B = dq.size(0), N = dq.size(1);
  CrossAttentionGradients grads;
  grads.dx = q_proj_->backward(dq.contiguous().view({B, N, -1}));
  grads.dmemory = k_proj_->backward(dk.contiguous().view({B, N, -1}));
  v_proj_->backward_accumulate(dv.contiguous().view({B, N, -1}), grads.dmemory);
  return grads;
}

AttentionCache MultiheadDilatedAttention::make_cache(std::int64_t batch, std::int64_t max_positions) const {
  require(config_.attention.causal, "a KV cache needs causal self-attention");
  require(batch >= 1, "batch = ", batch, ": must be >= 1");
  require(max_positions >= 1, "max_positions = ", max_positions, ": must be >= 1");
  const Tensor& w = out_proj_.weight()->compute_value();
  AttentionCache cache;
  cache.batch = batch;
  cache.max_positions = max_positions;
  for (const DilationPattern& p : config_.attention.patterns()) {
    const std::int64_t slots = kernels::decode_cache_slots(config_.attention.mode, p.dilation_rate, config_.heads);
    const std::int64_t capacity = kernels::ceil_div(std::min(p.segment_length, max_positions), p.dilation_rate);
    const Shape shape{slots, capacity, batch, config_.key_value_heads(), config_.head_dim()};
    cache.keys.push_back(Tensor::zeros(shape, w.dtype(), w.device()));
    cache.values.push_back(Tensor::zeros(shape, w.dtype(), w.device()));
  }
  return cache;
}

// Projections of x (B, P, d_model) for generation (nothing saved), with keys and queries
// rotated only: the cache keeps keys without xPos's scale, which the decode kernel applies
// as a function of distance (RoPE's rotation is xPos's with its factor 1).
MultiheadDilatedAttention::Projected MultiheadDilatedAttention::project_for_generation(const Tensor& x,
                                                                                       AttentionCache& cache) const {
  require(config_.attention.causal, "generation needs causal self-attention");
  require(x.dim() == 3 && x.size(0) == cache.batch && x.size(2) == config_.d_model, "generation input has shape ",
          shape_to_string(x.shape()), ": must be (batch = ", cache.batch, ", positions, d_model = ", config_.d_model,
          ")");
  require(cache.next_position + x.size(1) <= cache.max_positions, "generation: positions ", cache.next_position, " .. ",
          cache.next_position + x.size(1) - 1, " go beyond the cache's max_positions = ", cache.max_positions);
  const std::int64_t B = x.size(0), P = x.size(1), H = config_.heads, Hk = config_.key_value_heads();
  const std::int64_t D = config_.head_dim();
  Projected projected;
  if (qkv_proj_) {
    const Tensor qkv = qkv_proj_->infer(x).view({B, P, H + 2 * Hk, D});
    projected = {qkv.slice(2, 0, H), qkv.slice(2, H, H + Hk), qkv.slice(2, H + Hk, H + 2 * Hk)};
  } else {
    projected = {q_proj_->infer(x).view({B, P, H, D}), k_proj_->infer(x).view({B, P, Hk, D}),
                 v_proj_->infer(x).view({B, P, Hk, D})};
  }
  return projected;
}

Tensor MultiheadDilatedAttention::output_projection(const Tensor& attention_out) const {
  Tensor o = attention_out.reshape({attention_out.size(0), attention_out.size(1), config_.d_model});
  if (inner_attn_ln_) o = inner_attn_ln_->infer(o);
  return out_proj_.infer(o);
}

namespace {

// Writes the keys and values of positions start .. start + P - 1 (k, v: (B, P, Hk, D),
// keys rotated only) that position `next` and later need into the pattern caches.
void fill_cache(const MultiheadDilatedAttentionConfig& config, const Tensor& k, const Tensor& v, std::int64_t start,
                std::int64_t next, AttentionCache& cache) {
  const std::vector<DilationPattern> patterns = config.attention.patterns();
  const auto G = static_cast<std::int64_t>(patterns.size());
  for (std::int64_t i = 0; i < G; ++i) {
    const DilationPattern& pattern = patterns[static_cast<std::size_t>(i)];
    // The segment of `next`: earlier segments are never read again.
    const std::int64_t segment_start = next / pattern.segment_length * pattern.segment_length;
    for (std::int64_t position = std::max(start, segment_start); position < start + k.size(1); ++position) {
      const std::int64_t t = position - segment_start;
      const std::int64_t offset =
          kernels::decode_cache_offset_of(config.attention.mode, i, G, pattern, config.heads, t);
      if (offset < 0) continue;
      const std::int64_t slot = kernels::decode_cache_slot(config.attention.mode, offset);
      const std::int64_t row = t / pattern.dilation_rate;
      cache.keys[static_cast<std::size_t>(i)].select(0, slot).select(0, row).copy_from(k.select(1, position - start));
      cache.values[static_cast<std::size_t>(i)].select(0, slot).select(0, row).copy_from(v.select(1, position - start));
    }
  }
}

}  // namespace

Tensor MultiheadDilatedAttention::decode(const Tensor& x, AttentionCache& cache) const {
  require(x.dim() == 3 && x.size(1) == 1, "decode: x has shape ", shape_to_string(x.shape()),
          ": must be (batch, 1, d_model)");
  const std::int64_t position = cache.next_position;
  Projected projected = project_for_generation(x, cache);
  const PositionalConfig& pos = config_.positional;
  PositionalConfig rotation = pos;
  rotation.kind = PositionalEncoding::rope;
  if (pos.kind != PositionalEncoding::none) {
    projected.q = apply_positional(rotation, projected.q, position, 0.0, false);
    projected.k = apply_positional(rotation, projected.k, position, 0.0, true);
  }
  fill_cache(config_, projected.k, projected.v, position, position, cache);
  const std::vector<DilationPattern> patterns = config_.attention.patterns();
  kernels::DilatedDecodeParams p;
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    const Tensor& keys = cache.keys[i];
    p.patterns.push_back({patterns[i], keys.size(0), keys.size(1), keys.data(), cache.values[i].data()});
  }
  const Tensor q = projected.q.contiguous();
  const std::int64_t B = cache.batch, H = config_.heads, D = config_.head_dim();
  Tensor out = Tensor::empty({B, H, D}, q.dtype(), q.device());
  p.batch = B;
  p.heads = H;
  p.kv_heads = config_.key_value_heads();
  p.head_dim = D;
  p.position = position;
  p.mode = config_.attention.mode;
  p.scale = resolved_scale(config_);
  p.xpos_scale_base = pos.kind == PositionalEncoding::xpos ? pos.xpos_scale_base : 0.0;
  p.dtype = q.dtype();
  p.q = q.data();
  p.out = out.data();
  if (q.device().is_cuda()) {
    kernels::dilated_decode_cuda(p);
  } else {
    kernels::dilated_decode_cpu(p);
  }
  ++cache.next_position;
  return output_projection(out.view({B, 1, H, D}));
}

Tensor MultiheadDilatedAttention::prefill(const Tensor& x, AttentionCache& cache) const {
  require(cache.next_position == 0, "prefill: the cache already holds ", cache.next_position,
          " positions (prefill starts a sequence; continue with decode)");
  require(x.dim() == 3 && x.size(1) >= 1, "prefill: x has shape ", shape_to_string(x.shape()),
          ": must be (batch, positions >= 1, d_model)");
  const std::int64_t P = x.size(1);
  const Projected projected = project_for_generation(x, cache);
  // The outputs: the full causal forward of the prompt.
  const PositionalConfig& pos = config_.positional;
  const bool rotary = pos.kind != PositionalEncoding::none;
  const double center = xpos_center(P);
  const auto [q, k] = rotary ? apply_positional_query_key(pos, projected.q, projected.k, 0, center)
                             : std::pair{projected.q, projected.k};
  const AttentionOutput attention = dilated_attention_forward(config_.attention, q, k, projected.v);
  // The cache: keys rotated only, of the segments position P is in.
  PositionalConfig rotation = pos;
  rotation.kind = PositionalEncoding::rope;
  const Tensor cached_k = rotary ? apply_positional(rotation, projected.k, 0, 0.0, true) : projected.k;
  fill_cache(config_, cached_k, projected.v, 0, P, cache);
  cache.next_position = P;
  return output_projection(attention.out);
}

void MultiheadDilatedAttention::collect_parameters(std::vector<ParameterPtr>& out) const {
  if (qkv_proj_) {
    qkv_proj_->collect_parameters(out);
  } else {
    q_proj_->collect_parameters(out);
    k_proj_->collect_parameters(out);
    v_proj_->collect_parameters(out);
  }
  if (inner_attn_ln_) inner_attn_ln_->collect_parameters(out);
  out_proj_.collect_parameters(out);
}

}  // namespace longnet::nn
