// SequenceParallelDilatedAttention: agreement on shapes, the plan (cached while the
// layout and heads stay the same), and the two exchanges around the local steps of
// sequence_parallel_local.hpp. Every step that can fail on one rank alone runs inside
// run_collectively, so all ranks leave together with the same Error.
#include "longnet/dist/sequence_parallel_attention.hpp"

#include <algorithm>
#include <array>

#include "longnet/dist/sequence_parallel_local.hpp"

namespace longnet {
namespace {

// What every rank must agree on, and its local length: one all-gather.
constexpr std::int64_t kDescriptorSize = 6;
constexpr std::size_t kLocalRows = 1;
constexpr std::size_t kDtype = 5;
using Descriptor = std::array<std::int64_t, kDescriptorSize>;
constexpr const char* kDescriptorNames[] = {"batch", "local_rows", "heads", "kv_heads", "head_dim", "dtype"};

std::vector<Descriptor> gather_descriptors(Communicator& comm, const Tensor& q, const Tensor& k) {
  const std::vector<std::int64_t> mine = {q.size(0), q.size(1), q.size(2),
                                          k.size(2), q.size(3), static_cast<std::int64_t>(q.dtype())};
  const Tensor all = Tensor::empty({kDescriptorSize * comm.size()}, DType::i64);
  comm.host().all_gather(Tensor::from_vector(mine, {kDescriptorSize}), all);
  const auto values = all.to_vector<std::int64_t>();
  std::vector<Descriptor> out;
  for (int r = 0; r < comm.size(); ++r) {
    Descriptor d;
    std::copy_n(values.begin() + r * kDescriptorSize, kDescriptorSize, d.begin());
    out.push_back(d);
  }
  return out;
}

// The same check on every rank (the descriptors are the same everywhere), so every rank
// throws the same Error.
void require_consistent(const std::vector<Descriptor>& all) {
  for (std::size_t r = 1; r < all.size(); ++r) {
    for (std::size_t i = 0; i < all[r].size(); ++i) {
      if (i == kLocalRows) continue;  // slices may differ
      if (all[0][i] == all[r][i]) continue;
      auto text = [&](std::int64_t value) {
        return i == kDtype ? std::string(dtype_name(static_cast<DType>(value))) : std::to_string(value);
      };
      throw Error(str("rank ", r, " has ", kDescriptorNames[i], " = ", text(all[r][i]), " but rank 0 has ",
                      text(all[0][i]), ": all ranks must pass the same ", kDescriptorNames[i]));
    }
  }
}

std::vector<Transfer> transfers(const Tensor& buffer, const std::vector<PeerRows>& peers, int tag) {
  std::vector<Transfer> out;
  for (const PeerRows& p : peers) out.push_back({buffer.slice(0, p.buffer_row, p.buffer_row + p.rows), p.peer, tag});
  return out;
}

std::vector<Transfer> joined(std::vector<Transfer> a, const std::vector<Transfer>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

enum Tag : int { kKeys = 0, kValues = 1, kKeyGradients = 2, kValueGradients = 3 };

}  // namespace

SequenceParallelDilatedAttention::SequenceParallelDilatedAttention(DilatedAttentionConfig config,
                                                                   std::shared_ptr<Communicator> comm,
                                                                   SequenceOrder order)
    : config_(std::move(config)), comm_(std::move(comm)), order_(order) {
  require(comm_ != nullptr, "SequenceParallelDilatedAttention: the communicator is null");
  config_.validate();
}

std::string SequenceParallelDilatedAttention::name() const { return str("dilated/sequence_parallel/", comm_->name()); }

const SequenceLayout& SequenceParallelDilatedAttention::layout() const {
  require(layout_.has_value(), "SequenceParallelDilatedAttention: no layout before the first forward");
  return *layout_;
}

const SequenceParallelPlan& SequenceParallelDilatedAttention::plan() const {
  require(plan_.has_value(), "SequenceParallelDilatedAttention: no plan before the first forward");
  return *plan_;
}

void SequenceParallelDilatedAttention::prepare(const Tensor& q, const Tensor& k, const Tensor& v) {
  Communicator& comm = *comm_;
  run_collectively(comm, [&] {
    validate_attention_inputs(config_, q, k, v);
    require(q.device() == comm.device(), "q is on ", to_string(q.device()), " but the ", comm.name(),
            " communicator works on ", to_string(comm.device()));
  });
  const std::vector<Descriptor> all = gather_descriptors(comm, q, k);
  // Checks of the gathered descriptors, which every rank holds alike: the same outcome on
  // every rank, so a failure is a CollectiveError.
  std::optional<SequenceLayout> layout;
  try {
    require_consistent(all);
    std::vector<std::int64_t> lengths;
    for (const Descriptor& d : all) lengths.push_back(d[kLocalRows]);
    if (order_ == SequenceOrder::contiguous) {
      layout = SequenceLayout::contiguous(lengths);
    } else {
      std::int64_t seq_len = 0;
      for (std::int64_t n : lengths) seq_len += n;
      layout = SequenceLayout::zigzag(seq_len, comm.size());
      for (int r = 0; r < comm.size(); ++r) {
        require(lengths[static_cast<std::size_t>(r)] == layout->local_length(r), "rank ", r, " holds ",
                lengths[static_cast<std::size_t>(r)], " rows but the zigzag layout of seq_len = ", seq_len, " over ",
                comm.size(), " ranks gives it ", layout->local_length(r),
                " (blocks r and 2P-1-r: use SequenceLayout::zigzag(seq_len, P).shard)");
      }
    }
  } catch (const CollectiveError&) {
    throw;
  } catch (const Error& error) {
    throw CollectiveError(error.what());
  }
  const bool same_plan = plan_ && layout_ && layout_->blocks().size() == layout->blocks().size() &&
                         layout_->local_lengths() == layout->local_lengths() && plan_->heads == q.size(2) &&
                         plan_->kv_heads == k.size(2);
  if (!same_plan) {
    plan_.reset();
    layout_.reset();
    run_collectively(comm,
                     [&] { plan_ = make_sequence_parallel_plan(*layout, comm.rank(), config_, q.size(2), k.size(2)); });
    layout_ = std::move(layout);
  }
}

AttentionOutput SequenceParallelDilatedAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v) {
  q_ = k_ = v_ = Tensor();
  prepare(q, k, v);
  const SequenceParallelPlan& plan = *plan_;
  Communicator& comm = *comm_;

  Tensor k_send, v_send, k_gathered, v_gathered;
  run_collectively(comm, [&] {
    k_send = pack_kv_rows(plan, k);
    v_send = pack_kv_rows(plan, v);
    k_gathered = Tensor::empty({plan.receive_rows, q.size(0), q.size(3)}, q.dtype(), q.device());
    v_gathered = Tensor::empty({plan.receive_rows, q.size(0), q.size(3)}, q.dtype(), q.device());
  });
  auto exchange = [&] {
    comm.exchange(joined(transfers(k_send, plan.sends, kKeys), transfers(v_send, plan.sends, kValues)),
                  joined(transfers(k_gathered, plan.receives, kKeys), transfers(v_gathered, plan.receives, kValues)));
  };
  AttentionOutput result;
  if (q.device().is_cuda()) {
    // The exchange on the side stream (after the packing), the local key pieces meanwhile.
    if (!side_) side_ = std::make_unique<SideStream>(q.device().index);
    const Stream compute = current_stream(q.device().index), side = side_->stream();
    stream_wait(side, compute);
    {
      const StreamGuard on_side(side);
      exchange();
    }
    LocalForwardState state;
    run_collectively(comm, [&] {
      state = sequence_parallel_forward_local_keys(plan, config_, q, k, v, k_gathered, v_gathered);
    });
    stream_wait(compute, side);
    run_collectively(comm, [&] {
      result = sequence_parallel_forward_received_keys(plan, config_, state, q, k, v, k_gathered, v_gathered);
    });
  } else {
    exchange();
    run_collectively(comm,
                     [&] { result = sequence_parallel_forward_local(plan, config_, q, k, v, k_gathered, v_gathered); });
  }
  q_ = q;
  k_ = k;
  v_ = v;
  k_gathered_ = k_gathered;
  v_gathered_ = v_gathered;
  saved_ = result;
  return result;
}

AttentionGradients SequenceParallelDilatedAttention::backward(const Tensor& dout) {
  Communicator& comm = *comm_;
  LocalGradients local;
  Tensor dk_returned, dv_returned;
  const bool on_gpu = q_.defined() && q_.device().is_cuda();
  run_collectively(comm, [&] {
    require(q_.defined() && plan_.has_value(), "SequenceParallelDilatedAttention::backward called before forward");
    // On a GPU the received rows' pieces first: their gradients travel while the local ones run.
    local = on_gpu ? sequence_parallel_backward_received_keys(*plan_, config_, q_, k_, v_, k_gathered_, v_gathered_,
                                                              saved_, dout)
                   : sequence_parallel_backward_local(*plan_, config_, q_, k_, v_, k_gathered_, v_gathered_, saved_,
                                                      dout);
    dk_returned = Tensor::empty({plan_->send_rows, q_.size(0), q_.size(3)}, local.dk.dtype(), q_.device());
    dv_returned = Tensor::empty({plan_->send_rows, q_.size(0), q_.size(3)}, local.dv.dtype(), q_.device());
  });
  const SequenceParallelPlan& plan = *plan_;
  // The plan reversed: the gradients of received rows go back to where the rows came from.
  auto exchange = [&] {
    comm.exchange(
        joined(transfers(local.dk_gathered, plan.receives, kKeyGradients),
               transfers(local.dv_gathered, plan.receives, kValueGradients)),
        joined(transfers(dk_returned, plan.sends, kKeyGradients), transfers(dv_returned, plan.sends, kValueGradients)));
  };
  if (on_gpu) {
    const Stream compute = current_stream(q_.device().index), side = side_->stream();
    stream_wait(side, compute);
    {
      const StreamGuard on_side(side);
      exchange();
    }
    run_collectively(comm, [&] {
      sequence_parallel_backward_local_keys(plan, config_, q_, k_, v_, k_gathered_, v_gathered_, saved_, dout, local);
    });
    stream_wait(compute, side);
  } else {
    exchange();
  }

  AttentionGradients grads;
  run_collectively(comm, [&] {
    scatter_add_kv_rows(plan, dk_returned, local.dk);
    scatter_add_kv_rows(plan, dv_returned, local.dv);
    grads = {local.dq.to(q_.dtype()), local.dk.to(k_.dtype()), local.dv.to(v_.dtype())};
  });
  return grads;
}

}  // namespace longnet
