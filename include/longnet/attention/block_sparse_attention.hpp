// Block-sparse attention (DESIGN 2.5): a functional API over a BlockMask, a configuration
// of generators with validation, and the BlockSparseAttention operator with its factory.
// Shapes as dilated attention: q (B, N, H, D); k, v (B, N, Hk, D) with H % Hk == 0; out
// (B, N, H, D); lse (B, H, N) float32 (float64 for f64). Any N (blocks are cut at N),
// strided inputs, any float dtype. One softmax per query row over every key of all its
// listed blocks; rows with no key give out = 0 and lse = -inf; backward is exact
// (DESIGN 2.3).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/attention/attention.hpp"
#include "longnet/attention/block_mask.hpp"
#include "longnet/attention/block_patterns.hpp"
#include "longnet/attention/dilated_attention.hpp"

namespace longnet {

struct BlockSparseOptions {
  std::optional<double> scale;  // default 1 / sqrt(head_dim)
  // CUDA: bitwise-reproducible backward without atomics. The CPU is always deterministic.
  bool deterministic = false;
};

// Block sizes, causal and the generators whose union is the mask; the mask is built for
// the N and H of the inputs.
struct BlockSparseConfig {
  std::int64_t block_q = 64;
  std::int64_t block_k = 64;
  bool causal = false;
  std::vector<BlockPattern> patterns{BlockPattern::local_window(1)};
  std::optional<double> scale;
  bool deterministic = false;

  // Throws Error naming the field and the rule (DESIGN 6).
  void validate() const;
  BlockGrid grid(std::int64_t seq_len) const;
  BlockMask mask(std::int64_t seq_len, std::int64_t heads) const;
  BlockSparseOptions options() const { return {scale, deterministic}; }
};

// Checks q, k, v (as dilated attention does) and the mask against them: mask seq_len =
// N, mask heads 1 or H; on CUDA no predicate. Throws Error naming what is wrong.
void validate_block_sparse_inputs(const BlockMask& mask, const Tensor& q, const Tensor& k, const Tensor& v);

AttentionOutput block_sparse_attention_forward(const BlockMask& mask, const Tensor& q, const Tensor& k, const Tensor& v,
                                               const BlockSparseOptions& options = {},
                                               Backend backend = Backend::automatic);
AttentionGradients block_sparse_attention_backward(const BlockMask& mask, const Tensor& q, const Tensor& k,
                                                   const Tensor& v, const AttentionOutput& forward, const Tensor& dout,
                                                   const BlockSparseOptions& options = {},
                                                   Backend backend = Backend::automatic);

// FLOPs of a forward pass by DESIGN 4's rule: 4 * D * attended (query, key) pairs.
double block_sparse_attention_forward_flops(const BlockMask& mask, std::int64_t batch, std::int64_t heads,
                                            std::int64_t head_dim);

// The mask's arrays on a device (internal to the implementation).
struct BlockSparseDeviceLayout;

class BlockSparseAttention final : public Attention {
 public:
  // The mask is built from the config for the inputs' N and H (and kept while they stay).
  explicit BlockSparseAttention(BlockSparseConfig config, Backend backend = Backend::automatic);
  // A fixed mask (its N must be the inputs').
  explicit BlockSparseAttention(BlockMask mask, BlockSparseOptions options = {}, Backend backend = Backend::automatic);
  ~BlockSparseAttention() override;
  std::string name() const override;
  AttentionOutput forward(const Tensor& q, const Tensor& k, const Tensor& v) override;
  AttentionGradients backward(const Tensor& dout) override;
  // The mask of the last forward (or the fixed one).
  const BlockMask& mask() const { return mask_; }

 private:
  const BlockMask& mask_for(const Tensor& q);

  std::optional<BlockSparseConfig> config_;
  BlockSparseOptions options_;
  Backend backend_;
  BlockMask mask_;
  bool have_mask_ = false;
  std::int64_t mask_heads_for_ = 0;  // H the config's mask was built for
  std::shared_ptr<BlockSparseDeviceLayout> device_layout_;
  Tensor q_, k_, v_;
  AttentionOutput saved_;
};

// The factory for block-sparse attention: "auto" (backend from the tensors' device at
// each call), "cpu" or "cuda".
std::unique_ptr<Attention> make_attention(std::string_view name, const BlockSparseConfig& config);

}  // namespace longnet
