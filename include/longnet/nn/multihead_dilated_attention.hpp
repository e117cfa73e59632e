// nn::MultiheadDilatedAttention: LongNet's multi-head dilated attention with MAGNETO's
// sub-LayerNorm, as torchscale's MultiheadAttention/DilatedAttention:
//   q = x Wq^T + bq  (B, N, H, D);   k = m Wk^T + bk, v = m Wv^T + bv  (B, N, Hk, D)
//   q, k <- xPos/RoPE(q), xPos/RoPE(k)      (m = x for self-attention, the memory for
//                                             cross-attention; equal length N)
//   o = dilated_attention(q, k, v)          (the layer's DilatedAttentionConfig)
//   y = out_proj(inner_attn_ln(o))          (sub-LN only with sub_layer_norm)
// H query heads, Hk key/value heads (grouped-query attention when Hk < H); D = d_model / H.
// Separate q/k/v projections or one fused qkv_proj ((H + 2 Hk) D, d_model) for
// self-attention. Initialisation: q, k, v Xavier-uniform with gain 1/sqrt 2, out_proj
// Xavier-uniform, biases 0, then v and out_proj weights times `gamma` (MAGNETO).
//
// Generation: decode() runs one new position against a bounded per-pattern KV cache
// (kernels/dilated_decode.hpp), equal to the full causal forward at that position.
//
// Sequence parallelism: a forward whose context names a SequenceSharding takes this rank's
// rows of x (and of the memory), encodes positions at their global values and attends
// through a SequenceParallelDilatedAttention over the sharding's communicator (made on
// first use and kept, so its plan is reused); forward and backward are then collective.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/sequence_parallel_attention.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "longnet/nn/linear.hpp"
#include "longnet/nn/positional.hpp"
#include "longnet/nn/sequence_sharding.hpp"

namespace longnet::nn {

// Whether self-attention on a Hopper GPU runs its q/k/v projection with the positional
// encoding in the GEMM's epilogue (Linear::forward_rotated). Default from
// LONGNET_FUSED_PROJECTION, read once: 1 on, otherwise off (opt-in until it has been
// measured in the training step).
bool fused_projection_enabled();
void set_fused_projection(bool enabled);

struct MultiheadDilatedAttentionConfig {
  std::int64_t d_model = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;  // 0: equal to heads
  DilatedAttentionConfig attention;
  PositionalConfig positional;
  bool fused_qkv = false;
  bool bias = true;
  bool sub_layer_norm = true;
  double layer_norm_eps = 1e-5;
  double gamma = 1.0;  // MAGNETO's initialisation scale of v_proj and out_proj

  std::int64_t key_value_heads() const { return kv_heads == 0 ? heads : kv_heads; }
  std::int64_t head_dim() const { return d_model / heads; }
  void validate() const;
};

struct CrossAttentionGradients {
  Tensor dx;       // with respect to the queries' input
  Tensor dmemory;  // with respect to the memory
};

// The KV cache of one attention layer for generation: per pattern i, keys and values of
// shape (slots_i, capacity_i, batch, Hk, D), capacity_i = ceil(min(w_i, max_positions) / r_i).
struct AttentionCache {
  std::int64_t batch = 0;
  std::int64_t max_positions = 0;
  std::int64_t next_position = 0;
  std::vector<Tensor> keys, values;
  std::size_t bytes() const;
};

class MultiheadDilatedAttention final : public Module {
 public:
  MultiheadDilatedAttention(const std::string& name, const MultiheadDilatedAttentionConfig& config,
                            const ParameterOptions& options);

  // Self-attention: x (B, N, d_model) -> (B, N, d_model), in the parameters' compute dtype.
  // context.deterministic makes the backward of this forward bitwise repeatable on CUDA.
  // residual (nullable, x's shape) is added to the output by out_proj's GEMM.
  Tensor forward(const Tensor& x, const ForwardContext& context = {}, const Tensor* residual = nullptr);
  // out_proj_bias = summed_by_caller: the caller added dy's column sums into
  // output_bias_gradient() (which must then be non-null).
  Tensor backward(const Tensor& dy, BiasGradient out_proj_bias = BiasGradient::compute);
  // Called ahead of backward (a layer calls it before the backward of what follows the
  // attention): under an active GradientStream on CUDA, the attention's dq accumulator is
  // allocated and zero-filled on the side stream now, overlapping that work, instead of on
  // the critical path at the attention's backward. Otherwise nothing.
  void prepare_backward();
  // out_proj's bias gradient (the column sums of backward's dy) after a self-attention
  // forward; null without a bias or after cross-attention.
  Tensor* output_bias_gradient();
  // Cross-attention over a memory of the same shape as x.
  Tensor forward(const Tensor& x, const Tensor& memory, const ForwardContext& context = {});
  CrossAttentionGradients backward_cross(const Tensor& dy);

  // Generation (causal self-attention only): a cache for `batch` sequences of up to
  // `max_positions` positions, and one step at the cache's next position: x (B, 1, d_model).
  AttentionCache make_cache(std::int64_t batch, std::int64_t max_positions) const;
  Tensor decode(const Tensor& x, AttentionCache& cache) const;
  // A whole prompt at once into an empty cache: x (B, P, d_model) -> the causal forward's
  // output (B, P, d_model); the cache then holds what positions P, P + 1, ... need (the
  // current segment of each pattern) and decode() goes on at position P.
  Tensor prefill(const Tensor& x, AttentionCache& cache) const;

  const MultiheadDilatedAttentionConfig& config() const { return config_; }
  void collect_parameters(std::vector<ParameterPtr>& out) const override;

 private:
  struct Projected {
    Tensor q, k, v;        // (B, N, heads, D) views
    bool rotated = false;  // q and k carry the positional encoding (the fused projection's epilogue)
  };
  // q from x, k and v from memory (null: self-attention, which may run them as one GEMM);
  // saves the projections' inputs. With `rotate` (self-attention over one whole sequence
  // per batch row) and fused_projection_enabled(), the fused q/k/v GEMM may apply the
  // positional encoding as it writes q and k (Linear::forward_rotated), which `rotated`
  // then says.
  Projected project(const Tensor& x, const Tensor* memory, bool rotate = false);
  Projected project_for_generation(const Tensor& x, AttentionCache& cache) const;
  Tensor output_projection(const Tensor& attention_out) const;
  Tensor attend_and_project(const Projected& projected, std::int64_t seq_len, const SequenceSharding* sequence,
                            const Tensor* residual = nullptr);
  // The positional encoding of q or k (B, N, heads, D) at the saved positions.
  // Into `out` (x's shape, any strides) when it is defined, else a new tensor (x itself
  // without an encoding).
  Tensor encode_positions(const Tensor& x, bool is_key, bool transpose, Tensor out = {}) const;
  // q and k through the forward map in one pass (apply_positional_query_key_into).
  std::pair<Tensor, Tensor> encode_query_key_positions(const Tensor& q, const Tensor& k) const;
  // qkv_column_sums (unsharded only): += the column sums of [dq | dk | dv], taken as the
  // attention writes them (the fused projection's bias gradient).
  Tensor backward_to_projections(const Tensor& dy, Tensor& dq, Tensor& dk, Tensor& dv,
                                 BiasGradient out_proj_bias = BiasGradient::compute, Tensor* qkv_column_sums = nullptr);

  MultiheadDilatedAttentionConfig config_;
  std::unique_ptr<Linear> q_proj_, k_proj_, v_proj_, qkv_proj_;
  // The last self-attention forward's one GEMM over q, k, v's packed parameters (null when
  // it ran three: cross-attention, or parameters no longer adjacent).
  std::unique_ptr<Linear> packed_qkv_;
  // The one q/k/v GEMM of the last forward: qkv_proj_ or packed_qkv_, else null.
  Linear* fused_projection() const { return qkv_proj_ ? qkv_proj_.get() : packed_qkv_.get(); }
  Linear out_proj_;
  std::unique_ptr<LayerNorm> inner_attn_ln_;
  bool cross_ = false;
  // Saved by forward for backward.
  Tensor q_, k_, v_;  // after the positional encoding (the attention's inputs)
  AttentionOutput attention_;
  std::vector<SequenceBlock> positions_;  // runs of local rows and their global positions
  double xpos_center_ = 0;                // of the whole sequence
  bool deterministic_ = false;
  // prepare_backward's zero-filled dq accumulator and the event the backward waits on.
  Tensor dq_accumulator_;
  StreamEvent dq_accumulator_ready_;
  // Sequence parallelism: the operator (kept across calls) and whether the last forward used it.
  std::unique_ptr<SequenceParallelDilatedAttention> sequence_parallel_;
  bool sharded_ = false;
};

}  // namespace longnet::nn
