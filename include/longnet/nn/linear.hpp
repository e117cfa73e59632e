// nn::Linear: y (..., out) = x (..., in) W^T + b, weight (out, in), bias (out), PyTorch's
// default initialisation U(-1/sqrt(in), 1/sqrt(in)) unless given. Backward writes dx and
// accumulates dW, db. The weight may be shared with another module (tied embeddings).
// x and y are in the parameters' compute dtype (bf16 under mixed precision).
#pragma once

#include <string>

#include "longnet/kernels/rotary.hpp"
#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

// Who sums the bias gradient, db += column sums of dy, in a Linear's backward: the Linear (a
// pass over dy), or the caller, from a kernel that wrote dy anyway (a LayerNorm backward's
// dx_column_sums, nn::LayerNorm::backward).
enum class BiasGradient { compute, summed_by_caller };

// Whether a Linear's input rows are each followed in memory by the ones column
// (kernels::kOnesColumns values 1, 0, ..., 0): the input is then a column slice [0, in) of
// a wider row-major tensor, as LayerNorm::forward writes it when asked. The Linear's
// backward takes its bias gradient from the weight gradient's GEMM over that column
// (kernels/linear.hpp, x_ones_column) instead of a pass over dy.
enum class OnesColumn { absent, present };

class Linear final : public Module {
 public:
  Linear(const std::string& name, std::int64_t in_features, std::int64_t out_features, bool bias,
         const ParameterOptions& options);
  // Over existing parameters: weight (out, in), bias (out) or null.
  Linear(ParameterPtr weight, ParameterPtr bias);

  // residual (nullable, the output's shape): y = x W^T + b + residual, added in the GEMM's
  // epilogue on CUDA (a transformer's residual stream without an add pass of its own).
  // ones = present: x's rows are followed by the ones column (OnesColumn; x of at least
  // two dimensions, rows evenly strided), saved as the view it is.
  Tensor forward(const Tensor& x, const Tensor* residual = nullptr, OnesColumn ones = OnesColumn::absent);
  Tensor backward(const Tensor& dy, BiasGradient bias = BiasGradient::compute);
  // Backward that adds the input's gradient into dx (dx += dy W) instead of writing a new
  // tensor: several projections of one input (k and v of attention) sum their gradients
  // inside the GEMM, with no separate pass.
  void backward_accumulate(const Tensor& dy, Tensor& dx);
  // forward for a q/k/v projection whose output's first query_columns columns take the
  // query map and the next key_columns the key map (query_map with downscale), rotated in
  // the GEMM's epilogue (kernels/projection_rotary.hpp: Hopper, bf16, heads of 64), when
  // that kernel takes it; an undefined tensor, nothing done or saved, otherwise.
  Tensor forward_rotated(const Tensor& x, std::int64_t query_columns, std::int64_t key_columns,
                         const kernels::RotaryParams& query_map);
  // Without saving anything (generation).
  Tensor infer(const Tensor& x, const Tensor* residual = nullptr) const;

  std::int64_t in_features() const { return weight_->value.size(1); }
  std::int64_t out_features() const { return weight_->value.size(0); }
  const ParameterPtr& weight() const { return weight_; }
  const ParameterPtr& bias() const { return bias_; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  void run_backward(const Tensor& dy, Tensor& dx, bool accumulate, BiasGradient bias);
  // y for rows of x `row_stride` elements apart (columns contiguous).
  Tensor run_forward(const Tensor& x, std::int64_t row_stride, const Tensor* residual) const;

  ParameterPtr weight_, bias_;
  Tensor x_;
  std::int64_t x_row_stride_ = 0;
  OnesColumn x_ones_ = OnesColumn::absent;
};

}  // namespace longnet::nn
