// nn::Embedding (embedding.hpp) over kernels/embedding.hpp. The rows come out in the
// compute dtype (bf16 under mixed precision) from the f32 table. On CUDA the backward needs
// the rows sorted by token (deterministic scatter-add): forward keeps the host's token ids
// and backward sorts them, so no id travels back from the device.
#include "longnet/nn/embedding.hpp"

#include <cmath>

#include "longnet/kernels/embedding.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::nn {

Embedding::Embedding(const std::string& name, std::int64_t vocab, std::int64_t dim, double scale,
                     const ParameterOptions& options)
    : scale_(scale) {
  require(vocab >= 1, name, ": vocab = ", vocab, ": must be >= 1");
  require(dim >= 1, name, ": dim = ", dim, ": must be >= 1");
  weight_ = make_parameter(name + ".weight",
                           normal_init({vocab, dim}, parameter_seed(options.seed, name + ".weight"),
                                       1.0 / std::sqrt(static_cast<double>(dim))),
                           options);
}

Embedding::Embedding(ParameterPtr weight, double scale) : weight_(std::move(weight)), scale_(scale) {
  require(weight_ && weight_->value.dim() == 2, "Embedding: the weight must be a (vocab, dim) parameter");
}

namespace {

// The ids as a validated contiguous int32 host tensor.
Tensor host_tokens(const Tensor& tokens, std::int64_t vocab, const char* what) {
  require(tokens.defined(), what, " is undefined");
  require(tokens.dtype() == DType::i32 || tokens.dtype() == DType::i64, what, " has dtype ", dtype_name(tokens.dtype()),
          ": must be i32 or i64");
  if (tokens.dtype() == DType::i64) {
    // Checked before narrowing, so an id beyond int32 is reported as it is.
    const std::vector<std::int64_t> wide = tokens.to_vector<std::int64_t>();
    for (std::size_t i = 0; i < wide.size(); ++i) {
      require(wide[i] >= 0 && wide[i] < vocab, what, "[", i, "] = ", wide[i], ": must be in [0, ", vocab, ")");
    }
  }
  Tensor host = tokens.to(Device::cpu(), DType::i32).contiguous();
  const std::int32_t* ids = host.data<std::int32_t>();
  const std::int64_t count = host.numel();
  for (std::int64_t i = 0; i < count; ++i) {
    require(ids[i] >= 0 && ids[i] < vocab, what, "[", i, "] = ", ids[i], ": must be in [0, ", vocab, ")");
  }
  return host;
}

}  // namespace

Tensor Embedding::prepare_tokens(const Tensor& tokens, std::int64_t vocab, Device device, const char* what) {
  return host_tokens(tokens, vocab, what).to(device);
}

Tensor Embedding::infer(const Tensor& tokens) const {
  return lookup(prepare_tokens(tokens, vocab(), weight_->value.device(), "tokens"));
}

Tensor Embedding::lookup(const Tensor& tokens) const {
  const Tensor& w = weight_->value;
  Shape shape = tokens.shape();
  shape.push_back(dim());
  Tensor out = Tensor::empty(shape, weight_->compute_dtype(), w.device());
  kernels::EmbeddingParams p;
  p.count = tokens.numel();
  p.vocab = vocab();
  p.dim = dim();
  p.scale = scale_;
  p.dtype = out.dtype();
  p.tokens = tokens.data<std::int32_t>();
  p.table = w.data();
  p.out = out.data();
  if (w.device().is_cuda()) {
    kernels::embedding_forward_cuda(p);
  } else {
    kernels::embedding_forward_cpu(p);
  }
  return out;
}

Tensor Embedding::forward(const Tensor& tokens) {
  const Device device = weight_->value.device();
  const Tensor host = host_tokens(tokens, vocab(), "tokens");
  tokens_ = host.to(device);
  // The rows' sort for the CUDA backward waits for backward: there the host has queued
  // the whole backward ahead of the device, here the device would wait for the sort.
  // (A copy when `host` is the caller's tensor, which may change before backward.)
  host_tokens_ = !device.is_cuda() ? Tensor() : host.storage() == tokens.storage() ? host.clone() : host;
  order_ = run_starts_ = Tensor();
  return lookup(tokens_);
}

void Embedding::backward(const Tensor& dout_in) {
  require(tokens_.defined(), weight_->name, ": backward called before forward");
  const Tensor& w = weight_->value;
  require_floating(dout_in, "Embedding output gradient", weight_->compute_dtype(), w.device());
  require(dout_in.numel() == tokens_.numel() * dim(), weight_->name, ": dout has shape ",
          shape_to_string(dout_in.shape()), ": must be (tokens..., ", dim(), ")");
  const Tensor dout = dout_in.contiguous();
  kernels::EmbeddingParams p;
  p.count = tokens_.numel();
  p.vocab = vocab();
  p.dim = dim();
  p.scale = scale_;
  p.dtype = dout.dtype();
  p.tokens = tokens_.data<std::int32_t>();
  p.dout = dout.data();
  // The table's gradient is added into (a table the LM head shares has its head's part).
  if (DeferredGradientZero* deferred = DeferredGradientZero::active()) deferred->materialize(weight_->grad);
  p.dtable = weight_->grad.data();
  if (host_tokens_.defined() && !order_.defined()) {
    std::vector<std::int32_t> order;
    std::vector<std::int64_t> run_starts;
    kernels::embedding_sort_rows(host_tokens_.data<std::int32_t>(), host_tokens_.numel(), order, run_starts);
    order_ = Tensor::from_vector(order, {static_cast<std::int64_t>(order.size())}).to(w.device());
    run_starts_ = Tensor::from_vector(run_starts, {static_cast<std::int64_t>(run_starts.size())}).to(w.device());
  }
  if (order_.defined()) {
    p.order = order_.data<std::int32_t>();
    p.run_starts = run_starts_.data<std::int64_t>();
    p.runs = run_starts_.numel() - 1;
  }
  if (w.device().is_cuda()) {
    kernels::embedding_backward_cuda(p);
  } else {
    kernels::embedding_backward_cpu(p);
  }
}

void Embedding::collect_parameters(std::vector<ParameterPtr>& out) const { append_unique(out, weight_); }

}  // namespace longnet::nn
