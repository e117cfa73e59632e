// Dilated attention (DESIGN 2.1-2.3): configuration, a functional API and the
// DilatedAttention operator. The backend follows the tensors' device (or is forced).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/attention/attention.hpp"
#include "longnet/kernels/dilation.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet {

using kernels::DilatedMode;
using kernels::DilationPattern;

std::string_view to_string(DilatedMode mode);  // "longnet" or "head_groups"
DilatedMode parse_dilated_mode(std::string_view text, std::string_view argument = "mode");

struct DilatedAttentionConfig {
  std::vector<std::int64_t> segment_lengths;  // w_i >= 1 (may exceed N)
  std::vector<std::int64_t> dilation_rates;   // 1 <= r_i <= w_i
  DilatedMode mode = DilatedMode::longnet;
  bool causal = false;
  std::optional<double> scale;  // default 1 / sqrt(head_dim)
  // CUDA: bitwise-reproducible backward without atomics. The CPU is always deterministic.
  bool deterministic = false;

  // Throws Error naming the argument, the value and the rule (DESIGN 6).
  void validate() const;
  std::vector<DilationPattern> patterns() const;

  // Dense attention as a dilated attention: one segment covering any N, rate 1.
  static DilatedAttentionConfig dense(bool causal = false);
};

enum class Backend { automatic, cpu, cuda };
std::string_view to_string(Backend backend);

// Checks q, k, v against each other and the config (shapes, H % Hk, dtypes, devices,
// H >= G in head-groups mode); throws Error naming what is wrong.
void validate_attention_inputs(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k, const Tensor& v);

// Functional API. Inputs may be strided and of any float dtype (all the same); outputs
// are new tensors (out and gradients in the inputs' dtype, lse float32).
AttentionOutput dilated_attention_forward(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k,
                                          const Tensor& v, Backend backend = Backend::automatic);
AttentionGradients dilated_attention_backward(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k,
                                              const Tensor& v, const AttentionOutput& forward, const Tensor& dout,
                                              Backend backend = Backend::automatic);

// Options of the backward, each optional:
// - dq_rotary, dk_rotary: the rotary maps (kernels/rotary.hpp: kind, base, scale_base,
//   position_start, center, downscale) of a positional encoding applied to q and k before
//   the attention; dq and dk are returned rotated back (dq = M_q^T dL/d(rotated q)): the
//   encoding's backward, fused (on CUDA as the fp32 accumulators are converted, which
//   saves a pass over each).
// - dq, dk, dv: tensors to write the gradients into instead of new ones (q's, k's and v's
//   shapes, dtype and device, head dims contiguous, other strides free: e.g. slices of a
//   fused qkv projection's gradient); they must not overlap the inputs.
// - gradient_column_sums: a contiguous ((H + 2 Hk) D) tensor in the accumulation dtype
//   (f64 for f64 inputs, f32 otherwise) on the inputs' device, to which the column sums of
//   [dq | dk | dv] as returned (each position's gradient rows side by side, summed over
//   batch and positions) are added: a fused q/k/v projection's bias gradient. On CUDA the
//   conversion of the fp32 gradients sums them as it writes them, which saves a pass over
//   the projection's output gradient; the sum takes the order of a Linear's bias gradient
//   of that matrix (the same bits). The gradients (new or given) must then lie as
//   (B N, heads D) matrices: head rows adjacent, batches N positions apart.
// - output_deltas: delta = rowsum(dout * out) of every (b, h, n), contiguous (B, H, N)
//   in lse's dtype on the inputs' device, when the caller has it (nn::LayerNorm's
//   segment_dots takes it as the sub-LayerNorm after the attention writes dout): the
//   backward uses it instead of a pass over out and dout of its own.
// - dq_accumulator: on CUDA, a zero-filled contiguous (B, N, H, D) tensor in the
//   accumulation dtype on the inputs' device, which the backward accumulates dq in
//   (overwriting it) instead of allocating and zero-filling one: the caller's fill can run
//   on another stream ahead of the call (nn's GradientStream::run_ahead), ordered before it
//   on the current stream. The CPU backend has no accumulator and ignores it.
struct AttentionBackwardOptions {
  const kernels::RotaryParams* dq_rotary = nullptr;
  const kernels::RotaryParams* dk_rotary = nullptr;
  Tensor dq, dk, dv;
  Tensor gradient_column_sums;
  Tensor output_deltas;
  Tensor dq_accumulator;
};
AttentionGradients dilated_attention_backward(const DilatedAttentionConfig& config, const Tensor& q, const Tensor& k,
                                              const Tensor& v, const AttentionOutput& forward, const Tensor& dout,
                                              const AttentionBackwardOptions& options,
                                              Backend backend = Backend::automatic);

// FLOPs of a forward pass by DESIGN 4's rule: 4 * D * attended (query, key) pairs.
double dilated_attention_forward_flops(const DilatedAttentionConfig& config, std::int64_t batch, std::int64_t seq_len,
                                       std::int64_t heads, std::int64_t head_dim);

class DilatedAttention final : public Attention {
 public:
  explicit DilatedAttention(DilatedAttentionConfig config, Backend backend = Backend::automatic);
  std::string name() const override;
  AttentionOutput forward(const Tensor& q, const Tensor& k, const Tensor& v) override;
  AttentionGradients backward(const Tensor& dout) override;
  const DilatedAttentionConfig& config() const { return config_; }

 private:
  DilatedAttentionConfig config_;
  Backend backend_;
  Tensor q_, k_, v_;
  AttentionOutput saved_;
};

// The factory: "auto" (backend from the tensors' device at each call), "cpu" or "cuda".
std::unique_ptr<Attention> make_attention(std::string_view name, const DilatedAttentionConfig& config);

}  // namespace longnet
