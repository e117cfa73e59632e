// One rank's computation between exchanges (see the header): packing the rows the plan
// sends, the task kernel on local and gathered rows, and adding returned gradients.
#include "longnet/dist/sequence_parallel_local.hpp"

#include <cmath>
#include <vector>

#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet {
namespace {

DType accumulation_dtype(DType dtype) { return kernels::lse_dtype(dtype); }

kernels::RowTensor row_tensor(const Tensor& t) { return {t.data(), t.stride(0), t.stride(1), t.stride(2)}; }

// A (rows, B, D) buffer seen by the kernel: row r of batch element b at r*B*D + b*D.
kernels::RowTensor gathered_tensor(const Tensor& t) { return {t.data(), t.stride(1), t.stride(0), 0}; }

Tensor with_contiguous_rows(const Tensor& t) { return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous(); }

void require_local(const SequenceParallelPlan& plan, const Tensor& t, const char* name, std::int64_t heads) {
  require(t.defined() && t.dim() == 4, name, " must be a (batch, local_rows, heads, head_dim) tensor");
  require(t.size(1) == plan.local_rows && t.size(2) == heads, name, " has shape ", shape_to_string(t.shape()),
          ": the plan expects ", plan.local_rows, " local rows and ", heads, " heads");
}

// The plan's sends as runs for the CUDA pack and scatter-add kernels.
std::vector<kernels::KvRowRunParams> send_runs(const SequenceParallelPlan& plan) {
  std::vector<kernels::KvRowRunParams> runs;
  for (const PeerRows& peer : plan.sends) {
    std::int64_t at = peer.buffer_row;
    for (const KvRowRun& run : peer.runs) {
      runs.push_back({at, run.first_row, run.row_step, run.count, run.kv_head});
      at += run.count;
    }
  }
  return runs;
}

kernels::KvRowsParams kv_rows_params(const Tensor& local, const Tensor& buffer,
                                     const std::vector<kernels::KvRowRunParams>& runs) {
  kernels::KvRowsParams p;
  p.batch = local.size(0);
  p.head_dim = local.size(3);
  p.dtype = local.dtype();
  p.local = row_tensor(local);
  p.buffer = buffer.data();
  p.buffer_rows = buffer.size(0);
  p.runs = runs.data();
  p.num_runs = static_cast<std::int64_t>(runs.size());
  return p;
}

void require_gathered(const SequenceParallelPlan& plan, const Tensor& t, const char* name, const Tensor& q) {
  const Shape expected{plan.receive_rows, q.size(0), q.size(3)};
  require(t.defined() && t.shape() == expected && t.is_contiguous(), name, " must be a contiguous tensor of shape ",
          shape_to_string(expected), " (the rows the plan receives), got ",
          t.defined() ? shape_to_string(t.shape()) : std::string("(undefined)"));
  require(t.dtype() == q.dtype() && t.device() == q.device(), name, " must have q's dtype and device");
}

kernels::DilatedAttentionTasksParams make_params(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                                 const Tensor& k_gathered, const Tensor& v_gathered) {
  kernels::DilatedAttentionTasksParams p;
  p.batch = q.size(0);
  p.local_rows = plan.local_rows;
  p.heads = plan.heads;
  p.kv_heads = plan.kv_heads;
  p.head_dim = q.size(3);
  p.patterns = plan.patterns.data();
  p.num_patterns = static_cast<std::int64_t>(plan.patterns.size());
  p.mode = plan.mode;
  p.causal = plan.causal;
  p.scale = config.scale.value_or(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  p.dtype = q.dtype();
  p.tasks = plan.tasks.data();
  p.num_tasks = static_cast<std::int64_t>(plan.tasks.size());
  p.ranges = plan.ranges.data();
  p.pieces = plan.pieces.data();
  p.q = row_tensor(q);
  p.k = row_tensor(k);
  p.v = row_tensor(v);
  p.gathered_rows = plan.receive_rows;
  p.engine_slices = plan.engine_slices.data();
  p.num_engine_slices = static_cast<std::int64_t>(plan.engine_slices.size());
  p.k_gathered = gathered_tensor(k_gathered);
  p.v_gathered = gathered_tensor(v_gathered);
  return p;
}

void require_inputs(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config, const Tensor& q,
                    const Tensor& k, const Tensor& v, const Tensor& k_gathered, const Tensor& v_gathered) {
  validate_attention_inputs(config, q, k, v);
  require(config.mode == plan.mode && config.causal == plan.causal,
          "the configuration's mode or causal flag differs from the plan's");
  require_local(plan, q, "q", plan.heads);
  require_local(plan, k, "k", plan.kv_heads);
  require_gathered(plan, k_gathered, "k_gathered", q);
  require_gathered(plan, v_gathered, "v_gathered", q);
}

template <class T>
void scatter_add(const SequenceParallelPlan& plan, const Tensor& rows, const Tensor& local) {
  const std::int64_t B = rows.size(1), D = rows.size(2);
  const T* src = rows.data<T>();
  T* dst = local.data<T>();
  const std::int64_t bs = local.stride(0), ss = local.stride(1), hs = local.stride(2), ds = local.stride(3);
  for (const PeerRows& peer : plan.sends) {
    std::int64_t at = peer.buffer_row;
    for (const KvRowRun& run : peer.runs) {
      for (std::int64_t j = 0; j < run.count; ++j, ++at) {
        const std::int64_t row = run.first_row + j * run.row_step;
        for (std::int64_t b = 0; b < B; ++b) {
          const T* s = src + (at * B + b) * D;
          T* d = dst + b * bs + row * ss + run.kv_head * hs;
          for (std::int64_t e = 0; e < D; ++e) d[e * ds] += s[e];
        }
      }
    }
  }
}

}  // namespace

Tensor pack_kv_rows(const SequenceParallelPlan& plan, const Tensor& local_in) {
  require_local(plan, local_in, "k/v", plan.kv_heads);
  const std::int64_t B = local_in.size(0), D = local_in.size(3);
  Tensor packed = Tensor::empty({plan.send_rows, B, D}, local_in.dtype(), local_in.device());
  if (local_in.device().is_cuda()) {
    const Tensor local = with_contiguous_rows(local_in);
    const std::vector<kernels::KvRowRunParams> runs = send_runs(plan);
    kernels::pack_kv_rows_cuda(kv_rows_params(local, packed, runs));
    return packed;
  }
  const Tensor& local = local_in;
  for (const PeerRows& peer : plan.sends) {
    std::int64_t at = peer.buffer_row;
    for (const KvRowRun& run : peer.runs) {
      const Tensor rows =
          local.select(2, run.kv_head)
              .slice(1, run.first_row, run.first_row + run.row_step * (run.count - 1) + 1, run.row_step);
      packed.slice(0, at, at + run.count).permute({1, 0, 2}).copy_from(rows);
      at += run.count;
    }
  }
  return packed;
}

void scatter_add_kv_rows(const SequenceParallelPlan& plan, const Tensor& rows, const Tensor& local) {
  require_local(plan, local, "local gradient", plan.kv_heads);
  const Shape expected{plan.send_rows, local.size(0), local.size(3)};
  require(rows.defined() && rows.shape() == expected && rows.is_contiguous() && rows.dtype() == local.dtype(),
          "returned rows must be a contiguous ", dtype_name(local.dtype()), " tensor of shape ",
          shape_to_string(expected));
  require(rows.device() == local.device(), "returned rows are on ", to_string(rows.device()),
          " but the local gradient is on ", to_string(local.device()));
  if (local.device().is_cuda()) {
    require(local.stride(3) == 1, "local gradient: the head_dim axis must be contiguous");
    const std::vector<kernels::KvRowRunParams> runs = send_runs(plan);
    kernels::scatter_add_kv_rows_cuda(kv_rows_params(local, rows, runs));
    return;
  }
  if (local.dtype() == DType::f64) {
    scatter_add<double>(plan, rows, local);
  } else {
    require(local.dtype() == DType::f32, "local gradient has dtype ", dtype_name(local.dtype()),
            ": must be the accumulation dtype f32 or f64");
    scatter_add<float>(plan, rows, local);
  }
}

namespace {

// The forward's kernel call for one step: `which` pieces, `start`/`finish` as in
// DilatedAttentionTasksParams (the CPU kernel always runs every piece at once).
void run_forward(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config, const Tensor& q_in,
                 const Tensor& k_in, const Tensor& v_in, const Tensor& k_gathered, const Tensor& v_gathered,
                 kernels::TaskPieces which, bool start, bool finish, LocalForwardState& state) {
  require_inputs(plan, config, q_in, k_in, v_in, k_gathered, v_gathered);
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  if (start) {
    state.result = {Tensor::empty(q.shape(), q.dtype(), q.device()),
                    Tensor::empty({q.size(0), q.size(2), q.size(1)}, kernels::lse_dtype(q.dtype()), q.device())};
    if (q.device().is_cuda() && !finish) state.accumulator = Tensor::empty(q.shape(), DType::f32, q.device());
  }
  require(state.result.out.defined(), "the local-keys step of the forward must run before the received-keys step");
  kernels::DilatedAttentionTasksParams p = make_params(plan, config, q, k, v, k_gathered, v_gathered);
  p.out = row_tensor(state.result.out);
  p.lse = state.result.lse.data();
  if (q.device().is_cuda()) {
    p.pieces_to_run = which;
    p.start = start;
    p.finish = finish;
    p.out_accumulator = state.accumulator.defined() ? state.accumulator.data() : nullptr;
    kernels::dilated_attention_tasks_forward_cuda(p);
  } else if (finish) {
    kernels::dilated_attention_tasks_forward_cpu(p);
  }
}

void require_backward_inputs(const Tensor& q_in, const AttentionOutput& forward, const Tensor& dout_in) {
  require(dout_in.defined() && dout_in.shape() == q_in.shape() && dout_in.dtype() == q_in.dtype() &&
              dout_in.device() == q_in.device(),
          "dout must have q's shape ", shape_to_string(q_in.shape()), ", dtype and device");
  require(forward.out.defined() && forward.out.shape() == q_in.shape() && forward.out.dtype() == q_in.dtype(),
          "forward output does not match q: pass the AttentionOutput of the forward pass of these inputs");
  require(forward.lse.defined() && forward.lse.dtype() == kernels::lse_dtype(q_in.dtype()) &&
              forward.lse.shape() == Shape{q_in.size(0), q_in.size(2), q_in.size(1)},
          "forward lse must be ", dtype_name(kernels::lse_dtype(q_in.dtype())), " of shape (batch, heads, local_rows)");
}

// The backward's kernel call for one step (on the CPU only the `finish` step runs, all pieces).
void run_backward(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config, const Tensor& q_in,
                  const Tensor& k_in, const Tensor& v_in, const Tensor& k_gathered, const Tensor& v_gathered,
                  const AttentionOutput& forward, const Tensor& dout_in, kernels::TaskPieces which, bool start,
                  bool finish, LocalGradients& g) {
  require_inputs(plan, config, q_in, k_in, v_in, k_gathered, v_gathered);
  require_backward_inputs(q_in, forward, dout_in);
  const Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in), v = with_contiguous_rows(v_in);
  const Tensor out = with_contiguous_rows(forward.out), dout = with_contiguous_rows(dout_in);
  const Tensor lse = forward.lse.contiguous();
  if (start) {
    const DType acc = accumulation_dtype(q.dtype());
    const std::int64_t B = q.size(0), D = q.size(3);
    g = {Tensor::empty(q.shape(), acc, q.device()), Tensor::empty(k.shape(), acc, k.device()),
         Tensor::empty(v.shape(), acc, v.device()), Tensor::empty({plan.receive_rows, B, D}, acc, q.device()),
         Tensor::empty({plan.receive_rows, B, D}, acc, q.device())};
  }
  require(g.dq.defined(), "the received-keys step of the backward must run before the local-keys step");
  kernels::DilatedAttentionTasksParams p = make_params(plan, config, q, k, v, k_gathered, v_gathered);
  p.out = row_tensor(out);
  p.lse = lse.data();
  p.dout = row_tensor(dout);
  p.dq = row_tensor(g.dq);
  p.dk = row_tensor(g.dk);
  p.dv = row_tensor(g.dv);
  p.dk_gathered = gathered_tensor(g.dk_gathered);
  p.dv_gathered = gathered_tensor(g.dv_gathered);
  if (q.device().is_cuda()) {
    p.pieces_to_run = which;
    p.start = start;
    p.finish = finish;
    kernels::dilated_attention_tasks_backward_cuda(p);
  } else if (start) {
    kernels::dilated_attention_tasks_backward_cpu(p);
  }
}

}  // namespace

AttentionOutput sequence_parallel_forward_local(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                                const Tensor& q, const Tensor& k, const Tensor& v,
                                                const Tensor& k_gathered, const Tensor& v_gathered) {
  LocalForwardState state;
  run_forward(plan, config, q, k, v, k_gathered, v_gathered, kernels::TaskPieces::all, true, true, state);
  return state.result;
}

LocalForwardState sequence_parallel_forward_local_keys(const SequenceParallelPlan& plan,
                                                       const DilatedAttentionConfig& config, const Tensor& q,
                                                       const Tensor& k, const Tensor& v, const Tensor& k_gathered,
                                                       const Tensor& v_gathered) {
  LocalForwardState state;
  run_forward(plan, config, q, k, v, k_gathered, v_gathered, kernels::TaskPieces::local, true, false, state);
  return state;
}

AttentionOutput sequence_parallel_forward_received_keys(const SequenceParallelPlan& plan,
                                                        const DilatedAttentionConfig& config, LocalForwardState& state,
                                                        const Tensor& q, const Tensor& k, const Tensor& v,
                                                        const Tensor& k_gathered, const Tensor& v_gathered) {
  run_forward(plan, config, q, k, v, k_gathered, v_gathered, kernels::TaskPieces::gathered, false, true, state);
  state.accumulator = Tensor();
  return state.result;
}

LocalGradients sequence_parallel_backward_local(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                                const Tensor& q, const Tensor& k, const Tensor& v,
                                                const Tensor& k_gathered, const Tensor& v_gathered,
                                                const AttentionOutput& forward, const Tensor& dout) {
  LocalGradients g;
  run_backward(plan, config, q, k, v, k_gathered, v_gathered, forward, dout, kernels::TaskPieces::all, true, true, g);
  return g;
}

LocalGradients sequence_parallel_backward_received_keys(const SequenceParallelPlan& plan,
                                                        const DilatedAttentionConfig& config, const Tensor& q,
                                                        const Tensor& k, const Tensor& v, const Tensor& k_gathered,
                                                        const Tensor& v_gathered, const AttentionOutput& forward,
                                                        const Tensor& dout) {
  LocalGradients g;
  run_backward(plan, config, q, k, v, k_gathered, v_gathered, forward, dout, kernels::TaskPieces::gathered, true,
               false, g);
  return g;
}

void sequence_parallel_backward_local_keys(const SequenceParallelPlan& plan, const DilatedAttentionConfig& config,
                                           const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& k_gathered, const Tensor& v_gathered,
                                           const AttentionOutput& forward, const Tensor& dout, LocalGradients& grads) {
  run_backward(plan, config, q, k, v, k_gathered, v_gathered, forward, dout, kernels::TaskPieces::local, false, true,
               grads);
}

}  // namespace longnet
