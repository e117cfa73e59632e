// Block-sparse attention: configuration, validation, backend choice, the mask's arrays on
// the device, and the calls into the kernels (see block_sparse_attention.hpp).
#include "longnet/attention/block_sparse_attention.hpp"

#include <cmath>
#include <functional>

#include "attention/attention_calls.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/block_sparse_attention.hpp"

namespace longnet {

// The mask's CSR arrays where the kernels read them: host memory for the CPU, tensors on
// the device for CUDA (copied once per mask and device by the operator).
struct BlockSparseDeviceLayout {
  Device device;
  Tensor row_offsets, column_indices, row_partial, column_offsets, row_indices, column_partial;
};

namespace {

using Predicate = std::function<bool(std::int64_t, std::int64_t, std::int64_t)>;

bool call_predicate(const void* context, std::int64_t head, std::int64_t query, std::int64_t key) {
  return (*static_cast<const Predicate*>(context))(head, query, key);
}

template <class T>
Tensor device_copy(const std::vector<T>& values, Device device) {
  // An empty list still needs a valid pointer: one padding element.
  std::vector<T> padded = values;
  if (padded.empty()) padded.push_back(T{});
  return Tensor::from_vector(padded, {static_cast<std::int64_t>(padded.size())}).to(device);
}

std::shared_ptr<BlockSparseDeviceLayout> copy_layout(const BlockMask& mask, Device device) {
  auto layout = std::make_shared<BlockSparseDeviceLayout>();
  layout->device = device;
  layout->row_offsets = device_copy(mask.row_offsets(), device);
  layout->column_indices = device_copy(mask.column_indices(), device);
  layout->row_partial = device_copy(mask.row_partial(), device);
  layout->column_offsets = device_copy(mask.column_offsets(), device);
  layout->row_indices = device_copy(mask.row_indices(), device);
  layout->column_partial = device_copy(mask.column_partial(), device);
  return layout;
}

using attention_calls::row_tensor;
using attention_calls::with_contiguous_rows;

Backend resolve(Backend backend, const Tensor& q) { return attention_calls::resolve_backend(backend, q); }

kernels::BlockSparseAttentionParams make_params(const BlockMask& mask, const BlockSparseDeviceLayout* device,
                                                const BlockSparseOptions& options, const Tensor& q, const Tensor& k) {
  kernels::BlockSparseAttentionParams p;
  p.batch = q.size(0);
  p.seq_len = q.size(1);
  p.heads = q.size(2);
  p.kv_heads = k.size(2);
  p.head_dim = q.size(3);
  p.scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  p.dtype = q.dtype();
  p.deterministic = options.deterministic;
  kernels::BlockSparseLayout& l = p.layout;
  l.block_q = mask.block_q();
  l.block_k = mask.block_k();
  l.query_blocks = mask.query_blocks();
  l.key_blocks = mask.key_blocks();
  l.mask_heads = mask.heads();
  l.causal = mask.grid().causal;
  l.min_distance = mask.element_mask().min_distance;
  l.max_distance = mask.element_mask().max_distance;
  if (device) {
    l.row_offsets = device->row_offsets.data<std::int64_t>();
    l.column_indices = device->column_indices.data<std::int32_t>();
    l.row_partial = device->row_partial.data<std::uint8_t>();
    l.column_offsets = device->column_offsets.data<std::int64_t>();
    l.row_indices = device->row_indices.data<std::int32_t>();
    l.column_partial = device->column_partial.data<std::uint8_t>();
  } else {
    l.row_offsets = mask.row_offsets().data();
    l.column_indices = mask.column_indices().data();
    l.row_partial = mask.row_partial().data();
    l.column_offsets = mask.column_offsets().data();
    l.row_indices = mask.row_indices().data();
    l.column_partial = mask.column_partial().data();
    if (mask.element_mask().predicate) {
      l.predicate = call_predicate;
      l.predicate_context = &mask.element_mask().predicate;
    }
  }
  return p;
}

void validate_options(const BlockSparseOptions& options) {
  if (options.scale) require(std::isfinite(*options.scale), "scale = ", *options.scale, ": must be finite");
}

AttentionOutput run_forward(const BlockMask& mask, const BlockSparseDeviceLayout* device, const Tensor& q_in,
                            const Tensor& k_in, const Tensor& v_in, const BlockSparseOptions& options,
                            Backend backend) {
  validate_block_sparse_inputs(mask, q_in, k_in, v_in);
  validate_options(options);
  backend = resolve(backend, q_in);
  std::shared_ptr<BlockSparseDeviceLayout> copied;
  if (backend == Backend::cuda && !device) {
    copied = copy_layout(mask, q_in.device());
    device = copied.get();
  }
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  AttentionOutput result{Tensor::empty(q.shape(), q.dtype(), q.device()),
                         Tensor::empty({q.size(0), q.size(2), q.size(1)}, kernels::lse_dtype(q.dtype()), q.device())};
  kernels::BlockSparseAttentionParams p = make_params(mask, backend == Backend::cuda ? device : nullptr, options, q, k);
  p.q = row_tensor(q);
  p.k = row_tensor(k);
  p.v = row_tensor(v);
  p.out = row_tensor(result.out);
  p.lse = result.lse.data();
  if (backend == Backend::cuda) {
    kernels::block_sparse_attention_forward_cuda(p);
  } else {
    kernels::block_sparse_attention_forward_cpu(p);
  }
  return result;
}

AttentionGradients run_backward(const BlockMask& mask, const BlockSparseDeviceLayout* device, const Tensor& q_in,
                                const Tensor& k_in, const Tensor& v_in, const AttentionOutput& forward,
                                const Tensor& dout_in, const BlockSparseOptions& options, Backend backend) {
  validate_block_sparse_inputs(mask, q_in, k_in, v_in);
  validate_options(options);
  backend = resolve(backend, q_in);
  attention_calls::validate_backward_inputs(q_in, forward, dout_in);
  std::shared_ptr<BlockSparseDeviceLayout> copied;
  if (backend == Backend::cuda && !device) {
    copied = copy_layout(mask, q_in.device());
    device = copied.get();
  }
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  const Tensor out = with_contiguous_rows(forward.out), dout = with_contiguous_rows(dout_in);
  const Tensor lse = forward.lse.contiguous();
  AttentionGradients grads{Tensor::empty(q.shape(), q.dtype(), q.device()),
                           Tensor::empty(k.shape(), k.dtype(), k.device()),
                           Tensor::empty(v.shape(), v.dtype(), v.device())};
  kernels::BlockSparseAttentionParams p = make_params(mask, backend == Backend::cuda ? device : nullptr, options, q, k);
  p.q = row_tensor(q);
  p.k = row_tensor(k);
  p.v = row_tensor(v);
  p.out = row_tensor(out);
  p.lse = lse.data();
  p.dout = row_tensor(dout);
  p.dq = row_tensor(grads.dq);
  p.dk = row_tensor(grads.dk);
  p.dv = row_tensor(grads.dv);
  if (backend == Backend::cuda) {
    kernels::block_sparse_attention_backward_cuda(p);
  } else {
    kernels::block_sparse_attention_backward_cpu(p);
  }
  return grads;
}

}  // namespace

void BlockSparseConfig::validate() const {
  require(block_q >= 1, "block_q = ", block_q, ": must be >= 1");
  require(block_k >= 1, "block_k = ", block_k, ": must be >= 1");
  require(!patterns.empty(), "patterns is empty: give at least one block pattern (local, sliding_window, dilated, ",
          "global, random, hierarchical)");
  for (const BlockPattern& pattern : patterns) pattern.validate();
  if (scale) require(std::isfinite(*scale), "scale = ", *scale, ": must be finite");
}

BlockGrid BlockSparseConfig::grid(std::int64_t seq_len) const {
  validate();
  return {seq_len, block_q, block_k, causal};
}

BlockMask BlockSparseConfig::mask(std::int64_t seq_len, std::int64_t heads) const {
  return build_block_mask(grid(seq_len), patterns, heads);
}

void validate_block_sparse_inputs(const BlockMask& mask, const Tensor& q, const Tensor& k, const Tensor& v) {
  // The tensors follow dilated attention's rules (shapes, GQA, dtypes, devices).
  validate_attention_inputs(DilatedAttentionConfig::dense(), q, k, v);
  require(mask.seq_len() == q.size(1), "block mask has seq_len ", mask.seq_len(), " but q has seq_len ", q.size(1),
          ": build the mask for the inputs' length");
  require(mask.heads() == 1 || mask.heads() == q.size(2), "block mask has ", mask.heads(), " heads but q has ",
          q.size(2), ": a mask is shared (1 head) or has one per query head");
  if (q.device().is_cuda()) {
    require(!mask.element_mask().predicate,
            "block mask has an element predicate: predicates run on the CPU only (on CUDA use causal or a band, ",
            "ElementMask::band)");
  }
}

AttentionOutput block_sparse_attention_forward(const BlockMask& mask, const Tensor& q, const Tensor& k, const Tensor& v,
                                               const BlockSparseOptions& options, Backend backend) {
  return run_forward(mask, nullptr, q, k, v, options, backend);
}

AttentionGradients block_sparse_attention_backward(const BlockMask& mask, const Tensor& q, const Tensor& k,
                                                   const Tensor& v, const AttentionOutput& forward, const Tensor& dout,
                                                   const BlockSparseOptions& options, Backend backend) {
  return run_backward(mask, nullptr, q, k, v, forward, dout, options, backend);
}

double block_sparse_attention_forward_flops(const BlockMask& mask, std::int64_t batch, std::int64_t heads,
                                            std::int64_t head_dim) {
  double pairs = 0;
  if (mask.shared()) {
    pairs = static_cast<double>(heads) * static_cast<double>(mask.attended_pairs(0));
  } else {
    for (std::int64_t h = 0; h < heads; ++h) pairs += static_cast<double>(mask.attended_pairs(h));
  }
  return 4.0 * static_cast<double>(head_dim) * static_cast<double>(batch) * pairs;
}

BlockSparseAttention::BlockSparseAttention(BlockSparseConfig config, Backend backend)
    : config_(std::move(config)), backend_(backend) {
  config_->validate();
  options_ = config_->options();
}

BlockSparseAttention::BlockSparseAttention(BlockMask mask, BlockSparseOptions options, Backend backend)
    : options_(options), backend_(backend), mask_(std::move(mask)), have_mask_(true) {
  validate_options(options_);
}

BlockSparseAttention::~BlockSparseAttention() = default;

std::string BlockSparseAttention::name() const { return str("block_sparse/", to_string(backend_)); }

const BlockMask& BlockSparseAttention::mask_for(const Tensor& q) {
  require(q.defined() && q.dim() == 4, "q must be 4-D (batch, seq_len, heads, head_dim)");
  if (config_ && (!have_mask_ || mask_.seq_len() != q.size(1) || mask_heads_for_ != q.size(2))) {
    mask_ = config_->mask(q.size(1), q.size(2));
    mask_heads_for_ = q.size(2);
    have_mask_ = true;
    device_layout_.reset();
  }
  return mask_;
}

AttentionOutput BlockSparseAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v) {
  const BlockMask& mask = mask_for(q);
  if (resolve(backend_, q) == Backend::cuda && (!device_layout_ || !(device_layout_->device == q.device()))) {
    validate_block_sparse_inputs(mask, q, k, v);
    device_layout_ = copy_layout(mask, q.device());
  }
  AttentionOutput result = run_forward(mask, device_layout_.get(), q, k, v, options_, backend_);
  q_ = q;
  k_ = k;
  v_ = v;
  saved_ = result;
  return result;
}

AttentionGradients BlockSparseAttention::backward(const Tensor& dout) {
  require(q_.defined(), "BlockSparseAttention::backward called before forward");
  const BlockSparseDeviceLayout* device = q_.device().is_cuda() ? device_layout_.get() : nullptr;
  return run_backward(mask_, device, q_, k_, v_, saved_, dout, options_, backend_);
}

std::unique_ptr<Attention> make_attention(std::string_view name, const BlockSparseConfig& config) {
  if (name == "auto") return std::make_unique<BlockSparseAttention>(config, Backend::automatic);
  if (name == "cpu") return std::make_unique<BlockSparseAttention>(config, Backend::cpu);
  if (name == "cuda") {
    require(cuda_compiled(), "make_attention: name = 'cuda' but this build has no CUDA backend");
    return std::make_unique<BlockSparseAttention>(config, Backend::cuda);
  }
  throw Error(str("make_attention: name = '", name, "': must be auto, cpu or cuda"));
}

}  // namespace longnet
