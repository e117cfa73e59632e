// LayerNorm on CUDA (layer_norm.hpp): what the forward (layer_norm_forward.cu) and the
// backward (layer_norm_backward.cu) share. Statistics and gradients in Compute<T> (f32 for bf16
// and f32 rows, f64 for f64); weight, bias and their gradients in the accumulation dtype
// (the f32 master weights under bf16 activations).
//
// Rows that fit in registers (the usual case: up to 6144 bf16, 3072 f32, 1536 f64 or 768
// unpacked columns) are held by a block, a "team" of 1 to 8 warps: thread t owns the
// groups t, t + blockDim, ... (at most kGroupsPerThread) of P columns, one 16-byte pack
// when the rows allow. Each row is then read from memory once:
//   forward:  read x, write out                         (bytes: 2 * rows * C * sizeof(T))
//   backward: read x and dout, write dx, and the dweight/dbias terms (and dx's, when its
//             column sums are asked for) of each thread's columns summed in registers
//             over a chunk of kRowsPerChunk rows, in row order; pass 2 adds the chunks in
//             a fixed order (model_kernels_common.cuh) (bytes: 3 * rows * C * sizeof(T)
//             + 2 or 3 partial sums per 32-row chunk).
//             Rows of one warp (up to 768 bf16 columns) take kWarpTeams warps per
//             chunk, each its own rows, summed in shared memory in warp order: one warp
//             per chunk left 8 warps per SM, too few loads in flight for HBM. On sm_90
//             the backward's rows arrive through shared memory, kRowStages ahead, by
//             bulk copies (StagedRows below: 1.9 -> 2.45 TB/s on an H200).
// At 3 TB/s a 32768 x 768 bf16 forward is 34 us and its backward 50 us (+4 us of partial
// sums), 32768 x 3072 four times that.
// Longer rows take the streaming kernels below: one warp per row and three passes over
// it, and separate column-sum passes for dweight/dbias (the same chunk order) and dx's.
// kGelu (input = gelu): each element of x becomes gelu(x) as it is loaded (the
// feed-forward's activation and sub-LayerNorm in one pass: its output is never stored);
// the backward recomputes it, keeps xhat and gelu'(x) between its loops and multiplies dx
// by gelu'(x) (bf16 rows: a fast erf, below).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/gelu.hpp"
#include "longnet/kernels/layer_norm.hpp"

namespace longnet::kernels::layer_norm_cuda {

using namespace cuda_model;

constexpr int kGroupsPerThread = 3;  // 768 bf16 columns: one warp, 3 packs per lane
constexpr int kMaxTeamThreads = 256;
constexpr std::int64_t kRowsPerChunk = 32;  // dweight/dbias: rows summed in order per chunk
constexpr int kWarpTeams = 4;               // one-warp teams per backward block
constexpr int kRowStages = 2;               // rows a backward team has in shared memory (sm_90)

// P consecutive elements of a row: one aligned load or store of P * sizeof(T) bytes (16
// when P = kPack<T>).
template <class T, int P>
struct alignas(sizeof(T) * P) Group {
  T v[P];
};

template <class T, int P>
__device__ __forceinline__ Group<T, P> load_group(const T* row, std::int64_t g) {
  return reinterpret_cast<const Group<T, P>*>(row)[g];
}

// Stores P values as group g of `row` and returns them as stored (rounded to T).
template <class T, int P>
__device__ __forceinline__ Group<T, P> store_group(T* row, std::int64_t g, const Compute<T>* values) {
  Group<T, P> group;
  for (int e = 0; e < P; ++e) group.v[e] = from_compute<T>(values[e]);
  reinterpret_cast<Group<T, P>*>(row)[g] = group;
  return group;
}

// A group's elements in Compute<T>. bf16 pairs by bit operations (a bf16 is the high half of
// its float): one instruction an element, where converting each element alone took the
// odd ones a byte permute and a shift.
template <class T, int P>
__device__ __forceinline__ void unpack_group(const Group<T, P>& group, Compute<T>* out) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> && P % 2 == 0) {
    const auto* words = reinterpret_cast<const std::uint32_t*>(group.v);
    for (int i = 0; i < P / 2; ++i) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  } else {
    for (int e = 0; e < P; ++e) out[e] = to_compute(group.v[e]);
  }
}

// P weights (accumulation dtype C) of group g, or `fallback` when the vector is null.
template <class C, int P>
__device__ __forceinline__ void load_weights(const C* weights, std::int64_t g, C fallback, C* out) {
  if (!weights) {
    for (int e = 0; e < P; ++e) out[e] = fallback;
  } else if constexpr (P % kPack<C> == 0) {
    for (int i = 0; i < P / kPack<C>; ++i) {
      const Pack<C> pack = load_pack(weights + g * P, i);
      for (int e = 0; e < kPack<C>; ++e) out[i * kPack<C> + e] = pack.v[e];
    }
  } else {
    for (int e = 0; e < P; ++e) out[e] = weights[g * P + e];
  }
}

// GELU as Phi(x) = (1 + erf(x / sqrt 2)) / 2 and its density phi(x): gelu(x) = x Phi(x),
// gelu'(x) = Phi(x) + x phi(x): one erf and one exp an element for both (the backward
// keeps gelu'(x) and xhat of each element in registers between its two loops).
// For bf16 rows erf comes from Abramowitz & Stegun 7.1.26,
//   erf(z) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2),  t = 1 / (1 + p z),
// z >= 0 (odd symmetry otherwise), absolute error <= 1.5e-7 plus float rounding: far below
// bf16's rounding (2^-9 relative), which these values meet when stored. libdevice's erff
// (gelu.hpp's, kept for f32/f64 rows, which are compared with the CPU at their own
// precision) cost ~40 instructions where this takes ~15, in kernels bound by issuing.
__device__ __forceinline__ float reciprocal_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Phi(x) and phi(x) of the rows' elements: the short erf for bf16 rows (whose exp(-x^2/2)
// is phi's too: one exp for both), gelu.hpp's (exact) otherwise.
template <class C>
struct GeluTerms {
  C cdf, density;
};

template <class T, class C>
__device__ __forceinline__ GeluTerms<C> row_gelu_terms(C x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    constexpr float kP = 0.3275911f, kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f, kA4 = -1.453152027f,
                    kA5 = 1.061405429f;
    const float t = reciprocal_approx(fmaf(kP * 0.70710678118654752440f, fabsf(x), 1.0f));
    const float gauss = exp2_approx(-0.72134752044448170368f * x * x);  // exp(-x^2 / 2)
    // Phi(-|x|) = erfc(|x| / sqrt 2) / 2 (the coefficients halved), Phi(|x|) = 1 - that.
    const float tail =
        t * fmaf(t, fmaf(t, fmaf(t, fmaf(t, 0.5f * kA5, 0.5f * kA4), 0.5f * kA3), 0.5f * kA2), 0.5f * kA1) * gauss;
    return {x >= 0.0f ? 1.0f - tail : tail, 0.39894228040143267794f * gauss};
  } else {
    return {gelu_cdf(x), gelu_density(x)};
  }
}

template <class T, class C>
__device__ __forceinline__ C row_gelu_cdf(C x) {
  return row_gelu_terms<T>(x).cdf;
}

// The value normalised for an element x of the input: x, or gelu(x).
template <class T, bool kGelu, class C>
__device__ __forceinline__ C normalised(C x) {
  if constexpr (kGelu) {
    return x * row_gelu_cdf<T>(x);
  } else {
    return x;
  }
}

// The sum over the team (the block), in a fixed order for a given block size.
template <class C>
__device__ __forceinline__ C team_sum(C value, C* shared) {
  return blockDim.x == 32 ? warp_sum(value) : block_sum(value, shared);
}

// Two sums over the team at once (one pair of barriers instead of two); `shared` holds 64.
// A team is one warp or the whole block.
template <class C>
__device__ __forceinline__ void team_sum2(C& a, C& b, C* shared, bool one_warp) {
  a = warp_sum(a);
  b = warp_sum(b);
  if (one_warp) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();  // `shared` may still be read by the previous row
  if (lane == 0) shared[warp] = a, shared[32 + warp] = b;
  __syncthreads();
  a = warp_sum(lane < warps ? shared[lane] : C(0));
  b = warp_sum(lane < warps ? shared[32 + lane] : C(0));
}

// Whole 16-byte packs when every row starts 16-byte aligned and is whole packs long.
template <class T>
bool packed_rows(const LayerNormParams& p, bool backward) {
  const std::int64_t P = kPack<T>;
  bool ok = p.columns % P == 0 && p.x_row_stride % P == 0 && aligned16(p.x, p.weight, p.bias);
  if (backward) {
    ok = ok && p.dout_row_stride % P == 0 && p.dx_row_stride % P == 0 && aligned16(p.dout, p.dx) &&
         (!p.dresidual || (p.dresidual_row_stride % P == 0 && aligned16(p.dresidual)));
  } else {
    ok = ok && p.out_row_stride % P == 0 && aligned16(p.out);
  }
  return ok;
}

// The team for rows of `groups` groups: the fewest warps holding at most kGroupsPerThread
// groups per thread; 0 when the rows need more than kMaxTeamThreads threads.
inline unsigned team_threads(std::int64_t groups) {
  const std::int64_t warps = (groups + 32 * kGroupsPerThread - 1) / (32 * kGroupsPerThread);
  return warps * 32 <= kMaxTeamThreads ? static_cast<unsigned>(std::max<std::int64_t>(warps, 1) * 32) : 0;
}

inline unsigned streaming_blocks(std::int64_t rows) {
  return static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
}

inline unsigned row_grid(std::int64_t rows) { return static_cast<unsigned>(std::min<std::int64_t>(rows, 1 << 30)); }

// Calls body with std::true_type when the rows are GELU pre-activations.
template <class Body>
void with_input(const LayerNormParams& p, Body&& body) {
  if (p.input == LayerNormInput::gelu) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// The entry points' dispatch: launch.template operator()<T, P, kGelu>(stream) for p's dtype
// T, its rows whole 16-byte packs or not (P = kPack<T> or 1; packed_rows) and its input.
template <class Launch>
void dispatch_rows(const LayerNormParams& p, bool backward, const char* what, Launch&& launch) {
  dispatch_activation(p.dtype, what, [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    with_input(p, [&](auto gelu) {
      if (packed_rows<T>(p, backward)) {
        launch.template operator()<T, kPack<T>, gelu.value>(stream);
      } else {
        launch.template operator()<T, 1, gelu.value>(stream);
      }
    });
  });
}

}  // namespace longnet::kernels::layer_norm_cuda
