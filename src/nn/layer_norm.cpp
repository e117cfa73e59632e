// nn::LayerNorm (layer_norm.hpp) over kernels/layer_norm.hpp. Under mixed precision the
// rows are bf16 and the kernel reads the f32 weight and bias and keeps f32 statistics.
#include "longnet/nn/layer_norm.hpp"

#include <cmath>
#include <string>

#include "longnet/kernels/layer_norm.hpp"
#include "longnet/nn/functional.hpp"

namespace longnet::nn {

LayerNorm::LayerNorm(const std::string& name, std::int64_t dim, double eps, const ParameterOptions& options)
    : eps_(eps) {
  require(dim >= 1, name, ": dim = ", dim, ": must be >= 1");
  require(eps > 0 && std::isfinite(eps), name, ": eps = ", eps, ": must be positive and finite");
  weight_ = make_parameter(name + ".weight", Tensor::full({dim}, 1.0, DType::f64), options, false);
  bias_ = make_parameter(name + ".bias", Tensor::zeros({dim}, DType::f64), options, false);
}

Tensor LayerNorm::run_forward(const Tensor& x_in, kernels::LayerNormInput input, OnesColumn ones, Tensor* mean,
                              Tensor* rstd) const {
  const Tensor& w = weight_->value;
  const DType dtype = weight_->compute_dtype();
  require_floating(x_in, "LayerNorm input", dtype, w.device());
  require(x_in.dim() >= 1 && x_in.size(-1) == dim(), weight_->name, ": input has shape ", shape_to_string(x_in.shape()),
          ": the last dimension must be ", dim());
  const Tensor x = x_in.contiguous();
  const std::int64_t rows = x.numel() / dim();
  const DType stats = kernels::accumulation_dtype(dtype);
  // With the ones column: rows of dim + kOnesColumns, of which `out` is the first dim.
  const std::int64_t row_stride = ones == OnesColumn::present ? dim() + kernels::kOnesColumns : dim();
  Shape padded_shape = x.shape();
  padded_shape.back() = row_stride;
  const Tensor padded = Tensor::empty(padded_shape, dtype, w.device());
  const Tensor out = ones == OnesColumn::present ? padded.slice(x.dim() - 1, 0, dim()) : padded;
  *mean = Tensor::empty({rows}, stats, w.device());
  *rstd = Tensor::empty({rows}, stats, w.device());
  kernels::LayerNormParams p;
  p.rows = rows;
  p.columns = dim();
  p.eps = eps_;
  p.dtype = dtype;
  p.input = input;
  p.x = x.data();
  p.x_row_stride = dim();
  p.weight = w.data();
  p.bias = bias_->value.data();
  p.out = out.data();
  p.out_row_stride = row_stride;
  p.out_ones_column = ones == OnesColumn::present;
  p.mean = mean->data();
  p.rstd = rstd->data();
  if (w.device().is_cuda()) {
    kernels::layer_norm_forward_cuda(p);
  } else {
    kernels::layer_norm_forward_cpu(p);
  }
  return out;
}

Tensor LayerNorm::infer(const Tensor& x, kernels::LayerNormInput input) const {
  Tensor mean, rstd;
  return run_forward(x, input, OnesColumn::absent, &mean, &rstd);
}

Tensor LayerNorm::forward(const Tensor& x, kernels::LayerNormInput input, OnesColumn ones) {
  Tensor out = run_forward(x, input, ones, &mean_, &rstd_);
  x_ = x.contiguous();
  input_ = input;
  return out;
}

Tensor LayerNorm::backward(const Tensor& dy_in, const Tensor* dresidual_in, Tensor* dx_column_sums,
                           Tensor* segment_dots) {
  require(x_.defined(), weight_->name, ": backward called before forward");
  const Tensor& w = weight_->value;
  const DType dtype = weight_->compute_dtype();
  require_floating(dy_in, "LayerNorm output gradient", dtype, w.device());
  require(dy_in.shape() == x_.shape(), weight_->name, ": dy has shape ", shape_to_string(dy_in.shape()), ": must be ",
          shape_to_string(x_.shape()));
  const Tensor dy = dy_in.contiguous();
  Tensor dresidual;
  if (dresidual_in) {
    require_floating(*dresidual_in, "LayerNorm residual gradient", dtype, w.device());
    require(dresidual_in->shape() == x_.shape(), weight_->name, ": the residual gradient has shape ",
            shape_to_string(dresidual_in->shape()), ": must be ", shape_to_string(x_.shape()));
    dresidual = dresidual_in->contiguous();
  }
  if (dx_column_sums) {
    // Accumulated in place: it must be the gradient-dtype (dim) vector itself, not a copy.
    const std::string what = weight_->name + ": dx_column_sums";
    require_floating(*dx_column_sums, what.c_str(), kernels::accumulation_dtype(dtype), w.device());
    require(dx_column_sums->shape() == Shape{dim()} && dx_column_sums->is_contiguous(), what, " has shape ",
            shape_to_string(dx_column_sums->shape()), ": must be a contiguous ", shape_to_string({dim()}));
  }
  if (segment_dots) {
    const std::string what = weight_->name + ": segment_dots";
    require(input_ == kernels::LayerNormInput::identity, what, " of a gelu input: not supported");
    require(x_.dim() == 3, what, " needs a (batch, seq_len, dim) input; it was ", shape_to_string(x_.shape()));
    require_floating(*segment_dots, what.c_str(), kernels::accumulation_dtype(dtype), w.device());
    const std::int64_t S = segment_dots->dim() == 3 ? segment_dots->size(1) : 0;
    require(segment_dots->dim() == 3 && segment_dots->size(0) == x_.size(0) && segment_dots->size(2) == x_.size(1) &&
                S > 0 && dim() % S == 0 && segment_dots->is_contiguous(),
            what, " has shape ", shape_to_string(segment_dots->shape()), ": must be a contiguous (", x_.size(0),
            ", S, ", x_.size(1), ") with S dividing ", dim());
  }
  Tensor dx = Tensor::empty(x_.shape(), dtype, w.device());
  kernels::LayerNormParams p;
  p.rows = x_.numel() / dim();
  p.columns = dim();
  p.eps = eps_;
  p.dtype = dtype;
  p.input = input_;
  p.x = x_.data();
  p.x_row_stride = dim();
  p.weight = w.data();
  p.bias = bias_->value.data();
  p.mean = mean_.data();
  p.rstd = rstd_.data();
  p.dout = dy.data();
  p.dout_row_stride = dim();
  p.dx = dx.data();
  p.dx_row_stride = dim();
  if (dresidual.defined()) {
    p.dresidual = dresidual.data();
    p.dresidual_row_stride = dim();
  }
  p.dweight = weight_->grad.data();
  p.dbias = bias_->grad.data();
  p.dx_column_sums = dx_column_sums ? dx_column_sums->data() : nullptr;
  if (segment_dots) {
    p.segment_dots = segment_dots->data();
    p.segment_columns = dim() / segment_dots->size(1);
    p.segment_rows_per_batch = x_.size(1);
  }
  if (w.device().is_cuda()) {
    kernels::layer_norm_backward_cuda(p);
  } else {
    kernels::layer_norm_backward_cpu(p);
  }
  return dx;
}

void LayerNorm::collect_parameters(std::vector<ParameterPtr>& out) const {
  append_unique(out, weight_);
  append_unique(out, bias_);
}

}  // namespace longnet::nn
