// Sequence-parallel dilated attention (DESIGN 2.6): P ranks each hold some rows of q
// (B, N, H, D), k and v (B, N, Hk, D) and together compute exactly the single-process
// dilated attention of the whole sequence (2.1/2.2) and its exact gradients (2.3), each
// rank getting out, lse, dq, dk, dv for its own rows.
//
// Layouts (SequenceLayout): contiguous slices of any lengths >= 1 in rank order (the
// default; each rank's length is its q's seq_len), or zigzag (2P blocks, rank r holds
// blocks r and 2P-1-r one after the other; balances causal work; shard with
// SequenceLayout::zigzag(N, P).shard(global, rank)). Slices need not align with segments.
//
// One forward: agree on shapes (one all-reduce and one all-gather of a few integers),
// pack the dilated rows of k and v the plan sends, one exchange with the peers the plan
// names, then the local kernel. One backward: the local kernel (dq complete; dk, dv of
// local and of received rows), the received rows' gradients go back to their owners in
// one exchange, and are added there. A failure on any rank (bad argument, error status)
// becomes the same Error "rank r: ..." on every rank.
//
// Rules (checked, with an Error on every rank): every rank holds >= 1 row (zigzag: N >=
// 2P, and each rank's rows equal what the zigzag layout gives it); all ranks pass the
// same batch, heads, kv heads, head_dim and dtype; tensors live where the communicator
// works (MPI and self: the CPU; NCCL: its GPU, bf16 or f16).
//
// On a GPU the exchange overlaps compute: it runs on a side stream while the current
// stream attends the local key pieces (forward), or the local pieces' backward runs while
// the received rows' gradients travel back (backward); events order the two streams.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "longnet/attention/attention.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_layout.hpp"
#include "longnet/dist/sequence_parallel_plan.hpp"

namespace longnet {

class SequenceParallelDilatedAttention final : public Attention {
 public:
  SequenceParallelDilatedAttention(DilatedAttentionConfig config, std::shared_ptr<Communicator> comm,
                                   SequenceOrder order = SequenceOrder::contiguous);

  std::string name() const override;  // "dilated/sequence_parallel/<communicator>"
  // Collective: every rank calls it with its local rows.
  AttentionOutput forward(const Tensor& q, const Tensor& k, const Tensor& v) override;
  // Collective: dq, dk, dv of the local rows of the last forward.
  AttentionGradients backward(const Tensor& dout) override;

  const DilatedAttentionConfig& config() const { return config_; }
  Communicator& communicator() const { return *comm_; }
  SequenceOrder order() const { return order_; }
  // The layout and this rank's plan of the last forward (Error before the first).
  const SequenceLayout& layout() const;
  const SequenceParallelPlan& plan() const;

 private:
  void prepare(const Tensor& q, const Tensor& k, const Tensor& v);

  DilatedAttentionConfig config_;
  std::shared_ptr<Communicator> comm_;
  SequenceOrder order_;
  std::optional<SequenceLayout> layout_;
  std::optional<SequenceParallelPlan> plan_;
  Tensor q_, k_, v_, k_gathered_, v_gathered_;
  AttentionOutput saved_;
  std::unique_ptr<SideStream> side_;  // the exchange's stream on a GPU
};

}  // namespace longnet
