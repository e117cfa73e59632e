// Shared tensor operations of the nn and model layers (functional.hpp), dispatched on the
// tensors' device.
#include "longnet/nn/functional.hpp"

#include "longnet/kernels/cross_entropy.hpp"
#include "longnet/kernels/elementwise.hpp"
#include "longnet/kernels/gradient_norm.hpp"
#include "longnet/kernels/precision.hpp"

namespace longnet::nn {

void require_floating(const Tensor& x, const char* what, DType dtype, Device device) {
  require(x.defined(), what, " is undefined");
  require(x.dtype() == dtype, what, " has dtype ", dtype_name(x.dtype()), ": must be ", dtype_name(dtype),
          " (the module's dtype)");
  require(x.device() == device, what, " is on ", to_string(x.device()), ": must be on ", to_string(device),
          " (the module's device)");
}

Tensor as_rows(const Tensor& x, std::int64_t columns) {
  require(x.is_contiguous(), "as_rows: the tensor must be contiguous");
  require(columns > 0 && x.numel() % columns == 0, "as_rows: ", x.numel(), " elements do not form rows of ", columns);
  return x.view({x.numel() / columns, columns});
}

namespace {

// out = a + alpha * b over contiguous tensors of out's shape, dtype and device.
void add_kernel(Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  kernels::AddParams p;
  p.count = out.numel();
  p.dtype = out.dtype();
  p.a = a.data();
  p.b = b.data();
  p.alpha = alpha;
  p.out = out.data();
  if (out.device().is_cuda()) {
    kernels::add_cuda(p);
  } else {
    kernels::add_cpu(p);
  }
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
  require(a.shape() == b.shape(), "add: shapes ", shape_to_string(a.shape()), " and ", shape_to_string(b.shape()),
          " differ");
  require(a.defined() && is_floating(a.dtype()), "add: a must be a floating tensor");
  require_floating(b, "add: b", a.dtype(), a.device());
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  add_kernel(out, a.contiguous(), b.contiguous(), alpha);
  return out;
}

void add_into(Tensor& target, const Tensor& b, double alpha) {
  require(target.shape() == b.shape(), "add_into: shapes ", shape_to_string(target.shape()), " and ",
          shape_to_string(b.shape()), " differ");
  require(target.is_contiguous(), "add_into: the target must be contiguous");
  require_floating(b, "add_into: b", target.dtype(), target.device());
  add_kernel(target, target, b.contiguous(), alpha);
}

void scale_in_place(Tensor& x, double factor) {
  require(x.is_contiguous(), "scale_in_place: the tensor must be contiguous");
  if (x.device().is_cuda()) {
    kernels::scale_cuda(x.data(), x.numel(), x.dtype(), factor);
  } else {
    kernels::scale_cpu(x.data(), x.numel(), x.dtype(), factor);
  }
}

double sum_of_squares(const Tensor& x) { return sum_of_squares(std::vector<Tensor>{x}); }

double sum_of_squares(const std::vector<Tensor>& tensors) {
  if (tensors.empty()) return 0.0;
  return queue_sum_of_squares(tensors).item();  // on CUDA the one wait for the device
}

Tensor queue_sum_of_squares(const std::vector<Tensor>& tensors) {
  require(!tensors.empty(), "sum_of_squares: no tensors (the result's device would be unknown)");
  std::vector<Tensor> contiguous;
  std::vector<const void*> data;
  std::vector<std::int64_t> counts;
  for (const Tensor& t : tensors) {
    require(t.defined() && is_floating(t.dtype()), "sum_of_squares: every tensor must be floating");
    require_floating(t, "sum_of_squares: a tensor", tensors.front().dtype(), tensors.front().device());
    contiguous.push_back(t.contiguous());
    data.push_back(contiguous.back().data());
    counts.push_back(t.numel());
  }
  const DType dtype = tensors.front().dtype();
  const Device device = tensors.front().device();
  Tensor total = Tensor::empty({1}, DType::f64, device);
  if (device.is_cuda()) {
    kernels::sum_of_squares_many_into_cuda(data.data(), counts.data(), data.size(), dtype, total.data<double>());
  } else {
    kernels::sum_of_squares_many_into_cpu(data.data(), counts.data(), data.size(), dtype, total.data<double>());
  }
  return total;
}

namespace {

kernels::CrossEntropyParams cross_entropy_params(const Tensor& logits, const Tensor& targets,
                                                 std::int32_t ignore_index) {
  require(logits.defined() && logits.dim() == 2 && logits.is_contiguous(),
          "cross_entropy: logits must be a contiguous (rows, vocab) tensor");
  require(is_floating(logits.dtype()), "cross_entropy: logits must be floating");
  require(targets.defined() && targets.dtype() == DType::i32 && targets.dim() == 1 &&
              targets.size(0) == logits.size(0) && targets.is_contiguous(),
          "cross_entropy: targets must be a contiguous int32 tensor of ", logits.size(0), " rows");
  require(targets.device() == logits.device(), "cross_entropy: targets are on ", to_string(targets.device()),
          " but logits on ", to_string(logits.device()));
  kernels::CrossEntropyParams p;
  p.rows = logits.size(0);
  p.vocab = logits.size(1);
  p.ignore_index = ignore_index;
  p.dtype = logits.dtype();
  p.logits = logits.data();
  p.logits_row_stride = p.vocab;
  p.targets = targets.data<std::int32_t>();
  return p;
}

}  // namespace

CrossEntropyResult cross_entropy_forward(const Tensor& logits, const Tensor& targets, std::int32_t ignore_index) {
  const Tensor host_targets = targets.defined() ? targets.to(Device::cpu()) : targets;
  return cross_entropy_forward(logits, targets, host_targets, ignore_index);
}

CrossEntropyResult cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& host_targets,
                                         std::int32_t ignore_index) {
  kernels::CrossEntropyParams p = cross_entropy_params(logits, targets, ignore_index);
  require(host_targets.defined() && host_targets.device().is_cpu() && host_targets.dtype() == DType::i32 &&
              host_targets.is_contiguous() && host_targets.numel() == p.rows,
          "cross_entropy: the targets' host copy must be a contiguous int32 host tensor of ", p.rows, " elements");
  const std::int32_t* ids = host_targets.data<std::int32_t>();
  CrossEntropyResult result;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int32_t t = ids[r];
    if (t == ignore_index) continue;
    require(t >= 0 && t < p.vocab, "cross_entropy: targets[", r, "] = ", t, ": must be in [0, ", p.vocab,
            ") or the ignore index ", ignore_index);
    ++result.count;
  }
  const DType stats = kernels::accumulation_dtype(logits.dtype());
  const Tensor loss = Tensor::empty({p.rows}, stats, logits.device());
  result.lse = Tensor::empty({p.rows}, stats, logits.device());
  result.loss_sum = Tensor::empty({1}, DType::f64, logits.device());
  p.loss = loss.data();
  p.lse = result.lse.data();
  p.loss_sum = result.loss_sum.data<double>();  // summed where the rows are: nothing waits here
  if (logits.device().is_cuda()) {
    kernels::cross_entropy_forward_cuda(p);
  } else {
    kernels::cross_entropy_forward_cpu(p);
  }
  return result;
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const CrossEntropyResult& forward,
                              std::int32_t ignore_index, double grad_scale) {
  kernels::CrossEntropyParams p = cross_entropy_params(logits, targets, ignore_index);
  require(forward.lse.defined() && forward.lse.numel() == p.rows,
          "cross_entropy_backward: pass the result of cross_entropy_forward of these logits");
  Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  p.lse = forward.lse.data();
  p.grad_scale = grad_scale;
  p.dlogits = dlogits.data();
  p.dlogits_row_stride = p.vocab;
  if (logits.device().is_cuda()) {
    kernels::cross_entropy_backward_cuda(p);
  } else {
    kernels::cross_entropy_backward_cpu(p);
  }
  return dlogits;
}

}  // namespace longnet::nn
