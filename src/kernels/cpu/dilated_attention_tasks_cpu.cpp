// Dilated attention over a list of virtual-sequence tasks on the CPU (see
// include/longnet/kernels/dilated_attention_tasks.hpp): the tile primitives of
// dilated_sequence.hpp applied to one (query range, key piece) pair at a time, the pieces
// of a query range merged by log-sum-exp (a split of the keys changes nothing but the
// rounding: softmax over a union is the lse-weighted mix of the parts' softmaxes).
//
// forward:  per pattern, parallel over (task, repeat, batch, head, query range, query
//           block); each item owns its query rows and walks its key pieces in order.
// backward: per pattern, parallel over (task, repeat, batch); each item owns the dK/dV
//           rows of its pieces (local and gathered) and the dQ rows of its heads, so
//           nothing is accumulated by two threads (the planner guarantees disjointness).
// bf16/f16 inputs are widened to fp32 first; f32 and f64 are read in place.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_operands.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet::kernels {
namespace {

using cpu::MutableRows;
using cpu::Rows;

using cpu::Scratch;

// A (B, rows, heads, D) operand in the compute type T: the caller's memory when it
// already is T, else a widened contiguous copy.
template <class T>
struct Operand {
  Tensor storage;
  T* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;

  T* row(std::int64_t b, std::int64_t n, std::int64_t h) const {
    return data + b * batch_stride + n * seq_stride + h * head_stride;
  }
};

Tensor wrap(const RowTensor& t, DType dtype, std::int64_t B, std::int64_t rows, std::int64_t heads, std::int64_t D) {
  return Tensor::from_blob(t.data, {B, rows, heads, D}, dtype, Device::cpu(),
                           {t.batch_stride, t.seq_stride, heads == 1 ? 0 : t.head_stride, 1});
}

template <class T>
Operand<T> operand(const RowTensor& t, DType dtype, std::int64_t B, std::int64_t rows, std::int64_t heads,
                   std::int64_t D) {
  Operand<T> o;
  if (dtype == dtype_of<T>::value || rows == 0) {
    o.data = static_cast<T*>(t.data);
    o.batch_stride = t.batch_stride;
    o.seq_stride = t.seq_stride;
    o.head_stride = t.head_stride;
    return o;
  }
  o.storage = wrap(t, dtype, B, rows, heads, D).to(dtype_of<T>::value).contiguous();
  o.data = o.storage.template data<T>();
  o.head_stride = D;
  o.seq_stride = heads * D;
  o.batch_stride = rows * o.seq_stride;
  return o;
}

struct Inputs {
  std::int64_t group = 1;  // query heads per kv head
  double alpha = 1.0;      // the output scale: 1 (LongNet) or 1/G (head groups)
};

Inputs inputs_of(const DilatedAttentionTasksParams& p) {
  return {p.heads / p.kv_heads, p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(p.num_patterns) : 1.0};
}

// Query heads that take part in task t: those of its kv head with its offset.
template <class F>
void for_each_task_head(const DilatedAttentionTasksParams& p, const SequenceTask& t, std::int64_t group, F&& body) {
  const std::int64_t rate = p.patterns[t.pattern].dilation_rate;
  for (std::int64_t h = t.kv_head * group; h < (t.kv_head + 1) * group; ++h) {
    if (pattern_offset(p.mode, t.pattern, p.num_patterns, rate, h, p.heads) == t.offset) body(h);
  }
}

// Tasks [begin, end) share one pattern.
template <class F>
void for_each_pattern_phase(const DilatedAttentionTasksParams& p, F&& body) {
  for (std::int64_t begin = 0; begin < p.num_tasks;) {
    std::int64_t end = begin + 1;
    while (end < p.num_tasks && p.tasks[end].pattern == p.tasks[begin].pattern) ++end;
    body(begin, end);
    begin = end;
  }
}

template <class T>
struct KeySide {
  const Operand<T>& local;
  const Operand<T>& gathered;

  Rows<T> rows(const RowRange& r, std::int64_t b, std::int64_t kv_head, std::int64_t shift) const {
    if (r.source == RowSource::gathered) return {gathered.row(b, r.first_row, 0), r.row_step * gathered.seq_stride};
    return {local.row(b, r.first_row + shift, kv_head), r.row_step * local.seq_stride};
  }
};

template <class T>
void forward(const DilatedAttentionTasksParams& p) {
  const std::int64_t B = p.batch, L = p.local_rows, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const std::int64_t R = p.gathered_rows;
  const Inputs in = inputs_of(p);
  const Operand<T> q = operand<T>(p.q, p.dtype, B, L, H, D);
  const Operand<T> k = operand<T>(p.k, p.dtype, B, L, Hk, D), v = operand<T>(p.v, p.dtype, B, L, Hk, D);
  const Operand<T> kg = operand<T>(p.k_gathered, p.dtype, B, R, 1, D);
  const Operand<T> vg = operand<T>(p.v_gathered, p.dtype, B, R, 1, D);
  const KeySide<T> keys{k, kg}, values{v, vg};

  Tensor out_acc = Tensor::zeros({B, L, H, D}, dtype_of<T>::value);
  Tensor lse_acc = Tensor::full({B, H, L}, -std::numeric_limits<double>::infinity(), dtype_of<T>::value);
  T* out_sum = out_acc.data<T>();
  T* lse_sum = lse_acc.data<T>();

  struct Unit {
    std::int64_t task, range, head, q_begin;
  };
  for_each_pattern_phase(p, [&](std::int64_t task_begin, std::int64_t task_end) {
    std::vector<Unit> units;
    std::vector<std::int64_t> first_item{0};  // first work item of each unit: units x repeats x batch
    for (std::int64_t t = task_begin; t < task_end; ++t) {
      const SequenceTask& task = p.tasks[t];
      for_each_task_head(p, task, in.group, [&](std::int64_t h) {
        for (std::int64_t r = task.range_begin; r < task.range_end; ++r) {
          for (std::int64_t qb = 0; qb < p.ranges[r].count; qb += cpu::kBlockQ) {
            units.push_back({t, r, h, qb});
            first_item.push_back(first_item.back() + task.repeats * B);
          }
        }
      });
    }
    parallel_for(first_item.back(), 1, [&](std::int64_t begin, std::int64_t end) {
      Scratch<T> scratch(D);
      std::vector<T> out_tile(static_cast<std::size_t>(cpu::kBlockQ * D));
      std::vector<T> lse_tile(static_cast<std::size_t>(cpu::kBlockQ));
      for (std::int64_t item = begin; item < end; ++item) {
        const auto unit_index = std::upper_bound(first_item.begin(), first_item.end(), item) - first_item.begin() - 1;
        const Unit& unit = units[static_cast<std::size_t>(unit_index)];
        const std::int64_t rest = item - first_item[static_cast<std::size_t>(unit_index)];
        const std::int64_t b = rest % B;
        const SequenceTask& task = p.tasks[unit.task];
        const QueryRange& range = p.ranges[unit.range];
        const std::int64_t shift = (rest / B) * task.repeat_rows;
        const std::int64_t rate = p.patterns[task.pattern].dilation_rate;
        const std::int64_t q_begin = unit.q_begin, q_end = std::min(range.count, q_begin + cpu::kBlockQ);
        const std::int64_t first_row = range.first_row + shift;
        const Rows<T> q_rows{q.row(b, first_row + q_begin * rate, unit.head), rate * q.seq_stride};
        for (std::int64_t i = range.piece_begin; i < range.piece_end; ++i) {
          const KeyPiece& piece = p.pieces[i];
          cpu::forward_tile<T>(q_rows, keys.rows(piece.keys, b, task.kv_head, shift),
                          values.rows(piece.keys, b, task.kv_head, shift), piece.keys.count, q_begin, q_end, D,
                          piece.diagonal, static_cast<T>(p.scale), out_tile.data(), lse_tile.data(), scratch.workspace);
          // Merge into the accumulators: lse = log(e^lse + e^tile), out = weighted mix.
          for (std::int64_t j = q_begin; j < q_end; ++j) {
            const std::int64_t row = first_row + j * rate;
            T& l = lse_sum[(b * H + unit.head) * L + row];
            T* o = out_sum + ((b * L + row) * H + unit.head) * D;
            const T tile_lse = lse_tile[static_cast<std::size_t>(j - q_begin)];
            const T* tile_out = out_tile.data() + (j - q_begin) * D;
            if (std::isinf(tile_lse)) continue;  // no key in this piece
            if (std::isinf(l)) {
              l = tile_lse;
              std::copy(tile_out, tile_out + D, o);
              continue;
            }
            const T merged = std::max(l, tile_lse) + std::log1p(std::exp(-std::fabs(l - tile_lse)));
            const T old_weight = std::exp(l - merged), new_weight = std::exp(tile_lse - merged);
            for (std::int64_t d = 0; d < D; ++d) o[d] = o[d] * old_weight + tile_out[d] * new_weight;
            l = merged;
          }
        }
      }
    });
  });

  if (in.alpha != 1.0) {
    parallel_for(out_acc.numel(), 1 << 14, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t n = begin; n < end; ++n) out_sum[n] *= static_cast<T>(in.alpha);
    });
  }
  wrap(p.out, p.dtype, B, L, H, D).copy_from(out_acc);
  Tensor::from_blob(p.lse, {B, H, L}, lse_dtype(p.dtype)).copy_from(lse_acc);
}

template <class T>
Operand<T> zeroed_output(const RowTensor& t, std::int64_t B, std::int64_t rows, std::int64_t heads, std::int64_t D) {
  if (rows > 0) wrap(t, dtype_of<T>::value, B, rows, heads, D).zero();
  return operand<T>(t, dtype_of<T>::value, B, rows, heads, D);
}

template <class T>
void backward(const DilatedAttentionTasksParams& p) {
  const std::int64_t B = p.batch, L = p.local_rows, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const std::int64_t R = p.gathered_rows;
  const Inputs in = inputs_of(p);
  const Operand<T> q = operand<T>(p.q, p.dtype, B, L, H, D);
  const Operand<T> k = operand<T>(p.k, p.dtype, B, L, Hk, D), v = operand<T>(p.v, p.dtype, B, L, Hk, D);
  const Operand<T> out = operand<T>(p.out, p.dtype, B, L, H, D), dout = operand<T>(p.dout, p.dtype, B, L, H, D);
  const Operand<T> kg = operand<T>(p.k_gathered, p.dtype, B, R, 1, D);
  const Operand<T> vg = operand<T>(p.v_gathered, p.dtype, B, R, 1, D);
  const KeySide<T> keys{k, kg}, values{v, vg};
  const Operand<T> dq = zeroed_output<T>(p.dq, B, L, H, D);
  const Operand<T> dk = zeroed_output<T>(p.dk, B, L, Hk, D), dv = zeroed_output<T>(p.dv, B, L, Hk, D);
  const Operand<T> dkg = zeroed_output<T>(p.dk_gathered, B, R, 1, D);
  const Operand<T> dvg = zeroed_output<T>(p.dv_gathered, B, R, 1, D);

  // delta[b, h, n] = sum_d dout * out (the final output; DESIGN 2.3), and lse in T.
  Tensor delta_t = Tensor::empty({B, H, L}, dtype_of<T>::value);
  Tensor lse_t = Tensor::from_blob(p.lse, {B, H, L}, lse_dtype(p.dtype)).to(dtype_of<T>::value);
  T* delta = delta_t.data<T>();
  const T* lse = lse_t.data<T>();
  parallel_for(B * H * L, 256, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t n = item % L, h = (item / L) % H, b = item / (L * H);
      const T* o = out.row(b, n, h);
      const T* g = dout.row(b, n, h);
      T sum = 0;
      for (std::int64_t d = 0; d < D; ++d) sum += o[d] * g[d];
      delta[item] = sum;
    }
  });

  auto gradient_rows = [&](const RowRange& r, const Operand<T>& local, const Operand<T>& gathered, std::int64_t b,
                           std::int64_t kv_head, std::int64_t shift) -> MutableRows<T> {
    if (r.source == RowSource::gathered) return {gathered.row(b, r.first_row, 0), r.row_step * gathered.seq_stride};
    return {local.row(b, r.first_row + shift, kv_head), r.row_step * local.seq_stride};
  };

  for_each_pattern_phase(p, [&](std::int64_t task_begin, std::int64_t task_end) {
    std::vector<std::int64_t> first_item{0};  // tasks x repeats x batch
    for (std::int64_t t = task_begin; t < task_end; ++t)
      first_item.push_back(first_item.back() + p.tasks[t].repeats * B);
    parallel_for(first_item.back(), 1, [&](std::int64_t begin, std::int64_t end) {
      Scratch<T> scratch(D);
      for (std::int64_t item = begin; item < end; ++item) {
        const auto index = std::upper_bound(first_item.begin(), first_item.end(), item) - first_item.begin() - 1;
        const SequenceTask& task = p.tasks[task_begin + index];
        const std::int64_t rest = item - first_item[static_cast<std::size_t>(index)];
        const std::int64_t b = rest % B;
        const std::int64_t shift = (rest / B) * task.repeat_rows;
        const std::int64_t rate = p.patterns[task.pattern].dilation_rate;
        for_each_task_head(p, task, in.group, [&](std::int64_t h) {
          for (std::int64_t r = task.range_begin; r < task.range_end; ++r) {
            const QueryRange& range = p.ranges[r];
            const std::int64_t row = range.first_row + shift;
            const Rows<T> lse_rows{lse + (b * H + h) * L + row, rate};
            const Rows<T> delta_rows{delta + (b * H + h) * L + row, rate};
            for (std::int64_t i = range.piece_begin; i < range.piece_end; ++i) {
              const KeyPiece& piece = p.pieces[i];
              cpu::backward_sequence<T>(
                  Rows<T>{q.row(b, row, h), rate * q.seq_stride}, keys.rows(piece.keys, b, task.kv_head, shift),
                  values.rows(piece.keys, b, task.kv_head, shift), Rows<T>{dout.row(b, row, h), rate * dout.seq_stride},
                  lse_rows, delta_rows, piece.keys.count, 0, range.count, D, piece.diagonal, static_cast<T>(p.scale),
                  static_cast<T>(in.alpha), MutableRows<T>{dq.row(b, row, h), rate * dq.seq_stride},
                  gradient_rows(piece.keys, dk, dkg, b, task.kv_head, shift),
                  gradient_rows(piece.keys, dv, dvg, b, task.kv_head, shift), scratch.workspace);
            }
          }
        });
      }
    });
  });
}

}  // namespace

void dilated_attention_tasks_forward_cpu(const DilatedAttentionTasksParams& params) {
  if (params.dtype == DType::f64) {
    forward<double>(params);
  } else {
    forward<float>(params);
  }
}

void dilated_attention_tasks_backward_cpu(const DilatedAttentionTasksParams& params) {
  if (params.dtype == DType::f64) {
    backward<double>(params);
  } else {
    backward<float>(params);
  }
}

}  // namespace longnet::kernels
