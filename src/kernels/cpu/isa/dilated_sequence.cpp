// Blocked flash-attention forward and backward on one virtual sequence (see the header).
// Built twice, with LONGNET_CPU_ISA = generic or avx2 (compiled with -mavx2 -mfma), so
// it uses no standard-library templates: only plain loops, cblas, libm and intrinsics.
//
// The tiles' matrix products go to OpenBLAS, except the fp32 forward of the AVX2 build
// (head_dim a multiple of 8, at most 128), which uses register-blocked FMA micro-kernels
// on a transposed score tile S^T (keys x queries): S^T = K (Q scale)^T reads the key rows
// in place (one broadcast per key and dimension) against a packed copy of the query
// block, the online softmax runs down the columns of S^T with whole vectors, and
// O += P V reads the value rows in place. Nothing of K or V is copied, so the keys may be
// strided rows of any tensor; OpenBLAS, by contrast, packs both operands at every call,
// and its Q K^T with a transposed operand is its slowest case on these shapes.
#include "kernels/cpu/dilated_sequence.hpp"

#include <cmath>
#include <limits>

#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/vector_exp.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

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

#if defined(__AVX2__) && defined(__FMA__)

// Query columns of the transposed score tile S^T (keys x queries; row stride kBlockQ) and
// dimensions of the output are processed in panels of 16 (two 8-float vectors).
constexpr std::int64_t kPanel = 16;

// S^T[j][i] = sum_d K[j][d] * qt[d][i] for the keys j0 .. j0 + MR - 1 and every query
// panel; qt is the scaled query block transposed (row stride kBlockQ, zero-padded to whole
// panels). MR keys x 16 queries = 2 MR accumulators (12 of the 16 registers for MR = 6).
template <int MR>
void score_rows(Rows<float> k, std::int64_t j0, const float* qt, std::int64_t D, std::int64_t panels, float* st) {
  const float* key[MR];
  for (int r = 0; r < MR; ++r) key[r] = k.row(j0 + r);
  for (std::int64_t panel = 0; panel < panels; ++panel) {
    __m256 c[MR][2];
    for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm256_setzero_ps();
    const float* b = qt + panel * kPanel;
    for (std::int64_t d = 0; d < D; ++d) {
      const __m256 b0 = _mm256_loadu_ps(b + d * kBlockQ), b1 = _mm256_loadu_ps(b + d * kBlockQ + 8);
      for (int r = 0; r < MR; ++r) {
        const __m256 a = _mm256_broadcast_ss(key[r] + d);
        c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
        c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
      }
    }
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(st + (j0 + r) * kBlockQ + panel * kPanel, c[r][0]);
      _mm256_storeu_ps(st + (j0 + r) * kBlockQ + panel * kPanel + 8, c[r][1]);
    }
  }
}

void score_tile(Rows<float> k, std::int64_t keys, const float* qt, std::int64_t D, std::int64_t panels, float* st) {
  std::int64_t j = 0;
  for (; j + 6 <= keys; j += 6) score_rows<6>(k, j, qt, D, panels, st);
  switch (keys - j) {
    case 5:
      return score_rows<5>(k, j, qt, D, panels, st);
    case 4:
      return score_rows<4>(k, j, qt, D, panels, st);
    case 3:
      return score_rows<3>(k, j, qt, D, panels, st);
    case 2:
      return score_rows<2>(k, j, qt, D, panels, st);
    case 1:
      return score_rows<1>(k, j, qt, D, panels, st);
    default:
      return;
  }
}

// acc[i][d] = correction[i] * acc[i][d] + sum_j P^T[j][i] * V[j][d] for the queries
// i0 .. i0 + MR - 1 and the dimensions d0 .. d0 + 8 NV - 1, over keys [0, keys).
template <int MR, int NV>
void accumulate_rows(const float* pt, std::int64_t i0, Rows<float> v, std::int64_t keys, const float* correction,
                     float* acc, std::int64_t D, std::int64_t d0) {
  __m256 c[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const __m256 scale = _mm256_broadcast_ss(correction + i0 + r);
    for (int n = 0; n < NV; ++n) c[r][n] = _mm256_mul_ps(scale, _mm256_loadu_ps(acc + (i0 + r) * D + d0 + 8 * n));
  }
  for (std::int64_t j = 0; j < keys; ++j) {
    const float* value = v.row(j) + d0;
    __m256 b[NV];
    for (int n = 0; n < NV; ++n) b[n] = _mm256_loadu_ps(value + 8 * n);
    const float* p = pt + j * kBlockQ + i0;
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(p + r);
      for (int n = 0; n < NV; ++n) c[r][n] = _mm256_fmadd_ps(a, b[n], c[r][n]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int n = 0; n < NV; ++n) _mm256_storeu_ps(acc + (i0 + r) * D + d0 + 8 * n, c[r][n]);
  }
}

template <int NV>
void accumulate_panel(const float* pt, std::int64_t rows, Rows<float> v, std::int64_t keys, const float* correction,
                      float* acc, std::int64_t D, std::int64_t d0) {
  std::int64_t i = 0;
  for (; i + 6 <= rows; i += 6) accumulate_rows<6, NV>(pt, i, v, keys, correction, acc, D, d0);
  switch (rows - i) {
    case 5:
      return accumulate_rows<5, NV>(pt, i, v, keys, correction, acc, D, d0);
    case 4:
      return accumulate_rows<4, NV>(pt, i, v, keys, correction, acc, D, d0);
    case 3:
      return accumulate_rows<3, NV>(pt, i, v, keys, correction, acc, D, d0);
    case 2:
      return accumulate_rows<2, NV>(pt, i, v, keys, correction, acc, D, d0);
    case 1:
      return accumulate_rows<1, NV>(pt, i, v, keys, correction, acc, D, d0);
    default:
      return;
  }
}

float8 load8(const float* p) {
  float8 x;
  __builtin_memcpy(&x, p, sizeof x);
  return x;
}

void store8(float* p, float8 x) { __builtin_memcpy(p, &x, sizeof x); }

// The online-softmax step for the query columns [0, columns) of S^T over its keys
// [0, keys): new running maxima, P = exp(S - max) in place, running sums, and the factor
// exp(old max - new max) by which each query's accumulated output must shrink.
void softmax_columns(float* st, std::int64_t keys, std::int64_t columns, float* running_max, float* running_sum,
                     float* correction) {
  const float8 negative_infinity = float8{} - __builtin_inff();
  for (std::int64_t i = 0; i < columns; i += 8) {
    const float8 old_max = load8(running_max + i);
    float8 block_max = negative_infinity;
    for (std::int64_t j = 0; j < keys; ++j) {
      const float8 s = load8(st + j * kBlockQ + i);
      block_max = s > block_max ? s : block_max;
    }
    const float8 new_max = block_max > old_max ? block_max : old_max;
    // A query with no key yet keeps max -inf; shifting by 0 then gives exp(-inf) = 0.
    const float8 shift = new_max == negative_infinity ? float8{} : new_max;
    float8 sum{};
    for (std::int64_t j = 0; j < keys; ++j) {
      const float8 p = exp8(load8(st + j * kBlockQ + i) - shift);
      store8(st + j * kBlockQ + i, p);
      sum += p;
    }
    const float8 shrink = exp8(old_max - shift);
    store8(running_sum + i, load8(running_sum + i) * shrink + sum);
    store8(running_max + i, new_max);
    store8(correction + i, shrink);
  }
}

// The fp32 forward tile with the micro-kernels above; false (nothing done) when the
// shape is not one they cover.
bool forward_tile_fma(Rows<float> q, Rows<float> k, Rows<float> v, std::int64_t key_count, std::int64_t q_begin,
                      std::int64_t q_end, std::int64_t D, bool causal, float scale, float* out_tile, float* lse_tile,
                      const TileWorkspace<float>& w) {
  // The packed query block lives in the grads buffer (kBlockQ x kBlockK floats).
  if (D % 8 != 0 || D * kBlockQ > kBlockQ * kBlockK) return false;
  const std::int64_t rows = q_end - q_begin;
  const std::int64_t panels = (rows + kPanel - 1) / kPanel, columns = panels * kPanel;
  float* st = w.scores;
  float* qt = w.grads;
  float* acc = w.acc;
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* qi = q.row(i);
    for (std::int64_t d = 0; d < D; ++d) qt[d * kBlockQ + i] = scale * qi[d];
  }
  for (std::int64_t d = 0; d < D; ++d) {
    for (std::int64_t i = rows; i < columns; ++i) qt[d * kBlockQ + i] = 0.0f;
  }
  for (std::int64_t n = 0; n < rows * D; ++n) acc[n] = 0.0f;
  for (std::int64_t i = 0; i < columns; ++i) {
    w.row_max[i] = static_cast<float>(kNegativeInfinity);
    w.row_sum[i] = 0.0f;
  }

  const std::int64_t key_end = causal ? smaller(q_end, key_count) : key_count;
  for (std::int64_t kb = 0; kb < key_end; kb += kBlockK) {
    const std::int64_t keys = smaller(kBlockK, key_end - kb);
    const Rows<float> k_block{k.row(kb), k.stride}, v_block{v.row(kb), v.stride};
    score_tile(k_block, keys, qt, D, panels, st);
    if (causal && kb + keys - 1 > q_begin) {  // key kb + j is masked for queries before it
      for (std::int64_t j = 0; j < keys; ++j) {
        const std::int64_t first_visible = smaller(kb + j - q_begin, columns);
        for (std::int64_t i = 0; i < first_visible; ++i) st[j * kBlockQ + i] = static_cast<float>(kNegativeInfinity);
      }
    }
    softmax_columns(st, keys, columns, w.row_max, w.row_sum, w.row_lse);
    std::int64_t d = 0;
    for (; d + 16 <= D; d += 16) accumulate_panel<2>(st, rows, v_block, keys, w.row_lse, acc, D, d);
    if (d < D) accumulate_panel<1>(st, rows, v_block, keys, w.row_lse, acc, D, d);
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    if (w.row_sum[i] == 0.0f) {  // no key (only when the keys end before this query)
      for (std::int64_t d = 0; d < D; ++d) out_tile[i * D + d] = 0.0f;
      lse_tile[i] = static_cast<float>(kNegativeInfinity);
      continue;
    }
    const float inverse = 1.0f / w.row_sum[i];
    for (std::int64_t d = 0; d < D; ++d) out_tile[i * D + d] = acc[i * D + d] * inverse;
    lse_tile[i] = w.row_max[i] + std::log(w.row_sum[i]);
  }
  return true;
}

#else

bool forward_tile_fma(Rows<float>, Rows<float>, Rows<float>, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                      bool, float, float*, float*, const TileWorkspace<float>&) {
  return false;
}

#endif

// fp64 always takes the OpenBLAS path.
bool forward_tile_fma(Rows<double>, Rows<double>, Rows<double>, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                      bool, double, double*, double*, const TileWorkspace<double>&) {
  return false;
}

}  // namespace

template <class T>
void sequence_forward_tile(Rows<T> q, Rows<T> k, Rows<T> v, std::int64_t key_count, std::int64_t q_begin,
                           std::int64_t q_end, std::int64_t head_dim, bool causal, T scale, T* out_tile, T* lse_tile,
                           const TileWorkspace<T>& w) {
  if (forward_tile_fma(q, k, v, key_count, q_begin, q_end, head_dim, causal, scale, out_tile, lse_tile, w)) return;
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
