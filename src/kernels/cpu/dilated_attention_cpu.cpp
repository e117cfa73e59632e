// The CPU dilated-attention engine (DESIGN 3.1): every pattern is a batch of virtual
// sequences; patterns run one after another and each is parallel over independent
// work items, so the merge order (pattern 0, 1, ...) and hence the result never depend on
// the thread count.
//
// forward:  items (b, h, segment, query block) of a pattern write disjoint rows; each
//           merges its normalised output and lse into fp32/fp64 accumulators by
//           log-sum-exp (the multiset union of DESIGN 2.1).
// backward: items (b, kv head, segment) of a pattern own the dK/dV rows of that segment
//           and the dQ rows of their heads, so they accumulate without atomics.
// bf16/f16 inputs are widened to fp32 first; f32 and f64 are read in place, and their
// outputs (out, lse; dq, dk, dv) serve as the accumulators themselves, so no workspace of
// the outputs' size is allocated for them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/cpu/attention_operands.hpp"
#include "kernels/cpu/column_sums.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {
namespace {

using cpu::MutableRows;
using cpu::Rows;

using cpu::Accumulator;
using cpu::Operand;
using cpu::Scratch;

cpu::OperandShape shape_of(const DilatedAttentionParams& p) { return {p.batch, p.seq_len, p.head_dim, p.dtype}; }

template <class T>
Rows<T> sequence_rows(const Operand<T>& t, std::int64_t b, std::int64_t h, const VirtualSequence& vs) {
  return {t.row(b, vs.first_row, h), vs.row_step * t.seq_stride};
}

template <class T>
MutableRows<T> sequence_rows(const Accumulator<T>& t, std::int64_t b, std::int64_t h, const VirtualSequence& vs) {
  return {t.row(b, vs.first_row, h), vs.row_step * t.seq_stride};
}

double output_scale(const DilatedAttentionParams& p) {
  return p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(p.patterns.size()) : 1.0;
}

template <class T>
void forward(const DilatedAttentionParams& p) {
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, D = p.head_dim;
  const std::int64_t group = H / p.kv_heads;
  const cpu::OperandShape shape = shape_of(p);
  const Operand<T> q = cpu::make_operand<T>(p.q, shape, H), k = cpu::make_operand<T>(p.k, shape, p.kv_heads),
                   v = cpu::make_operand<T>(p.v, shape, p.kv_heads);

  // Accumulators: output (B, N, H, D) and lse (B, H, N) in T (lse has T's dtype exactly
  // when the output does).
  const Accumulator<T> out_sum = cpu::make_accumulator<T>(p.out, shape, H);
  Tensor lse_acc;
  T* lse_sum = static_cast<T*>(p.lse);
  if (out_sum.workspace.defined()) {
    lse_acc = Tensor::empty({B, H, N}, dtype_of<T>::value);
    lse_sum = lse_acc.data<T>();
  }
  std::fill(lse_sum, lse_sum + B * H * N, static_cast<T>(-std::numeric_limits<double>::infinity()));
  const auto G = static_cast<std::int64_t>(p.patterns.size());

  for (std::int64_t i = 0; i < G; ++i) {
    const DilationPattern pattern = p.patterns[static_cast<std::size_t>(i)];
    const std::int64_t segments = segment_count(N, pattern.segment_length);
    const std::int64_t blocks = ceil_div(longest_virtual_length(p.seq_len, pattern), cpu::kBlockQ);
    const std::int64_t items = B * H * segments * blocks;
    parallel_for(items, 1, [&](std::int64_t begin, std::int64_t end) {
      Scratch<T> scratch(D);
      std::vector<T> out_tile(static_cast<std::size_t>(cpu::kBlockQ * D));
      std::vector<T> lse_tile(static_cast<std::size_t>(cpu::kBlockQ));
      for (std::int64_t item = begin; item < end; ++item) {
        std::int64_t rest = item;
        const std::int64_t block = rest % blocks;
        rest /= blocks;
        const std::int64_t segment = rest % segments;
        rest /= segments;
        const std::int64_t h = rest % H;
        const std::int64_t b = rest / H;
        const std::int64_t offset = pattern_offset(p.mode, i, G, pattern.dilation_rate, h, H);
        if (offset < 0) continue;
        const VirtualSequence vs = virtual_sequence(N, pattern, offset, segment);
        const std::int64_t q_begin = block * cpu::kBlockQ;
        if (q_begin >= vs.length) continue;
        const std::int64_t q_end = std::min(vs.length, q_begin + cpu::kBlockQ);
        const std::int64_t kv_head = h / group;
        const Rows<T> q_rows = sequence_rows(q, b, h, vs);
        cpu::forward_tile<T>(Rows<T>{q_rows.row(q_begin), q_rows.stride}, sequence_rows(k, b, kv_head, vs),
                        sequence_rows(v, b, kv_head, vs), vs.length, q_begin, q_end, D, p.causal,
                        static_cast<T>(p.scale), out_tile.data(), lse_tile.data(), scratch.workspace);
        // Merge into the accumulators: lse = log(e^lse + e^tile), out = weighted mix.
        for (std::int64_t j = q_begin; j < q_end; ++j) {
          const std::int64_t row = vs.first_row + j * vs.row_step;
          T& l = lse_sum[(b * H + h) * N + row];
          T* o = out_sum.row(b, row, h);
          const T tile_lse = lse_tile[static_cast<std::size_t>(j - q_begin)];
          const T* tile_out = out_tile.data() + (j - q_begin) * D;
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
    });
  }

  const auto alpha = static_cast<T>(output_scale(p));
  if (alpha != T(1)) {
    parallel_for(B * N * H, 1024, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t item = begin; item < end; ++item) {
        T* row = out_sum.row(item / (N * H), (item / H) % N, item % H);
        for (std::int64_t d = 0; d < D; ++d) row[d] *= alpha;
      }
    });
  }
  cpu::finish_accumulator(out_sum, p.out, shape, H);
  if (lse_acc.defined()) Tensor::from_blob(p.lse, {B, H, N}, lse_dtype(p.dtype)).copy_from(lse_acc);
}

// p.gradient_column_sums += the column sums of [dq | dk | dv] as written: each a (B N,
// heads D) matrix (the API checked its layout) summed in a Linear's bias order.
template <class T>
void add_gradient_column_sums(const DilatedAttentionParams& p) {
  T* sums = static_cast<T*>(p.gradient_column_sums);
  for (const auto& [gradient, heads] : {std::pair{p.dq, p.heads}, {p.dk, p.kv_heads}, {p.dv, p.kv_heads}}) {
    const Operand<T> g = cpu::make_operand<T>(gradient, shape_of(p), heads);
    cpu::add_column_sums(g.data, p.batch * p.seq_len, heads * p.head_dim, g.seq_stride, sums);
    sums += heads * p.head_dim;
  }
}

template <class T>
void backward(const DilatedAttentionParams& p) {
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const std::int64_t group = H / Hk;
  const cpu::OperandShape shape = shape_of(p);
  const Operand<T> q = cpu::make_operand<T>(p.q, shape, H), k = cpu::make_operand<T>(p.k, shape, Hk),
                   v = cpu::make_operand<T>(p.v, shape, Hk);
  const Operand<T> out = cpu::make_operand<T>(p.out, shape, H), dout = cpu::make_operand<T>(p.dout, shape, H);
  const T alpha = static_cast<T>(output_scale(p));

  // delta = rowsum(dout o out) with the final output (DESIGN 2.3), and lse in T.
  const Tensor delta_t =
      p.output_deltas
          ? Tensor::from_blob(const_cast<void*>(p.output_deltas), {B, H, N}, lse_dtype(p.dtype)).to(dtype_of<T>::value)
          : cpu::output_deltas<T>(out, dout, shape, H);
  const Tensor lse_t = Tensor::from_blob(p.lse, {B, H, N}, lse_dtype(p.dtype)).to(dtype_of<T>::value);
  const T* delta = delta_t.data<T>();

  const Accumulator<T> dq = cpu::make_accumulator<T>(p.dq, shape, H), dk = cpu::make_accumulator<T>(p.dk, shape, Hk),
                       dv = cpu::make_accumulator<T>(p.dv, shape, Hk);
  const T* lse = lse_t.data<T>();
  const auto G = static_cast<std::int64_t>(p.patterns.size());

  for (std::int64_t i = 0; i < G; ++i) {
    const DilationPattern pattern = p.patterns[static_cast<std::size_t>(i)];
    const std::int64_t segments = segment_count(N, pattern.segment_length);
    parallel_for(B * Hk * segments, 1, [&](std::int64_t begin, std::int64_t end) {
      Scratch<T> scratch(D);
      for (std::int64_t item = begin; item < end; ++item) {
        const std::int64_t segment = item % segments;
        const std::int64_t kv_head = (item / segments) % Hk;
        const std::int64_t b = item / (segments * Hk);
        for (std::int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
          const std::int64_t offset = pattern_offset(p.mode, i, G, pattern.dilation_rate, h, H);
          if (offset < 0) continue;
          const VirtualSequence vs = virtual_sequence(N, pattern, offset, segment);
          if (vs.length == 0) continue;
          const std::int64_t step = vs.row_step;
          cpu::backward_sequence<T>(sequence_rows(q, b, h, vs), sequence_rows(k, b, kv_head, vs),
                               sequence_rows(v, b, kv_head, vs), sequence_rows(dout, b, h, vs),
                               Rows<T>{lse + (b * H + h) * N + vs.first_row, step},
                               Rows<T>{delta + (b * H + h) * N + vs.first_row, step}, vs.length, 0, vs.length, D,
                               p.causal, static_cast<T>(p.scale), alpha, sequence_rows(dq, b, h, vs),
                               sequence_rows(dk, b, kv_head, vs), sequence_rows(dv, b, kv_head, vs), scratch.workspace);
        }
      }
    });
  }
  cpu::finish_accumulator(dq, p.dq, shape, H);
  cpu::finish_accumulator(dk, p.dk, shape, Hk);
  cpu::finish_accumulator(dv, p.dv, shape, Hk);
  rotate_attention_gradients_cpu(p);
  if (p.gradient_column_sums) add_gradient_column_sums<T>(p);
}

}  // namespace

void dilated_attention_forward_cpu(const DilatedAttentionParams& params) {
  if (params.dtype == DType::f64) {
    forward<double>(params);
  } else {
    forward<float>(params);
  }
}

void dilated_attention_backward_cpu(const DilatedAttentionParams& params) {
  if (params.dtype == DType::f64) {
    backward<double>(params);
  } else {
    backward<float>(params);
  }
}

}  // namespace longnet::kernels
