// Every rank's steps of sequence-parallel dilated attention in one process, with the
// exchanges played by copying rows from the sender's buffer to the receiver's exactly as
// the plans say (a test double for the communicator, not a transport), on the CPU or on
// one GPU; the ranks' results put back together.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "distributed_cases.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/sequence_parallel_local.hpp"
#include "longnet/dist/sequence_parallel_plan.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {

inline std::vector<SequenceParallelPlan> all_plans(const DistributedCase& c) {
  const SequenceLayout layout = c.layout();
  std::vector<SequenceParallelPlan> plans;
  for (int r = 0; r < layout.world_size(); ++r) {
    plans.push_back(make_sequence_parallel_plan(layout, r, config_of(c.problem), c.problem.heads, c.problem.kv_heads));
  }
  return plans;
}

inline const PeerRows* find_peer(const std::vector<PeerRows>& list, int peer) {
  for (const PeerRows& p : list) {
    if (p.peer == peer) return &p;
  }
  return nullptr;
}

// Delivers `sent[a]` rows (buffers of shape (rows, B, D), laid out by `from`) into
// `received[b]` (laid out by `to`): forward, from = sends and to = receives; backward the
// other way round.
inline void deliver(const std::vector<SequenceParallelPlan>& plans, const std::vector<Tensor>& sent,
             const std::vector<Tensor>& received, bool forward) {
  for (std::size_t b = 0; b < plans.size(); ++b) {
    const auto& incoming = forward ? plans[b].receives : plans[b].sends;
    for (const PeerRows& in : incoming) {
      const auto& outgoing =
          forward ? plans[static_cast<std::size_t>(in.peer)].sends : plans[static_cast<std::size_t>(in.peer)].receives;
      const PeerRows* out = find_peer(outgoing, static_cast<int>(b));
      ASSERT_NE(out, nullptr) << "rank " << b << " expects rows from " << in.peer << " who sends none";
      ASSERT_EQ(out->rows, in.rows);
      received[b]
          .slice(0, in.buffer_row, in.buffer_row + in.rows)
          .copy_from(sent[static_cast<std::size_t>(in.peer)].slice(0, out->buffer_row, out->buffer_row + out->rows));
    }
  }
}

struct Distributed {
  AttentionOutput forward;
  AttentionGradients grads;
};

// All ranks' local steps with the exchanges played in-process on `device`; results put
// back together on the CPU (gradients in the accumulation dtype). split_steps: the
// two-step functions that overlap the exchange on GPUs (local key pieces before the
// forward's exchange, received ones after; the backward the other way round).
inline Distributed run_simulated(const DistributedCase& c, const ProblemTensors& t, Device device = Device::cpu(),
                                 bool split_steps = false) {
  const SequenceLayout layout = c.layout();
  const std::vector<SequenceParallelPlan> plans = all_plans(c);
  const DilatedAttentionConfig config = config_of(c.problem);
  const auto P = static_cast<std::size_t>(layout.world_size());
  const std::int64_t B = c.problem.batch, D = c.problem.head_dim;
  std::vector<Tensor> q(P), k(P), v(P), dout(P), k_send(P), v_send(P), k_got(P), v_got(P);
  for (std::size_t r = 0; r < P; ++r) {
    q[r] = layout.shard(t.q, static_cast<int>(r)).to(device);
    k[r] = layout.shard(t.k, static_cast<int>(r)).to(device);
    v[r] = layout.shard(t.v, static_cast<int>(r)).to(device);
    dout[r] = layout.shard(t.dout, static_cast<int>(r)).to(device);
    k_send[r] = pack_kv_rows(plans[r], k[r]);
    v_send[r] = pack_kv_rows(plans[r], v[r]);
    k_got[r] = Tensor::empty({plans[r].receive_rows, B, D}, t.q.dtype(), device);
    v_got[r] = Tensor::empty({plans[r].receive_rows, B, D}, t.q.dtype(), device);
  }
  std::vector<LocalForwardState> first_step(P);
  if (split_steps) {
    for (std::size_t r = 0; r < P; ++r) {
      first_step[r] = sequence_parallel_forward_local_keys(plans[r], config, q[r], k[r], v[r], k_got[r], v_got[r]);
    }
  }
  deliver(plans, k_send, k_got, true);
  deliver(plans, v_send, v_got, true);

  std::vector<AttentionOutput> outs(P);
  std::vector<LocalGradients> local(P);
  std::vector<Tensor> dk_back(P), dv_back(P), dk_g(P), dv_g(P);
  for (std::size_t r = 0; r < P; ++r) {
    if (split_steps) {
      outs[r] = sequence_parallel_forward_received_keys(plans[r], config, first_step[r], q[r], k[r], v[r], k_got[r],
                                                        v_got[r]);
      local[r] = sequence_parallel_backward_received_keys(plans[r], config, q[r], k[r], v[r], k_got[r], v_got[r],
                                                          outs[r], dout[r]);
    } else {
      outs[r] = sequence_parallel_forward_local(plans[r], config, q[r], k[r], v[r], k_got[r], v_got[r]);
      local[r] =
          sequence_parallel_backward_local(plans[r], config, q[r], k[r], v[r], k_got[r], v_got[r], outs[r], dout[r]);
    }
    dk_g[r] = local[r].dk_gathered;
    dv_g[r] = local[r].dv_gathered;
    dk_back[r] = Tensor::empty({plans[r].send_rows, B, D}, local[r].dk.dtype(), device);
    dv_back[r] = Tensor::empty({plans[r].send_rows, B, D}, local[r].dv.dtype(), device);
  }
  deliver(plans, dk_g, dk_back, false);
  deliver(plans, dv_g, dv_back, false);
  if (split_steps) {
    for (std::size_t r = 0; r < P; ++r) {
      sequence_parallel_backward_local_keys(plans[r], config, q[r], k[r], v[r], k_got[r], v_got[r], outs[r], dout[r],
                                            local[r]);
    }
  }
  std::vector<Tensor> out(P), lse(P), dq(P), dk(P), dv(P);
  for (std::size_t r = 0; r < P; ++r) {
    scatter_add_kv_rows(plans[r], dk_back[r], local[r].dk);
    scatter_add_kv_rows(plans[r], dv_back[r], local[r].dv);
    out[r] = outs[r].out.to(Device::cpu());
    lse[r] = outs[r].lse.to(Device::cpu());
    dq[r] = local[r].dq.to(Device::cpu());
    dk[r] = local[r].dk.to(Device::cpu());
    dv[r] = local[r].dv.to(Device::cpu());
  }
  return {{layout.unshard(out), layout.unshard(lse, 2)}, {layout.unshard(dq), layout.unshard(dk), layout.unshard(dv)}};
}

}  // namespace longnet::testing
