// nn::Embedding: out (B, N, dim) = weight[tokens] * scale, weight (vocab, dim) initialised
// N(0, dim^-1) as torchscale's language models do. Tokens are int32 or int64 on any
// device; every id must be in [0, vocab) (checked, naming the bad id). Backward
// scatter-adds into the weight's gradient. The output is in the weight's compute dtype
// (bf16 under mixed precision), looked up from the f32 table.
#pragma once

#include <string>

#include "longnet/nn/parameter.hpp"

namespace longnet::nn {

class Embedding final : public Module {
 public:
  Embedding(const std::string& name, std::int64_t vocab, std::int64_t dim, double scale,
            const ParameterOptions& options);
  // Over an existing (vocab, dim) weight: a second use of a shared table (encoder and
  // decoder of an encoder-decoder model), each use with its own saved tokens.
  Embedding(ParameterPtr weight, double scale);

  Tensor forward(const Tensor& tokens);
  void backward(const Tensor& dout);
  Tensor infer(const Tensor& tokens) const;

  std::int64_t vocab() const { return weight_->value.size(0); }
  std::int64_t dim() const { return weight_->value.size(1); }
  const ParameterPtr& weight() const { return weight_; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

  // tokens as int32 on `device`, validated against the vocabulary.
  static Tensor prepare_tokens(const Tensor& tokens, std::int64_t vocab, Device device, const char* what);

 private:
  Tensor lookup(const Tensor& tokens) const;  // tokens: validated int32 on the weight's device

  ParameterPtr weight_;
  double scale_;
  Tensor tokens_;
  Tensor host_tokens_;         // CUDA: the validated ids on the host, sorted by backward
  Tensor order_, run_starts_;  // CUDA backward: rows sorted by token (embedding.hpp)
};

}  // namespace longnet::nn
