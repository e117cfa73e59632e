// Blocked flash-attention forward and backward on one virtual sequence (see the header).
// Built twice, with LONGNET_CPU_ISA = generic or avx2 (compiled with -mavx2 -mfma), so
// it uses no standard-library templates: only plain loops, cblas and libm.
#include "kernels/cpu/dilated_sequence.hpp"

#include <cmath>
#include <limits>

#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/vector_exp.hpp"

#ifndef LONGNET_CPU_ISA
#error "LONGNET_CPU_ISA must name the instruction-set namespace (generic or avx2)"
#endif

namespace longnet::kernels::cpu::LONGNET_CPU_ISA {
namespace {

constexpr double kNegativeInfinity = -std::numeric_limits<double>::infinity();

std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// Sets s[i][j] = -inf where key kb + j comes after query qb + i (the causal mask).
template <class T>
void mask_future(T* s, std::int64_t ld, std::int64_t rows, std::int64_t cols, std::int64_t qb, std::int64_t kb) {
  for (std::int64_t i = 0; i < rows; ++i) {
    std::int64_t first_masked = qb + i - kb + 1;
    if (first_masked < 0) first_masked = 0;
    for (std::int64_t j = first_masked; j < cols; ++j) s[i * ld + j] = static_cast<T>(kNegativeInfinity);
  }
}

template <class T>
T row_maximum(const T* x, std::int64_t n) {
  T m = static_cast<T>(kNegativeInfinity);
  for (std::int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

}  // namespace

template <class T>
void sequence_forward_tile(Rows<T> q, Rows<T> k, Rows<T> v, std::int64_t key_count, std::int64_t q_begin,
                           std::int64_t q_end, std::int64_t head_dim, bool causal, T scale, T* out_tile, T* lse_tile,
                           const TileWorkspace<T>& w) {
  const std::int64_t rows = q_end - q_begin;
  const std::int64_t D = head_dim;
  T* s = w.scores;
  T* acc = w.acc;
  for (std::int64_t n = 0; n < rows * D; ++n) acc[n] = T(0);
  for (std::int64_t i = 0; i < rows; ++i) {
    w.row_max[i] = static_cast<T>(kNegativeInfinity);
    w.row_sum[i] = T(0);
  }

  const std::int64_t key_end = causal ? smaller(q_end, key_count) : key_count;
  for (std::int64_t kb = 0; kb < key_end; kb += kBlockK) {
    const std::int64_t cols = smaller(kBlockK, key_end - kb);
    gemm(Op::none, Op::transpose, rows, cols, D, scale, q.row(0), q.stride, k.row(kb), k.stride, T(0), s, kBlockK);
    if (causal && kb + cols - 1 > q_begin) mask_future(s, kBlockK, rows, cols, q_begin, kb);
    for (std::int64_t i = 0; i < rows; ++i) {
      T* si = s + i * kBlockK;
      const T block_max = row_maximum(si, cols);
      const T new_max = block_max > w.row_max[i] ? block_max : w.row_max[i];
      if (new_max == static_cast<T>(kNegativeInfinity)) {  // no key yet for this row
        for (std::int64_t j = 0; j < cols; ++j) si[j] = T(0);
        continue;
      }
      const T correction = std::exp(w.row_max[i] - new_max);
      w.row_max[i] = new_max;
      w.row_sum[i] = w.row_sum[i] * correction + exp_subtract_sum(si, cols, new_max);
      if (correction != T(1)) {
        T* ai = acc + i * D;
        for (std::int64_t d = 0; d < D; ++d) ai[d] *= correction;
      }
    }
    gemm(Op::none, Op::none, rows, D, cols, T(1), s, kBlockK, v.row(kb), v.stride, T(1), acc, D);
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    if (w.row_sum[i] == T(0)) {  // no key (only when the keys end before this query)
      for (std::int64_t d = 0; d < D; ++d) out_tile[i * D + d] = T(0);
      lse_tile[i] = static_cast<T>(kNegativeInfinity);
      continue;
    }
    const T inverse = T(1) / w.row_sum[i];
    for (std::int64_t d = 0; d < D; ++d) out_tile[i * D + d] = acc[i * D + d] * inverse;
    lse_tile[i] = w.row_max[i] + std::log(w.row_sum[i]);
  }
}

template <class T>
void sequence_backward(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, Rows<T> lse, Rows<T> delta,
                       std::int64_t key_count, std::int64_t q_begin, std::int64_t q_end, std::int64_t head_dim,
                       bool causal, T scale, T alpha, MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv,
                       const TileWorkspace<T>& w) {
  const std::int64_t D = head_dim;
  T* p = w.scores;
  T* ds = w.grads;
  const std::int64_t key_end = causal ? smaller(q_end, key_count) : key_count;
  for (std::int64_t kb = 0; kb < key_end; kb += kBlockK) {
    const std::int64_t cols = smaller(kBlockK, key_end - kb);
    // Causal: only queries at or after the block's first key see it.
    for (std::int64_t qb = causal && kb > q_begin ? kb : q_begin; qb < q_end; qb += kBlockQ) {
      const std::int64_t rows = smaller(kBlockQ, q_end - qb);
      const std::int64_t local = qb - q_begin;  // row of query qb in the query-side buffers
      for (std::int64_t i = 0; i < rows; ++i) {
        w.row_lse[i] = lse.row(local + i)[0];
        w.row_delta[i] = delta.row(local + i)[0];
      }
      // P = exp(scale q.k - lse), masked.
      gemm(Op::none, Op::transpose, rows, cols, D, scale, q.row(local), q.stride, k.row(kb), k.stride, T(0), p,
           kBlockK);
      if (causal && kb + cols - 1 > qb) mask_future(p, kBlockK, rows, cols, qb, kb);
      for (std::int64_t i = 0; i < rows; ++i) exp_subtract_sum(p + i * kBlockK, cols, w.row_lse[i]);
      // dV += alpha P^T dO
      gemm(Op::transpose, Op::none, cols, D, rows, alpha, p, kBlockK, dout.row(local), dout.stride, T(1), dv.row(kb),
           dv.stride);
      // dP = alpha dO V^T, then dS = P (dP - delta)
      gemm(Op::none, Op::transpose, rows, cols, D, alpha, dout.row(local), dout.stride, v.row(kb), v.stride, T(0), ds,
           kBlockK);
      for (std::int64_t i = 0; i < rows; ++i) {
        T* dsi = ds + i * kBlockK;
        const T* pi = p + i * kBlockK;
        const T di = w.row_delta[i];
        for (std::int64_t j = 0; j < cols; ++j) dsi[j] = pi[j] * (dsi[j] - di);
      }
      // dQ += scale dS K ; dK += scale dS^T Q
      gemm(Op::none, Op::none, rows, D, cols, scale, ds, kBlockK, k.row(kb), k.stride, T(1), dq.row(local), dq.stride);
      gemm(Op::transpose, Op::none, cols, D, rows, scale, ds, kBlockK, q.row(local), q.stride, T(1), dk.row(kb),
           dk.stride);
    }
  }
}

#define LONGNET_INSTANTIATE(T)                                                                                         \
  template void sequence_forward_tile<T>(Rows<T>, Rows<T>, Rows<T>, std::int64_t, std::int64_t, std::int64_t,          \
                                         std::int64_t, bool, T, T*, T*, const TileWorkspace<T>&);                      \
  template void sequence_backward<T>(Rows<T>, Rows<T>, Rows<T>, Rows<T>, Rows<T>, Rows<T>, std::int64_t, std::int64_t, \
                                     std::int64_t, std::int64_t, bool, T, T, MutableRows<T>, MutableRows<T>,           \
                                     MutableRows<T>, const TileWorkspace<T>&);
LONGNET_INSTANTIATE(float)
LONGNET_INSTANTIATE(double)
#undef LONGNET_INSTANTIATE

}  // namespace longnet::kernels::cpu::LONGNET_CPU_ISA
