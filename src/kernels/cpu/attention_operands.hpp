// What a CPU attention driver needs around the tile primitives (dilated_sequence.hpp):
// operands (B, N, heads, D) in the compute type T (the caller's memory when it already is
// T, else a widened contiguous copy), output accumulators in T (the caller's output when
// it is T, else a zeroed workspace converted at the end), per-thread scratch, and the
// run-time choice between the generic and the AVX2 builds of the primitives.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_features.hpp"
#include "kernels/cpu/dilated_sequence.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels::cpu {

// One thread's scratch for the tile primitives.
template <class T>
struct Scratch {
  std::vector<T> scores, grads, acc, rows;
  TileWorkspace<T> workspace;

  explicit Scratch(std::int64_t head_dim)
      : scores(kBlockQ * kBlockK),
        grads(kBlockQ * kBlockK),
        acc(static_cast<std::size_t>(kBlockQ * head_dim)),
        rows(4 * kBlockQ) {
    workspace = {scores.data(),
                 grads.data(),
                 acc.data(),
                 rows.data(),
                 rows.data() + kBlockQ,
                 rows.data() + 2 * kBlockQ,
                 rows.data() + 3 * kBlockQ};
  }
};

// The shape of the operands of one call: (batch, seq_len, heads, head_dim) and their dtype.
struct OperandShape {
  std::int64_t batch = 0, seq_len = 0, head_dim = 0;
  DType dtype = DType::f32;
};

inline Tensor wrap_rows(const RowTensor& t, const OperandShape& s, std::int64_t heads, DType dtype) {
  return Tensor::from_blob(t.data, {s.batch, s.seq_len, heads, s.head_dim}, dtype, Device::cpu(),
                           {t.batch_stride, t.seq_stride, t.head_stride, 1});
}

template <class T>
struct Operand {
  Tensor storage;  // keeps a converted copy alive
  const T* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;

  const T* row(std::int64_t b, std::int64_t n, std::int64_t h) const {
    return data + b * batch_stride + n * seq_stride + h * head_stride;
  }
  // Rows first, first + step, ... of (b, h).
  Rows<T> rows(std::int64_t b, std::int64_t first, std::int64_t h, std::int64_t step = 1) const {
    return {row(b, first, h), step * seq_stride};
  }
};

template <class T>
Operand<T> make_operand(const RowTensor& t, const OperandShape& s, std::int64_t heads) {
  Operand<T> o;
  if (s.dtype == dtype_of<T>::value) {
    o.data = static_cast<const T*>(t.data);
    o.batch_stride = t.batch_stride;
    o.seq_stride = t.seq_stride;
    o.head_stride = t.head_stride;
    return o;
  }
  o.storage = wrap_rows(t, s, heads, s.dtype).to(dtype_of<T>::value).contiguous();
  o.data = o.storage.template data<T>();
  o.head_stride = s.head_dim;
  o.seq_stride = heads * s.head_dim;
  o.batch_stride = s.seq_len * o.seq_stride;
  return o;
}

template <class T>
struct Accumulator {
  Tensor workspace;
  T* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;

  T* row(std::int64_t b, std::int64_t n, std::int64_t h) const {
    return data + b * batch_stride + n * seq_stride + h * head_stride;
  }
  MutableRows<T> rows(std::int64_t b, std::int64_t first, std::int64_t h, std::int64_t step = 1) const {
    return {row(b, first, h), step * seq_stride};
  }
};

// An accumulator for the output `t` (heads heads), zeroed.
template <class T>
Accumulator<T> make_accumulator(const RowTensor& t, const OperandShape& s, std::int64_t heads) {
  Accumulator<T> a;
  if (s.dtype == dtype_of<T>::value) {
    a.data = static_cast<T*>(t.data);
    a.batch_stride = t.batch_stride;
    a.seq_stride = t.seq_stride;
    a.head_stride = t.head_stride;
    const std::int64_t D = s.head_dim, N = s.seq_len;
    parallel_for(s.batch * N * heads, 1024, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t item = begin; item < end; ++item) {
        T* row = a.row(item / (N * heads), (item / heads) % N, item % heads);
        for (std::int64_t d = 0; d < D; ++d) row[d] = T(0);
      }
    });
    return a;
  }
  a.workspace = Tensor::zeros({s.batch, s.seq_len, heads, s.head_dim}, dtype_of<T>::value);
  a.data = a.workspace.template data<T>();
  a.head_stride = s.head_dim;
  a.seq_stride = heads * s.head_dim;
  a.batch_stride = s.seq_len * a.seq_stride;
  return a;
}

// Converts a workspace accumulator into the output `t` (nothing to do when it is `t`).
template <class T>
void finish_accumulator(const Accumulator<T>& a, const RowTensor& t, const OperandShape& s, std::int64_t heads) {
  if (a.workspace.defined()) wrap_rows(t, s, heads, s.dtype).copy_from(a.workspace);
}

// delta[(b H + h) N + n] = sum_d dout[b, n, h, d] * out[b, n, h, d] (DESIGN 2.3: the final output).
template <class T>
Tensor output_deltas(const Operand<T>& out, const Operand<T>& dout, const OperandShape& s, std::int64_t heads) {
  const std::int64_t N = s.seq_len, H = heads, D = s.head_dim;
  Tensor delta_t = Tensor::empty({s.batch, H, N}, dtype_of<T>::value);
  T* delta = delta_t.data<T>();
  parallel_for(s.batch * H * N, 256, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t n = item % N, h = (item / N) % H, b = item / (N * H);
      const T* o = out.row(b, n, h);
      const T* g = dout.row(b, n, h);
      T sum = 0;
      for (std::int64_t d = 0; d < D; ++d) sum += o[d] * g[d];
      delta[item] = sum;
    }
  });
  return delta_t;
}

// The primitives of the instruction set this machine supports.
template <class T>
void forward_tile(Rows<T> q, Rows<T> k, Rows<T> v, std::int64_t key_count, std::int64_t q_begin, std::int64_t q_end,
                  std::int64_t D, bool causal, T scale, T* out, T* lse, const TileWorkspace<T>& w) {
#if defined(__x86_64__) || defined(__i386__)
  if (use_avx2()) return avx2::sequence_forward_tile<T>(q, k, v, key_count, q_begin, q_end, D, causal, scale, out, lse, w);
#endif
  generic::sequence_forward_tile<T>(q, k, v, key_count, q_begin, q_end, D, causal, scale, out, lse, w);
}

template <class T>
void backward_sequence(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, Rows<T> lse, Rows<T> delta,
                       std::int64_t key_count, std::int64_t q_begin, std::int64_t q_end, std::int64_t D, bool causal,
                       T scale, T alpha, MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv,
                       const TileWorkspace<T>& w) {
#if defined(__x86_64__) || defined(__i386__)
  if (use_avx2()) {
    return avx2::sequence_backward<T>(q, k, v, dout, lse, delta, key_count, q_begin, q_end, D, causal, scale, alpha,
                                      dq, dk, dv, w);
  }
#endif
  generic::sequence_backward<T>(q, k, v, dout, lse, delta, key_count, q_begin, q_end, D, causal, scale, alpha, dq, dk,
                                dv, w);
}

template <class T>
void forward_blocks(Rows<T> q, std::int64_t rows, std::int64_t query0, const KeyBlock<T>* blocks,
                    std::int64_t block_count, std::int64_t D, T scale, T* out, T* lse, const TileWorkspace<T>& w) {
#if defined(__x86_64__) || defined(__i386__)
  if (use_avx2()) return avx2::sequence_forward_blocks<T>(q, rows, query0, blocks, block_count, D, scale, out, lse, w);
#endif
  generic::sequence_forward_blocks<T>(q, rows, query0, blocks, block_count, D, scale, out, lse, w);
}

template <class T>
void backward_block(Rows<T> q, Rows<T> dout, Rows<T> lse, Rows<T> delta, std::int64_t rows, std::int64_t query0,
                    const KeyBlock<T>& keys, std::int64_t D, T scale, T alpha, MutableRows<T> dq, MutableRows<T> dk,
                    MutableRows<T> dv, const TileWorkspace<T>& w) {
#if defined(__x86_64__) || defined(__i386__)
  if (use_avx2()) {
    return avx2::sequence_backward_block<T>(q, dout, lse, delta, rows, query0, keys, D, scale, alpha, dq, dk, dv, w);
  }
#endif
  generic::sequence_backward_block<T>(q, dout, lse, delta, rows, query0, keys, D, scale, alpha, dq, dk, dv, w);
}

}  // namespace longnet::kernels::cpu
