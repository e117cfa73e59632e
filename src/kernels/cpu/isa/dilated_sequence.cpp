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

std::int64_t clamp(std::int64_t x, std::int64_t lo, std::int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

// The keys j in [*first, *end) of [0, cols) at positions key0 + j that the band lets the
// query at position q see.
void band_keys(const PairMask& m, std::int64_t q, std::int64_t key0, std::int64_t cols, std::int64_t* first,
               std::int64_t* end) {
  *first = m.max_distance == kUnboundedDistance ? 0 : clamp(q - m.max_distance - key0, 0, cols);
  *end = m.min_distance == -kUnboundedDistance ? cols : clamp(q - m.min_distance - key0 + 1, 0, cols);
}

// The queries i in [*first, *end) of [0, rows) at positions query0 + i that see the key at
// position k under the band.
void band_queries(const PairMask& m, std::int64_t k, std::int64_t query0, std::int64_t rows, std::int64_t* first,
                  std::int64_t* end) {
  *first = m.min_distance == -kUnboundedDistance ? 0 : clamp(k + m.min_distance - query0, 0, rows);
  *end = m.max_distance == kUnboundedDistance ? rows : clamp(k + m.max_distance - query0 + 1, 0, rows);
}

// Whether every pair of queries [query0, query0 + rows) x keys [key0, key0 + cols) is
// inside the band (then only a predicate can mask anything).
bool band_covers(const PairMask& m, std::int64_t query0, std::int64_t rows, std::int64_t key0, std::int64_t cols) {
  const bool low_ok = m.min_distance == -kUnboundedDistance || query0 - (key0 + cols - 1) >= m.min_distance;
  const bool high_ok = m.max_distance == kUnboundedDistance || query0 + rows - 1 - key0 <= m.max_distance;
  return low_ok && high_ok;
}

bool tile_needs_mask(const PairMask& m, std::int64_t query0, std::int64_t rows, std::int64_t key0, std::int64_t cols) {
  return m.predicate != nullptr || !band_covers(m, query0, rows, key0, cols);
}

// The keys [*first, *end) of a block (count keys at key0 + j) that some query of
// [query0, query0 + rows) sees: the first query sees the farthest back, the last the
// farthest forward.
void visible_keys(const PairMask* m, std::int64_t query0, std::int64_t rows, std::int64_t key0, std::int64_t count,
                  std::int64_t* first, std::int64_t* end) {
  *first = 0;
  *end = count;
  if (!m) return;
  std::int64_t unused = 0;
  band_keys(*m, query0, key0, count, first, &unused);
  band_keys(*m, query0 + rows - 1, key0, count, &unused, end);
}

// Sets s[i][j] = -inf (row stride ld) where the query at query0 + i may not see the key at
// key0 + j.
template <class T>
void mask_pairs(T* s, std::int64_t ld, std::int64_t rows, std::int64_t cols, std::int64_t query0, std::int64_t key0,
                const PairMask& m) {
  const T minus_infinity = static_cast<T>(kNegativeInfinity);
  for (std::int64_t i = 0; i < rows; ++i) {
    std::int64_t first = 0, end = 0;
    band_keys(m, query0 + i, key0, cols, &first, &end);
    T* si = s + i * ld;
    for (std::int64_t j = 0; j < first; ++j) si[j] = minus_infinity;
    for (std::int64_t j = end > first ? end : first; j < cols; ++j) si[j] = minus_infinity;
    if (m.predicate) {
      for (std::int64_t j = first; j < end; ++j) {
        if (!m.predicate(m.context, m.head, query0 + i, key0 + j)) si[j] = minus_infinity;
      }
    }
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
// dimensions of the output are processed in panels of 16 (two 8-float vectors). Key blocks
// are 64 keys: the score tile, the value rows and the output block then stay in L1.
constexpr std::int64_t kPanel = 16;
constexpr std::int64_t kFmaBlockK = 64;

// S^T[j][i] = sum_d K[j][d] * qt[d][i] for the keys j0 .. j0 + MR - 1 and every query
// panel; qt is the scaled query block transposed (row stride kBlockQ, zero-padded to whole
// panels). MR keys x 16 queries = 2 MR accumulators (12 of the 16 registers for MR = 6).
// Also raises column_max[i] to the largest score of query i. With kMasked (a block the
// band cuts), scores outside the band become -inf first: query i sees key j iff
// j + low_shift <= i <= j + high_shift, the shifts being (first key) - (first query) plus
// the band's bounds (clamped far outside the tile when unbounded).
template <int MR, bool kMasked>
void score_rows(Rows<float> k, std::int64_t j0, const float* qt, std::int64_t D, std::int64_t panels, float* st,
                float* column_max, std::int64_t low_shift, std::int64_t high_shift) {
  const float* key[MR];
  for (int r = 0; r < MR; ++r) key[r] = k.row(j0 + r);
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 negative_infinity = _mm256_set1_ps(-__builtin_inff());
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
    if constexpr (kMasked) {
      const __m256 column0 = _mm256_add_ps(lane, _mm256_set1_ps(static_cast<float>(panel * kPanel)));
      const __m256 column1 = _mm256_add_ps(column0, _mm256_set1_ps(8.0f));
      for (int r = 0; r < MR; ++r) {
        // The visible columns [first, last], clamped so that the float comparisons stay exact.
        const __m256 first = _mm256_set1_ps(static_cast<float>(clamp(j0 + r + low_shift, -1, kBlockQ + 1)));
        const __m256 last = _mm256_set1_ps(static_cast<float>(clamp(j0 + r + high_shift, -1, kBlockQ + 1)));
        const __m256 hidden0 =
            _mm256_or_ps(_mm256_cmp_ps(column0, first, _CMP_LT_OQ), _mm256_cmp_ps(column0, last, _CMP_GT_OQ));
        const __m256 hidden1 =
            _mm256_or_ps(_mm256_cmp_ps(column1, first, _CMP_LT_OQ), _mm256_cmp_ps(column1, last, _CMP_GT_OQ));
        c[r][0] = _mm256_blendv_ps(c[r][0], negative_infinity, hidden0);
        c[r][1] = _mm256_blendv_ps(c[r][1], negative_infinity, hidden1);
      }
    }
    __m256 m0 = _mm256_loadu_ps(column_max + panel * kPanel), m1 = _mm256_loadu_ps(column_max + panel * kPanel + 8);
    for (int r = 0; r < MR; ++r) {
      m0 = _mm256_max_ps(m0, c[r][0]);
      m1 = _mm256_max_ps(m1, c[r][1]);
      _mm256_storeu_ps(st + (j0 + r) * kBlockQ + panel * kPanel, c[r][0]);
      _mm256_storeu_ps(st + (j0 + r) * kBlockQ + panel * kPanel + 8, c[r][1]);
    }
    _mm256_storeu_ps(column_max + panel * kPanel, m0);
    _mm256_storeu_ps(column_max + panel * kPanel + 8, m1);
  }
}

template <bool kMasked>
void score_tile(Rows<float> k, std::int64_t keys, const float* qt, std::int64_t D, std::int64_t panels, float* st,
                float* column_max, std::int64_t low_shift, std::int64_t high_shift) {
  std::int64_t j = 0;
  for (; j + 6 <= keys; j += 6) score_rows<6, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
  switch (keys - j) {
    case 5:
      return score_rows<5, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
    case 4:
      return score_rows<4, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
    case 3:
      return score_rows<3, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
    case 2:
      return score_rows<2, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
    case 1:
      return score_rows<1, kMasked>(k, j, qt, D, panels, st, column_max, low_shift, high_shift);
    default:
      return;
  }
}

// exp(x) for x <= 0 on 8 lanes (vector_exp.hpp's method, leaner because x <= 0): n =
// round(x / ln 2) from the low bits of x log2(e) + 1.5 * 2^23, r = x - n ln 2 in two parts,
// exp(r) by the degree-6 polynomial, times 2^n built from n's bits. Inputs below -87.3
// (including -inf) give exactly 0.
__m256 exp_nonpositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.3f);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lowest);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // t's low mantissa bits hold n (two's complement); shifted into the exponent field.
  const __m256i two_to_n =
      _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23), _mm256_set1_epi32(0x3f800000));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(two_to_n)));
}

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

// The online-softmax step for the query columns [0, columns) of S^T over its keys
// [0, keys), given each column's largest score in this block: new running maxima,
// P = exp(S - max) in place, running sums, and the factor exp(old max - new max) by which
// each query's accumulated output must shrink.
void softmax_columns(float* st, std::int64_t keys, std::int64_t columns, const float* block_max, float* running_max,
                     float* running_sum, float* correction) {
  const __m256 negative_infinity = _mm256_set1_ps(-__builtin_inff());
  for (std::int64_t i = 0; i < columns; i += 8) {
    const __m256 old_max = _mm256_loadu_ps(running_max + i);
    const __m256 new_max = _mm256_max_ps(_mm256_loadu_ps(block_max + i), old_max);
    // A query with no key yet keeps max -inf; shifting by 0 then gives exp(-inf) = 0.
    const __m256 shift =
        _mm256_blendv_ps(new_max, _mm256_setzero_ps(), _mm256_cmp_ps(new_max, negative_infinity, _CMP_EQ_OQ));
    __m256 sum = _mm256_setzero_ps();
    for (std::int64_t j = 0; j < keys; ++j) {
      const __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(st + j * kBlockQ + i), shift));
      _mm256_storeu_ps(st + j * kBlockQ + i, p);
      sum = _mm256_add_ps(sum, p);
    }
    const __m256 shrink = exp_nonpositive(_mm256_sub_ps(old_max, shift));
    _mm256_storeu_ps(running_sum + i, _mm256_fmadd_ps(_mm256_loadu_ps(running_sum + i), shrink, sum));
    _mm256_storeu_ps(running_max + i, new_max);
    _mm256_storeu_ps(correction + i, shrink);
  }
}

// The band's shifts of score_rows for queries at query0 and keys at key0: query i sees
// key j iff j + low <= i <= j + high (unbounded ends far outside any tile).
void band_shifts(const PairMask& m, std::int64_t query0, std::int64_t key0, std::int64_t* low, std::int64_t* high) {
  constexpr std::int64_t kFar = 4 * kBlockQ;
  const std::int64_t shift = key0 - query0;
  *low = m.min_distance == -kUnboundedDistance ? -kFar : clamp(shift + m.min_distance, -kFar, kFar);
  *high = m.max_distance == kUnboundedDistance ? kFar : clamp(shift + m.max_distance, -kFar, kFar);
}

// The fp32 forward over key blocks with the micro-kernels above; false (nothing done)
// when the shape is not one they cover.
bool forward_blocks_fma(Rows<float> q, std::int64_t rows, std::int64_t query0, const KeyBlock<float>* blocks,
                        std::int64_t block_count, std::int64_t D, float scale, float* out_tile, float* lse_tile,
                        const TileWorkspace<float>& w) {
  // The packed query block lives in the grads buffer (kBlockQ x kBlockK floats).
  if (D % 8 != 0 || D * kBlockQ > kBlockQ * kBlockK) return false;
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

  float* block_max = w.row_delta;  // unused by the forward otherwise
  for (std::int64_t b = 0; b < block_count; ++b) {
    const KeyBlock<float>& block = blocks[b];
    std::int64_t key_first = 0, key_end = 0;
    visible_keys(block.mask, query0, rows, block.key_position, block.count, &key_first, &key_end);
    for (std::int64_t kb = key_first; kb < key_end; kb += kFmaBlockK) {
      const std::int64_t keys = smaller(kFmaBlockK, key_end - kb);
      const std::int64_t key0 = block.key_position + kb;
      const Rows<float> k_block{block.k.row(kb), block.k.stride}, v_block{block.v.row(kb), block.v.stride};
      for (std::int64_t i = 0; i < columns; ++i) block_max[i] = static_cast<float>(kNegativeInfinity);
      if (block.mask && tile_needs_mask(*block.mask, query0, rows, key0, keys)) {
        const PairMask& mask = *block.mask;
        std::int64_t low = 0, high = 0;
        band_shifts(mask, query0, key0, &low, &high);
        score_tile<true>(k_block, keys, qt, D, panels, st, block_max, low, high);
        if (mask.predicate) {  // then the column maxima over the remaining scores
          for (std::int64_t i = 0; i < columns; ++i) block_max[i] = static_cast<float>(kNegativeInfinity);
          for (std::int64_t j = 0; j < keys; ++j) {
            float* sj = st + j * kBlockQ;
            for (std::int64_t i = 0; i < rows; ++i) {
              if (!mask.predicate(mask.context, mask.head, query0 + i, key0 + j)) sj[i] = -__builtin_inff();
              block_max[i] = sj[i] > block_max[i] ? sj[i] : block_max[i];
            }
          }
        }
      } else {
        score_tile<false>(k_block, keys, qt, D, panels, st, block_max, 0, 0);
      }
      softmax_columns(st, keys, columns, block_max, w.row_max, w.row_sum, w.row_lse);
      std::int64_t d = 0;
      for (; d + 16 <= D; d += 16) accumulate_panel<2>(st, rows, v_block, keys, w.row_lse, acc, D, d);
      if (d < D) accumulate_panel<1>(st, rows, v_block, keys, w.row_lse, acc, D, d);
    }
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    if (w.row_sum[i] == 0.0f) {  // no key
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

bool forward_blocks_fma(Rows<float>, std::int64_t, std::int64_t, const KeyBlock<float>*, std::int64_t, std::int64_t,
                        float, float*, float*, const TileWorkspace<float>&) {
  return false;
}

#endif

// fp64 always takes the OpenBLAS path.
bool forward_blocks_fma(Rows<double>, std::int64_t, std::int64_t, const KeyBlock<double>*, std::int64_t, std::int64_t,
                        double, double*, double*, const TileWorkspace<double>&) {
  return false;
}

// The causal band of a virtual sequence.
constexpr PairMask kCausalMask{0, kUnboundedDistance, nullptr, nullptr, 0};

}  // namespace

template <class T>
void sequence_forward_blocks(Rows<T> q, std::int64_t rows, std::int64_t query0, const KeyBlock<T>* blocks,
                             std::int64_t block_count, std::int64_t head_dim, T scale, T* out_tile, T* lse_tile,
                             const TileWorkspace<T>& w) {
  if (forward_blocks_fma(q, rows, query0, blocks, block_count, head_dim, scale, out_tile, lse_tile, w)) return;
  const std::int64_t D = head_dim;
  T* s = w.scores;
  T* acc = w.acc;
  for (std::int64_t n = 0; n < rows * D; ++n) acc[n] = T(0);
  for (std::int64_t i = 0; i < rows; ++i) {
    w.row_max[i] = static_cast<T>(kNegativeInfinity);
    w.row_sum[i] = T(0);
  }

  for (std::int64_t b = 0; b < block_count; ++b) {
    const KeyBlock<T>& block = blocks[b];
    std::int64_t key_first = 0, key_end = 0;
    visible_keys(block.mask, query0, rows, block.key_position, block.count, &key_first, &key_end);
    for (std::int64_t kb = key_first; kb < key_end; kb += kBlockK) {
      const std::int64_t cols = smaller(kBlockK, key_end - kb);
      const std::int64_t key0 = block.key_position + kb;
      gemm(Op::none, Op::transpose, rows, cols, D, scale, q.row(0), q.stride, block.k.row(kb), block.k.stride, T(0), s,
           kBlockK);
      if (block.mask && tile_needs_mask(*block.mask, query0, rows, key0, cols)) {
        mask_pairs(s, kBlockK, rows, cols, query0, key0, *block.mask);
      }
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
      gemm(Op::none, Op::none, rows, D, cols, T(1), s, kBlockK, block.v.row(kb), block.v.stride, T(1), acc, D);
    }
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    if (w.row_sum[i] == T(0)) {  // no key
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
void sequence_forward_tile(Rows<T> q, Rows<T> k, Rows<T> v, std::int64_t key_count, std::int64_t q_begin,
                           std::int64_t q_end, std::int64_t head_dim, bool causal, T scale, T* out_tile, T* lse_tile,
                           const TileWorkspace<T>& w) {
  const KeyBlock<T> keys{k, v, key_count, 0, causal ? &kCausalMask : nullptr};
  sequence_forward_blocks(q, q_end - q_begin, q_begin, &keys, 1, head_dim, scale, out_tile, lse_tile, w);
}

template <class T>
void sequence_backward_block(Rows<T> q, Rows<T> dout, Rows<T> lse, Rows<T> delta, std::int64_t query_count,
                             std::int64_t query0, const KeyBlock<T>& keys, std::int64_t head_dim, T scale, T alpha,
                             MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv, const TileWorkspace<T>& w) {
  const std::int64_t D = head_dim;
  T* p = w.scores;
  T* ds = w.grads;
  std::int64_t key_first = 0, key_end = 0;
  visible_keys(keys.mask, query0, query_count, keys.key_position, keys.count, &key_first, &key_end);
  for (std::int64_t kb = key_first; kb < key_end; kb += kBlockK) {
    const std::int64_t cols = smaller(kBlockK, key_end - kb);
    const std::int64_t key0 = keys.key_position + kb;
    // Only the queries the band lets see some key of this tile (causal: those at or after
    // its first key).
    std::int64_t q_first = 0, q_end = query_count;
    if (keys.mask) {
      std::int64_t unused = 0;
      band_queries(*keys.mask, key0, query0, query_count, &q_first, &unused);
      band_queries(*keys.mask, key0 + cols - 1, query0, query_count, &unused, &q_end);
    }
    for (std::int64_t local = q_first; local < q_end; local += kBlockQ) {
      const std::int64_t rows = smaller(kBlockQ, q_end - local);
      for (std::int64_t i = 0; i < rows; ++i) {
        // A row without keys (lse = -inf) has P = 0: +inf makes exp(s - lse) 0 even where s = -inf.
        const T row_lse = lse.row(local + i)[0];
        w.row_lse[i] = row_lse == static_cast<T>(kNegativeInfinity) ? -row_lse : row_lse;
        w.row_delta[i] = delta.row(local + i)[0];
      }
      // P = exp(scale q.k - lse), masked.
      gemm(Op::none, Op::transpose, rows, cols, D, scale, q.row(local), q.stride, keys.k.row(kb), keys.k.stride, T(0),
           p, kBlockK);
      if (keys.mask && tile_needs_mask(*keys.mask, query0 + local, rows, key0, cols)) {
        mask_pairs(p, kBlockK, rows, cols, query0 + local, key0, *keys.mask);
      }
      for (std::int64_t i = 0; i < rows; ++i) exp_subtract_sum(p + i * kBlockK, cols, w.row_lse[i]);
      // dV += alpha P^T dO
      if (dk.data) {
        gemm(Op::transpose, Op::none, cols, D, rows, alpha, p, kBlockK, dout.row(local), dout.stride, T(1), dv.row(kb),
             dv.stride);
      }
      // dP = alpha dO V^T, then dS = P (dP - delta)
      gemm(Op::none, Op::transpose, rows, cols, D, alpha, dout.row(local), dout.stride, keys.v.row(kb), keys.v.stride,
           T(0), ds, kBlockK);
      for (std::int64_t i = 0; i < rows; ++i) {
        T* dsi = ds + i * kBlockK;
        const T* pi = p + i * kBlockK;
        const T di = w.row_delta[i];
        for (std::int64_t j = 0; j < cols; ++j) dsi[j] = pi[j] * (dsi[j] - di);
      }
      // dQ += scale dS K ; dK += scale dS^T Q
      if (dq.data) {
        gemm(Op::none, Op::none, rows, D, cols, scale, ds, kBlockK, keys.k.row(kb), keys.k.stride, T(1), dq.row(local),
             dq.stride);
      }
      if (dk.data) {
        gemm(Op::transpose, Op::none, cols, D, rows, scale, ds, kBlockK, q.row(local), q.stride, T(1), dk.row(kb),
             dk.stride);
      }
    }
  }
}

template <class T>
void sequence_backward(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, Rows<T> lse, Rows<T> delta,
                       std::int64_t key_count, std::int64_t q_begin, std::int64_t q_end, std::int64_t head_dim,
                       bool causal, T scale, T alpha, MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv,
                       const TileWorkspace<T>& w) {
  const KeyBlock<T> keys{k, v, key_count, 0, causal ? &kCausalMask : nullptr};
  sequence_backward_block(q, dout, lse, delta, q_end - q_begin, q_begin, keys, head_dim, scale, alpha, dq, dk, dv, w);
}

#define LONGNET_INSTANTIATE(T)                                                                                         \
  template void sequence_forward_tile<T>(Rows<T>, Rows<T>, Rows<T>, std::int64_t, std::int64_t, std::int64_t,          \
                                         std::int64_t, bool, T, T*, T*, const TileWorkspace<T>&);                      \
  template void sequence_backward<T>(Rows<T>, Rows<T>, Rows<T>, Rows<T>, Rows<T>, Rows<T>, std::int64_t, std::int64_t, \
                                     std::int64_t, std::int64_t, bool, T, T, MutableRows<T>, MutableRows<T>,           \
                                     MutableRows<T>, const TileWorkspace<T>&);                                         \
  template void sequence_forward_blocks<T>(Rows<T>, std::int64_t, std::int64_t, const KeyBlock<T>*, std::int64_t,      \
                                           std::int64_t, T, T*, T*, const TileWorkspace<T>&);                          \
  template void sequence_backward_block<T>(Rows<T>, Rows<T>, Rows<T>, Rows<T>, std::int64_t, std::int64_t,             \
                                           const KeyBlock<T>&, std::int64_t, T, T, MutableRows<T>, MutableRows<T>,     \
                                           MutableRows<T>, const TileWorkspace<T>&);
LONGNET_INSTANTIATE(float)
LONGNET_INSTANTIATE(double)
#undef LONGNET_INSTANTIATE

}  // namespace longnet::kernels::cpu::LONGNET_CPU_ISA
