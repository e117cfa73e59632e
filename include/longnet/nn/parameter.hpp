// Parameters, modules and the per-call context of the nn layer.
//
// A Parameter is a named value tensor with its gradient (same shape, dtype and device).
// Modules own their parameters through shared pointers (so a tied weight is one Parameter
// in two modules) and have explicit forward/backward: forward saves what backward needs,
// backward takes the gradient of the loss with respect to the output, returns the
// gradient with respect to the input (written) and adds the parameter gradients into
// Parameter::grad (accumulated, as llm.c). Names are PyTorch-style
// ("layers.0.attn.q_proj.weight"), weights (out, in). Forward keeps references to its
// inputs (no copies), so a caller must not modify an input in place before backward.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/core/tensor.hpp"

namespace longnet::nn {

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;               // zeroed at construction and by zero_grad()
  bool weight_decay = true;  // false for biases and norms (the usual AdamW grouping)
};
using ParameterPtr = std::shared_ptr<Parameter>;

// Where and in what precision a module's parameters live, and the seed of their
// initialisation. `compute_dtype` is the design hook for mixed precision: parameters stay
// in `dtype` (f32 master weights) while activations may be computed in bf16 on CUDA; today
// the two must be equal (the CPU computes in f32 or f64).
struct ParameterOptions {
  DType dtype = DType::f32;
  DType compute_dtype = DType::f32;
  Device device = Device::cpu();
  std::uint64_t seed = 0;
};

// A new parameter with a zero gradient; `value` is moved to the options' device/dtype.
ParameterPtr make_parameter(std::string name, const Tensor& value, const ParameterOptions& options,
                            bool weight_decay = true);

// The seed of one parameter's initialisation: a hash of the model seed and the name, so
// initial values do not depend on construction order.
std::uint64_t parameter_seed(std::uint64_t seed, std::string_view name);

// Initial values (f64 on the CPU; make_parameter converts).
Tensor uniform_init(const Shape& shape, std::uint64_t seed, double bound);         // U(-bound, bound)
Tensor normal_init(const Shape& shape, std::uint64_t seed, double std);            // N(0, std^2)
Tensor xavier_uniform_init(std::int64_t out, std::int64_t in, std::uint64_t seed,  // gain sqrt(6 / (in + out))
                           double gain);

// What a forward call needs besides its inputs: whether dropout is active and the
// counters of the randomness (dropout masks are functions of (seed, step, micro_step,
// stream), so backward, a resumed run and any device regenerate the same masks).
struct ForwardContext {
  bool training = false;
  std::uint64_t seed = 0;
  std::int64_t step = 0;        // optimizer step
  std::int64_t micro_step = 0;  // micro-batch inside a step (gradient accumulation)
};

class Module {
 public:
  virtual ~Module() = default;
  // Appends this module's parameters (each once, in a fixed order) to `out`.
  virtual void collect_parameters(std::vector<ParameterPtr>& out) const = 0;
  std::vector<ParameterPtr> parameters() const;
  void zero_grad() const;
};

// Appends `p` unless the same Parameter is already in `out` (tied weights).
void append_unique(std::vector<ParameterPtr>& out, const ParameterPtr& p);

}  // namespace longnet::nn
