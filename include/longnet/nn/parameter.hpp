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
  Tensor value;              // the master weights (f32, or f64 in tests)
  Tensor grad;               // same dtype as value; zeroed at construction and by zero_grad()
  bool weight_decay = true;  // false for biases and norms (the usual AdamW grouping)
  // Mixed precision: `value` rounded to the compute dtype (bf16), what the GEMMs read;
  // undefined when the model computes in the parameters' dtype. AdamW rewrites it in the
  // pass that updates `value`; whatever else changes `value` (loading a checkpoint,
  // copying parameters) calls refresh_compute() (or Module::refresh_compute_copies()).
  Tensor compute;

  const Tensor& compute_value() const { return compute.defined() ? compute : value; }
  // The dtype of the activations this parameter meets.
  DType compute_dtype() const { return compute_value().dtype(); }
  void refresh_compute();
};
using ParameterPtr = std::shared_ptr<Parameter>;

// Where and in what precision a module's parameters live, and the seed of their
// initialisation. Mixed precision (CUDA only): dtype f32 (master weights, gradients,
// optimizer state) with compute_dtype bf16 (activations and the weights' compute copies,
// Parameter::compute); otherwise the two are equal (the CPU computes in f32 or f64).
struct ParameterOptions {
  DType dtype = DType::f32;
  DType compute_dtype = DType::f32;
  Device device = Device::cpu();
  std::uint64_t seed = 0;
};

// A new parameter with a zero gradient (and its compute copy under mixed precision);
// `value` is moved to the options' device/dtype. Checks the options (DESIGN 6).
ParameterPtr make_parameter(std::string name, const Tensor& value, const ParameterOptions& options,
                            bool weight_decay = true);
// Puts the parameters' values, gradients and compute copies each into one buffer, in order
// (each tensor becomes a view of its buffer; the values are kept), so that consecutive
// parameters can run as one GEMM (adjacent_parameter): q, k and v's projections stay three
// parameters, with torchscale's names, and run as one. Same dtypes and device; every later
// write to a parameter is in place (copy_from, the optimizer), which keeps the views.
void pack_parameters(const std::vector<ParameterPtr>& params);
// A parameter spanning `params` (their first dimensions summed, the rest equal) while
// their values, gradients and compute copies are still adjacent in memory (as
// pack_parameters leaves them), else null. Its tensors are views: a GEMM over it reads and
// writes the parameters themselves. Not a parameter of any module.
ParameterPtr adjacent_parameter(const std::vector<ParameterPtr>& params, const std::string& name);

// Throws Error unless the options are usable (dtypes, mixed precision only on CUDA, the
// device present); `name` names what they are for.
void validate_parameter_options(const ParameterOptions& options, const std::string& name);

// The seed of one parameter's initialisation: a hash of the model seed and the name, so
// initial values do not depend on construction order.
std::uint64_t parameter_seed(std::uint64_t seed, std::string_view name);

// Initial values (f64 on the CPU; make_parameter converts).
Tensor uniform_init(const Shape& shape, std::uint64_t seed, double bound);         // U(-bound, bound)
Tensor normal_init(const Shape& shape, std::uint64_t seed, double std);            // N(0, std^2)
Tensor xavier_uniform_init(std::int64_t out, std::int64_t in, std::uint64_t seed,  // gain sqrt(6 / (in + out))
                           double gain);

struct SequenceSharding;  // sequence_sharding.hpp

// What a forward call needs besides its inputs: whether dropout is active and the
// counters of the randomness (dropout masks are functions of (seed, step, micro_step,
// stream), so backward, a resumed run and any device regenerate the same masks), and
// whether the backward of this forward must be bitwise repeatable on CUDA (the attention
// backward then runs without atomics, DilatedAttentionConfig::deterministic, about a third
// slower; everything else is deterministic anyway). The CPU always is. With `sequence`,
// the inputs are this process's rows of every sequence and the forward (and its backward)
// is collective over the sharding's communicator (sequence_sharding.hpp).
struct ForwardContext {
  bool training = false;
  std::uint64_t seed = 0;
  std::int64_t step = 0;        // optimizer step
  std::int64_t micro_step = 0;  // micro-batch inside a step (gradient accumulation)
  bool deterministic = false;
  const SequenceSharding* sequence = nullptr;  // null: the whole sequences
};

class Module {
 public:
  virtual ~Module() = default;
  // Appends this module's parameters (each once, in a fixed order) to `out`.
  virtual void collect_parameters(std::vector<ParameterPtr>& out) const = 0;
  std::vector<ParameterPtr> parameters() const;
  void zero_grad() const;
  // Rounds every parameter's value into its compute copy (mixed precision; no-op otherwise).
  void refresh_compute_copies() const;
};

// Appends `p` unless the same Parameter is already in `out` (tied weights).
void append_unique(std::vector<ParameterPtr>& out, const ParameterPtr& p);

}  // namespace longnet::nn
