// What one rank computes between the exchanges of sequence-parallel dilated attention,
// given its SequenceParallelPlan (no communication here, so these steps can also be run
// for every rank inside one process, as the plan's tests do):
//
//   forward:  k_send, v_send = pack_kv_rows(plan, k), pack_kv_rows(plan, v)
//             [exchange: rows plan.sends[i] of *_send go to plan.sends[i].peer, rows
//              plan.receives[i] of k_gathered, v_gathered come from plan.receives[i].peer]
//             out, lse = sequence_parallel_forward_local(plan, ..., k_gathered, v_gathered)
//   backward: grads = sequence_parallel_backward_local(plan, ...)
//             [exchange, reversed: rows plan.receives[i] of grads.dk_gathered go back to
//              their peer, rows plan.sends[i] of dk_returned come in]
//             scatter_add_kv_rows(plan, dk_returned, grads.dk); likewise v;
//             then dk, dv, dq converted to the inputs' dtype.
//
// Shapes: q (B, L, H, D), k, v (B, L, Hk, D) with L = plan.local_rows (any strides, any
// float dtype); packed and gathered buffers (rows, B, D) contiguous, in the inputs' dtype;
// gradients of gathered rows and the local accumulators in the accumulation dtype
// (f64 for f64 inputs, else f32).
#pragma once

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/dist/sequence_parallel_plan.hpp"

namespace longnet {

// (plan.send_rows, B, D) in local's dtype: the rows the plan sends, peer after peer.
Tensor pack_kv_rows(const SequenceParallelPlan& plan, const Tensor& local);
// local (B, L, Hk, D), accumulation dtype: local[rows of the plan's sends] += rows.
void scatter_add_kv_rows(const SequenceParallelPlan& plan, const Tensor& rows, const Tensor& local);

// Out (B, L, H, D) in q's dtype and lse (B, H, L) of the local queries.
AttentionOutput sequence_parallel_forward_local(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                                const Tensor& q, const Tensor& k, const Tensor& v,
                                                const Tensor& k_gathered, const Tensor& v_gathered);

struct LocalGradients {
  Tensor dq;                        // (B, L, H, D), accumulation dtype
  Tensor dk, dv;                    // (B, L, Hk, D), accumulation dtype: the local queries' part
  Tensor dk_gathered, dv_gathered;  // (plan.receive_rows, B, D), accumulation dtype: goes back to the owners
};

LocalGradients sequence_parallel_backward_local(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                                const Tensor& q, const Tensor& k, const Tensor& v,
                                                const Tensor& k_gathered, const Tensor& v_gathered,
                                                const AttentionOutput& forward, const Tensor& dout);

// The same steps split around the exchange, so that on a GPU communication overlaps the
// work that needs no received row (SequenceParallelDilatedAttention runs the exchange on
// a side stream meanwhile):
//   forward:  state = sequence_parallel_forward_local_keys(...)   [k_gathered, v_gathered not read]
//             [exchange]
//             out, lse = sequence_parallel_forward_received_keys(..., state, ...)
//   backward: grads = sequence_parallel_backward_received_keys(...)  [dk/dv_gathered complete]
//             [exchange of dk/dv_gathered] and meanwhile
//             sequence_parallel_backward_local_keys(..., grads)       [adds the local pieces]
// On the CPU the whole work runs in the received-keys step of the forward and the first
// step of the backward; the other step does nothing. Results equal the one-call functions.
struct LocalForwardState {
  AttentionOutput result;
  Tensor accumulator;  // CUDA: fp32 (B, L, H, D), merged into by both steps
};

LocalForwardState sequence_parallel_forward_local_keys(const SequenceParallelPlan& plan,
                                                       const DilatedAttentionConfig& config, const Tensor& q,
                                                       const Tensor& k, const Tensor& v, const Tensor& k_gathered,
                                                       const Tensor& v_gathered);
AttentionOutput sequence_parallel_forward_received_keys(const SequenceParallelPlan& plan,
                                                        const DilatedAttentionConfig& config, LocalForwardState& state,
                                                        const Tensor& q, const Tensor& k, const Tensor& v,
                                                        const Tensor& k_gathered, const Tensor& v_gathered);
LocalGradients sequence_parallel_backward_received_keys(const SequenceParallelPlan& plan,
                                                        const DilatedAttentionConfig& config, const Tensor& q,
                                                        const Tensor& k, const Tensor& v, const Tensor& k_gathered,
                                                        const Tensor& v_gathered, const AttentionOutput& forward,
                                                        const Tensor& dout);
void sequence_parallel_backward_local_keys(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                           const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& k_gathered, const Tensor& v_gathered,
                                           const AttentionOutput& forward, const Tensor& dout, LocalGradients& grads);

}  // namespace longnet
