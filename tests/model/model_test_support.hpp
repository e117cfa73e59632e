// Tiny model configurations and helpers shared by the model tests.
#pragma once

#include <string>

#include "longnet/core/error.hpp"
#include "longnet/model/config.hpp"
#include "longnet/model/data.hpp"

namespace longnet::testing {

inline model::LongNetLMConfig tiny_lm_config(DType dtype = DType::f64) {
  model::LongNetLMConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.heads = 2;
  c.kv_heads = 1;
  c.layers = 2;
  c.ffn_dim = 12;
  c.segment_lengths = {3, 6};
  c.dilation_rates = {1, 2};
  c.xpos_scale_base = 8.0;
  c.dtype = c.compute_dtype = dtype;
  return c;
}

inline Tensor random_tokens(std::int64_t batch, std::int64_t seq_len, std::int64_t vocab, std::uint64_t seed) {
  const Tensor u = Tensor::uniform({batch, seq_len}, seed, 0.0, static_cast<double>(vocab), DType::f64);
  std::vector<std::int32_t> ids;
  for (double v : u.to_vector<double>()) ids.push_back(static_cast<std::int32_t>(v));
  return Tensor::from_vector(ids, {batch, seq_len});
}

// A fixed batch every step: for overfitting and for gradient-accumulation checks.
class FixedBatches final : public model::BatchSource {
 public:
  explicit FixedBatches(model::Batch batch) : batch_(std::move(batch)) {}
  model::Batch train_batch(std::int64_t, std::int64_t) const override { return batch_; }
  model::Batch validation_batch(std::int64_t) const override { return batch_; }
  std::int64_t tokens_per_batch() const override { return batch_.inputs.numel(); }

 private:
  model::Batch batch_;
};

// The error message of f(), or "" when it does not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace longnet::testing
