// Parameters, initialisers and the Module base (parameter.hpp).
#include "longnet/nn/parameter.hpp"

#include <algorithm>
#include <cmath>

#include "longnet/kernels/counter_rng.hpp"

namespace longnet::nn {

void validate_parameter_options(const ParameterOptions& options, const std::string& name) {
  require(options.dtype == DType::f32 || options.dtype == DType::f64, "parameter ", name,
          ": dtype = ", dtype_name(options.dtype), ": parameters (master weights) must be f32 or f64");
  const bool mixed = options.compute_dtype != options.dtype;
  require(!mixed || (options.dtype == DType::f32 && options.compute_dtype == DType::bf16), "parameter ", name,
          ": compute_dtype = ", dtype_name(options.compute_dtype), " with dtype = ", dtype_name(options.dtype),
          ": must equal dtype, or be bf16 with dtype f32 (mixed precision)");
  require(!mixed || options.device.is_cuda(), "parameter ", name, ": compute_dtype = bf16 on ",
          to_string(options.device), ": mixed precision needs a CUDA device (the CPU computes in f32 or f64)");
  require_device_available(options.device, "parameter device");
}

void Parameter::refresh_compute() {
  if (compute.defined()) compute.copy_from(value);
}

ParameterPtr make_parameter(std::string name, const Tensor& value, const ParameterOptions& options, bool weight_decay) {
  validate_parameter_options(options, name);
  auto p = std::make_shared<Parameter>();
  p->name = std::move(name);
  Tensor converted = value.to(options.device, options.dtype);
  p->value = converted.storage() == value.storage() ? value.clone() : converted.contiguous();
  p->grad = Tensor::zeros(p->value.shape(), p->value.dtype(), p->value.device());
  p->weight_decay = weight_decay;
  if (options.compute_dtype != options.dtype) {
    p->compute = Tensor::empty(p->value.shape(), options.compute_dtype, options.device);
    p->refresh_compute();
  }
  return p;
}

namespace {

// One buffer holding the tensors selected by `member` of every parameter, in order; each
// parameter's tensor is replaced by a view of it with its values.
template <class Member>
void pack_member(const std::vector<ParameterPtr>& params, Member member) {
  const Tensor& first = (*params.front()).*member;
  if (!first.defined()) return;
  std::int64_t total = 0;
  for (const ParameterPtr& p : params) total += ((*p).*member).numel();
  const Tensor buffer = Tensor::empty({total}, first.dtype(), first.device());
  std::int64_t at = 0;
  for (const ParameterPtr& p : params) {
    Tensor& t = (*p).*member;
    Tensor view = Tensor::from_storage(buffer.storage(), t.shape(), t.dtype(), {}, at);
    view.copy_from(t);
    at += t.numel();
    t = view;
  }
}

// The contiguous tensor of `shape` spanning the `member` tensors of `params` when they are
// adjacent views of one storage, else undefined.
template <class Member>
Tensor spanning(const std::vector<ParameterPtr>& params, Member member, const Shape& shape) {
  const Tensor& first = (*params.front()).*member;
  std::int64_t at = first.storage_offset();
  for (const ParameterPtr& p : params) {
    const Tensor& t = (*p).*member;
    if (!t.defined() || !t.is_contiguous() || t.storage() != first.storage() || t.dtype() != first.dtype() ||
        t.storage_offset() != at) {
      return {};
    }
    at += t.numel();
  }
  return Tensor::from_storage(first.storage(), shape, first.dtype(), {}, first.storage_offset());
}

}  // namespace

void pack_parameters(const std::vector<ParameterPtr>& params) {
  if (params.size() < 2) return;
  const Parameter& first = *params.front();
  for (const ParameterPtr& p : params) {
    require(p && p->value.dtype() == first.value.dtype() && p->value.device() == first.value.device() &&
                p->compute.defined() == first.compute.defined(),
            "pack_parameters: the parameters must share dtypes and device");
  }
  pack_member(params, &Parameter::value);
  pack_member(params, &Parameter::grad);
  pack_member(params, &Parameter::compute);
}

ParameterPtr adjacent_parameter(const std::vector<ParameterPtr>& params, const std::string& name) {
  if (params.empty()) return nullptr;
  Shape shape = params.front()->value.shape();
  if (shape.empty()) return nullptr;
  shape[0] = 0;
  for (const ParameterPtr& p : params) {
    if (!p || p->value.dim() != static_cast<int>(shape.size())) return nullptr;
    for (std::size_t d = 1; d < shape.size(); ++d) {
      if (p->value.size(static_cast<int>(d)) != shape[d]) return nullptr;
    }
    shape[0] += p->value.size(0);
  }
  auto span = std::make_shared<Parameter>();
  span->name = name;
  span->value = spanning(params, &Parameter::value, shape);
  span->grad = spanning(params, &Parameter::grad, shape);
  if (params.front()->compute.defined()) {
    span->compute = spanning(params, &Parameter::compute, shape);
    if (!span->compute.defined()) return nullptr;
  }
  if (!span->value.defined() || !span->grad.defined()) return nullptr;
  return span;
}

std::uint64_t parameter_seed(std::uint64_t seed, std::string_view name) {
  std::uint64_t hash = 0xCBF29CE484222325ull;  // FNV-1a
  for (char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001B3ull;
  }
  return kernels::mix64(seed ^ kernels::mix64(hash));
}

namespace {
Tensor scaled(Tensor t, double factor) {
  double* data = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) data[i] *= factor;
  return t;
}
}  // namespace

Tensor uniform_init(const Shape& shape, std::uint64_t seed, double bound) {
  if (bound == 0) return Tensor::zeros(shape, DType::f64);
  return Tensor::uniform(shape, seed, -bound, bound, DType::f64);
}

Tensor normal_init(const Shape& shape, std::uint64_t seed, double std) {
  return scaled(Tensor::randn(shape, seed, DType::f64), std);
}

Tensor xavier_uniform_init(std::int64_t out, std::int64_t in, std::uint64_t seed, double gain) {
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(in + out));
  return uniform_init({out, in}, seed, bound);
}

std::vector<ParameterPtr> Module::parameters() const {
  std::vector<ParameterPtr> out;
  collect_parameters(out);
  return out;
}

void Module::zero_grad() const {
  std::vector<Tensor> grads;  // handles to the gradients' storage
  for (const ParameterPtr& p : parameters()) grads.push_back(p->grad);
  zero_tensors(grads);
}

void Module::refresh_compute_copies() const {
  for (const ParameterPtr& p : parameters()) p->refresh_compute();
}

void append_unique(std::vector<ParameterPtr>& out, const ParameterPtr& p) {
  if (p && std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
}

}  // namespace longnet::nn
