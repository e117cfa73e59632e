// nn::Linear (linear.hpp) over kernels/linear.hpp. Under mixed precision the GEMMs read
// the bf16 compute copies of the weight and bias and bf16 activations, and the gradients
// go into the f32 Parameter::grad (the kernel accumulates in f32).
#include "longnet/nn/linear.hpp"

#include <cmath>

#include "longnet/core/gradient_stream.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/projection_rotary.hpp"
#include "longnet/nn/deferred_gradient_zero.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::nn {
namespace {

Shape with_last(Shape shape, std::int64_t last) {
  shape.back() = last;
  return shape;
}

}  // namespace

Linear::Linear(const std::string& name, std::int64_t in_features, std::int64_t out_features, bool bias,
               const ParameterOptions& options) {
  require(in_features >= 1, name, ": in_features = ", in_features, ": must be >= 1");
  require(out_features >= 1, name, ": out_features = ", out_features, ": must be >= 1");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight_ = make_parameter(
      name + ".weight",
      uniform_init({out_features, in_features}, parameter_seed(options.seed, name + ".weight"), bound), options);
  if (bias) {
    bias_ = make_parameter(name + ".bias",
                           uniform_init({out_features}, parameter_seed(options.seed, name + ".bias"), bound), options,
                           /*weight_decay=*/false);
  }
}

Linear::Linear(ParameterPtr weight, ParameterPtr bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
  require(weight_ && weight_->value.dim() == 2, "Linear: the weight must be a (out, in) parameter");
  if (bias_) {
    require(bias_->value.dim() == 1 && bias_->value.size(0) == weight_->value.size(0),
            "Linear: the bias must have out_features = ", weight_->value.size(0), " elements");
    require(bias_->compute_dtype() == weight_->compute_dtype(), "Linear: the bias computes in ",
            dtype_name(bias_->compute_dtype()), " but the weight in ", dtype_name(weight_->compute_dtype()));
  }
}

Tensor Linear::run_forward(const Tensor& x, std::int64_t row_stride, const Tensor* residual_in) const {
  const Tensor& w = weight_->compute_value();
  Tensor y = Tensor::empty(with_last(x.shape(), out_features()), w.dtype(), w.device());
  Tensor residual;
  if (residual_in) {
    require_floating(*residual_in, "Linear residual", w.dtype(), w.device());
    require(residual_in->shape() == y.shape(), weight_->name, ": the residual has shape ",
            shape_to_string(residual_in->shape()), ": must be the output's ", shape_to_string(y.shape()));
    residual = residual_in->contiguous();
  }
  kernels::LinearParams p;
  p.rows = x.numel() / in_features();
  p.in_features = in_features();
  p.out_features = out_features();
  p.dtype = w.dtype();
  p.x = x.data();
  p.x_row_stride = row_stride;
  p.weight = w.data();
  p.bias = bias_ ? bias_->compute_value().data() : nullptr;
  p.y = y.data();
  p.y_row_stride = out_features();
  if (residual.defined()) {
    p.residual = residual.data();
    p.residual_row_stride = out_features();
  }
  if (w.device().is_cuda()) {
    kernels::linear_forward_cuda(p);
  } else {
    kernels::linear_forward_cpu(p);
  }
  return y;
}

namespace {

void check_input(const Tensor& x, const Parameter& weight, std::int64_t in_features) {
  require_floating(x, "Linear input", weight.compute_dtype(), weight.value.device());
  require(x.dim() >= 1 && x.size(-1) == in_features, weight.name, ": input has shape ", shape_to_string(x.shape()),
          ": the last dimension must be in_features = ", in_features);
}

// The row stride of x followed by the ones column: its columns contiguous, its rows evenly
// strided with room for the column.
std::int64_t ones_column_row_stride(const Tensor& x, const Parameter& weight, std::int64_t in_features) {
  const int d = x.dim();
  bool even = d >= 2 && x.stride(d - 1) == 1;
  for (int k = 0; even && k + 2 < d; ++k) even = x.stride(k) == x.stride(k + 1) * x.size(k + 1);
  require(even, weight.name, ": an input followed by the ones column must have at least two dimensions, ",
          "contiguous columns and evenly strided rows; it has shape ", shape_to_string(x.shape()));
  const std::int64_t row_stride = x.stride(d - 2);
  require(row_stride >= in_features + kernels::kOnesColumns, weight.name, ": an input followed by the ones column ",
          "needs a row stride of at least in_features + ", kernels::kOnesColumns, " = ",
          in_features + kernels::kOnesColumns, "; it has ", row_stride);
  return row_stride;
}

}  // namespace

Tensor Linear::infer(const Tensor& x, const Tensor* residual) const {
  check_input(x, *weight_, in_features());
  return run_forward(x.contiguous(), in_features(), residual);
}

Tensor Linear::forward(const Tensor& x, const Tensor* residual, OnesColumn ones) {
  check_input(x, *weight_, in_features());
  if (ones == OnesColumn::present) {
    x_row_stride_ = ones_column_row_stride(x, *weight_, in_features());
    x_ = x;
  } else {
    x_row_stride_ = in_features();
    x_ = x.contiguous();
  }
  x_ones_ = ones;
  return run_forward(x_, x_row_stride_, residual);
}

Tensor Linear::forward_rotated(const Tensor& x, std::int64_t query_columns, std::int64_t key_columns,
                               const kernels::RotaryParams& query_map) {
  check_input(x, *weight_, in_features());
  const Tensor& w = weight_->compute_value();
  if (!w.device().is_cuda()) return {};
  const Tensor input = x.contiguous();
  kernels::ProjectionRotaryParams p;
  p.rows = input.numel() / in_features();
  p.in_features = in_features();
  p.out_features = out_features();
  p.dtype = w.dtype();
  p.x = input.data();
  p.x_row_stride = in_features();
  p.weight = w.data();
  p.bias = bias_ ? bias_->compute_value().data() : nullptr;
  p.y_row_stride = out_features();
  p.query_columns = query_columns;
  p.key_columns = key_columns;
  p.query_map = query_map;
  // Asked before y exists (the pool's allocations are 16-byte aligned; the kernel's entry
  // checks y again), so a projection it does not take allocates nothing.
  if (!kernels::projection_rotary_supported(p)) return {};
  Tensor y = Tensor::empty(with_last(input.shape(), out_features()), w.dtype(), w.device());
  p.y = y.data();
  kernels::projection_rotary_cuda(p);
  x_ = input;
  x_row_stride_ = in_features();
  x_ones_ = OnesColumn::absent;
  return y;
}

void Linear::run_backward(const Tensor& dy_in, Tensor& dx, bool accumulate, BiasGradient bias) {
  require(x_.defined(), weight_->name, ": backward called before forward");
  const Tensor& w = weight_->compute_value();
  require_floating(dy_in, "Linear output gradient", w.dtype(), w.device());
  require(dy_in.shape() == with_last(x_.shape(), out_features()), weight_->name, ": dy has shape ",
          shape_to_string(dy_in.shape()), ": must be ", shape_to_string(with_last(x_.shape(), out_features())));
  const Tensor dy = dy_in.contiguous();
  kernels::LinearParams p;
  p.rows = x_.numel() / in_features();
  p.in_features = in_features();
  p.out_features = out_features();
  p.dtype = w.dtype();
  p.x = x_.data();
  p.x_row_stride = x_row_stride_;
  p.x_ones_column = x_ones_ == OnesColumn::present;
  p.weight = w.data();
  p.dy = dy.data();
  p.dy_row_stride = out_features();
  p.dx = dx.data();
  p.dx_row_stride = in_features();
  p.dx_accumulate = accumulate;
  p.dweight = weight_->grad.data();
  if (DeferredGradientZero* deferred = DeferredGradientZero::active()) p.dweight_store = deferred->take(weight_->grad);
  p.dbias = bias_ && bias == BiasGradient::compute ? bias_->grad.data() : nullptr;
  if (!w.device().is_cuda()) return kernels::linear_backward_cpu(p);
  GradientStream* side = GradientStream::active(w.device());
  if (side == nullptr || (p.dweight == nullptr && p.dbias == nullptr)) return kernels::linear_backward_cuda(p);
  // dx on the current stream, dW (and db) on the gradient stream, which reads dy and x.
  kernels::LinearParams input_gradient = p;
  input_gradient.dweight = input_gradient.dbias = nullptr;
  kernels::linear_backward_cuda(input_gradient);
  kernels::LinearParams weight_gradient = p;
  weight_gradient.dx = nullptr;
  side->run([&] { kernels::linear_backward_cuda(weight_gradient); }, {dy, x_});
}

Tensor Linear::backward(const Tensor& dy, BiasGradient bias) {
  require(x_.defined(), weight_->name, ": backward called before forward");
  Tensor dx = Tensor::empty(x_.shape(), weight_->compute_dtype(), weight_->value.device());
  run_backward(dy, dx, /*accumulate=*/false, bias);
  return dx;
}

void Linear::backward_accumulate(const Tensor& dy, Tensor& dx) {
  require(x_.defined(), weight_->name, ": backward called before forward");
  require(dx.defined() && dx.shape() == x_.shape() && dx.is_contiguous(), weight_->name,
          ": the gradient to add into must be a contiguous tensor of the input's shape ", shape_to_string(x_.shape()));
  require_floating(dx, "Linear input gradient", weight_->compute_dtype(), weight_->value.device());
  run_backward(dy, dx, /*accumulate=*/true, BiasGradient::compute);
}

void Linear::collect_parameters(std::vector<ParameterPtr>& out) const {
  append_unique(out, weight_);
  append_unique(out, bias_);
}

}  // namespace longnet::nn
