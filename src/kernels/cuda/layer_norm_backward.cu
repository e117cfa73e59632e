// LayerNorm backward on CUDA (layer_norm.hpp; the rows' layout and teams:
// layer_norm_rows.cuh): rows in registers or staged through shared memory by bulk copies,
// dweight/dbias (and dx's column sums) per chunk of rows then in a fixed order, the
// attention's delta (segment_dots) where the rows allow, and streaming kernels for rows
// too long for registers.
#include "kernels/cuda/attention_driver.cuh"  // output_deltas_into: segment_dots' own pass
#include "kernels/cuda/layer_norm_rows.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "longnet/core/gradient_stream.hpp"

namespace longnet::kernels {
namespace {

using namespace layer_norm_cuda;

// Where a team's rows come from in the backward. kStages = 0: registers, the next row's
// loads in flight while this one is computed (one row ahead: with 8-12 warps an SM that
// kept ~36 KB of loads in flight, about half of what HBM needs at its latency). kStages > 0
// (sm_90): a ring of kStages rows in shared memory that one thread of the team fills with
// bulk copies (cp.async.bulk, one instruction per row and tensor) up to kStages rows
// ahead; the loops read their groups from there, so the registers that held the rows go
// too. Per team and stage: x, dout and (when given) dresidual, each columns * sizeof(T)
// bytes (a multiple of 16: packed rows only).
// (Bulk copies are sm_90's: built for an older architecture, a staged instantiation reads
// its rows through registers; the host picks staged kernels only on sm_90 devices.)
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
constexpr bool kBulkCopies = true;
#else
constexpr bool kBulkCopies = false;
#endif

// The column sums a backward chunk writes to `partial`, partial[k][chunk][c]: dweight (k = 0)
// and dbias (1), and with kDxSums dx's (2).
template <bool kDxSums>
constexpr int kChunkSums = kDxSums ? 3 : 2;

// The warp teams' column sums of a chunk, added in team order at its end; a one-warp team's
// row holds at most 32 * kGroupsPerThread * P columns.
template <class C, int P, int kTeams, bool kDxSums>
using WarpTeamSums = C[kTeams][kChunkSums<kDxSums>][32 * kGroupsPerThread * P];
// The ring's least size when staged: warp teams with parameters sum their columns in it.
template <class C, int P, bool kParameters, bool kDxSums, int kTeams>
constexpr std::size_t kStagedTeamSumsBytes = (kParameters && kTeams > 1) ? sizeof(WarpTeamSums<C, P, kTeams, kDxSums>)
                                                                         : 0;

template <int kTeams, int kStages>
struct StagedRows {
  static constexpr int kBarrierBytes = ((kTeams * kStages * 8 + 15) / 16) * 16;
  // Shared bytes for rows of `row_bytes` and `tensors` tensors, at least `at_least` (the
  // warp teams' column sums reuse the ring once every row is done); the LayerNorm's
  // weights follow (weights_offset), `weight_bytes` of them.
  static __host__ __device__ std::size_t weights_offset(std::int64_t row_bytes, int tensors, std::size_t at_least) {
    const auto ring = static_cast<std::size_t>(kTeams * kStages * tensors * row_bytes);
    return kBarrierBytes + (ring > at_least ? ring : at_least);
  }
  static std::size_t bytes(std::int64_t row_bytes, int tensors, std::size_t at_least, std::size_t weight_bytes) {
    return weights_offset(row_bytes, tensors, at_least) + weight_bytes;
  }
};

// Staged rows read the LayerNorm's weights from shared memory, except the feed-forward's
// GELU rows (3072 columns): on an H100 that made the 768-wide backwards 1-3 % faster and
// the GELU one 19 % slower (0.288 -> 0.343 ms; docs/benchmarks.md, nineteenth session).
template <bool kStaged, bool kGelu>
constexpr bool kStagedWeights = kStaged && !kGelu;

// Block b: rows [b R, b R + R) (R = kRowsPerChunk), taken by kTeams teams; kTeams = 1: the
// block is one team taking the rows in order; kTeams > 1: warp w is a team taking rows w,
// w + kTeams, ... in order. With a the normalised row (x or gelu(x)), xhat = (a - mean)
// rstd and g = dout * weight:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) [* gelu'(x)] [+ dresidual],
// and, when kParameters, partial[0][b][c] = sum_r dout xhat, partial[1][b][c] = sum_r dout,
// and when kDxSums (which comes with kParameters: with_chunk_sums below) partial[2][b][c] =
// sum_r dx as stored (the teams' sums added in team order). Rows come through registers or
// shared memory (kStages, StagedRows above). The feed-forward's rows (kGelu, 3072 bf16
// columns, a team of 128) with register rows take 220 registers, two blocks an SM; bounded
// to 168 (three blocks) the kernel spilled and ran 0.54 ms a call against 0.36 on an H200,
// and teams of 12 warps with a group a thread (64 registers) ran 0.41 (benchmarks.md,
// 2026-12-04). dx's sums cost the staged 768-wide bf16 warp teams 14 registers (111 -> 125:
// still four blocks an SM) and the staged GELU rows 31 (128 -> 159: three; 166 since dx's
// arithmetic is spelt out, mul_rn: still three).
template <class T, int P, bool kParameters, bool kDxSums, int kTeams, bool kGelu, int kStages>
__global__ void __launch_bounds__(kMaxTeamThreads) backward_kernel(LayerNormParams p, Compute<T>* partial) {
  begin_dependent_kernel();
  static_assert(kParameters || !kDxSums, "dx's column sums come with the parameters'");
  using C = Compute<T>;
  constexpr int N = kGroupsPerThread;
  constexpr bool kWarpTeam = kTeams > 1;
  constexpr bool kStaged = kStages > 0 && kBulkCopies;
  __shared__ C shared[64];
  const std::int64_t groups = p.columns / P;
  const C* weight = static_cast<const C*>(p.weight);
  const C* means = static_cast<const C*>(p.mean);
  const C* rstds = static_cast<const C*>(p.rstd);
  const C inverse_columns = C(1) / static_cast<C>(p.columns);
  const std::int64_t begin = blockIdx.x * kRowsPerChunk, end = min(p.rows, begin + kRowsPerChunk);
  const int team = kWarpTeam ? static_cast<int>(threadIdx.x / 32) : 0;
  const int rank = kWarpTeam ? static_cast<int>(threadIdx.x % 32) : static_cast<int>(threadIdx.x);
  const int team_size = kWarpTeam ? 32 : static_cast<int>(blockDim.x);
  bool owned[N];
  for (int k = 0; k < N; ++k) owned[k] = rank + k * team_size < groups;
  // (int: a team's rows hold at most kMaxTeamThreads * N groups; 64-bit indices cost each
  // group's shared and global addresses a few instructions more in every row.)
  const auto group_of = [&](int k) { return rank + k * team_size; };

  // kStaged: the ring (StagedRows), the chunk's statistics and the weights in shared memory.
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  __shared__ C chunk_mean[kStaged ? kRowsPerChunk : 1], chunk_rstd[kStaged ? kRowsPerChunk : 1];
  const int tensors = p.dresidual ? 3 : 2;
  const unsigned row_bytes = static_cast<unsigned>(p.columns * sizeof(T));
  using Ring = StagedRows<kTeams, (kStaged ? kStages : 1)>;
  // kStagedWeights: the weights are read from shared memory (ones where there are none):
  // from global memory (L1) each row's two passes waited on them (long-scoreboard stalls,
  // the largest in Nsight Compute), and each group's load carried the null-weight fallback.
  C* staged_weights = reinterpret_cast<C*>(
      dynamic_shared +
      Ring::weights_offset(row_bytes, tensors, kStagedTeamSumsBytes<C, P, kParameters, kDxSums, kTeams>));
  const auto weights_of = [&](int k, C* w) {
    if constexpr (kStagedWeights<kStaged, kGelu>) {
      for (int e = 0; e < P; ++e) w[e] = staged_weights[group_of(k) * P + e];
    } else {
      load_weights<C, P>(weight, group_of(k), C(1), w);
    }
  };
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(dynamic_shared) + team * (kStaged ? kStages : 1);
  unsigned char* ring = dynamic_shared + Ring::kBarrierBytes +
                        static_cast<std::size_t>(team) * (kStaged ? kStages : 1) * tensors * row_bytes;
  // Row `row` into stage s (the team's issuing thread).
  const auto issue_row = [&](std::int64_t row, int s) {
    if constexpr (kStaged) {
      unsigned char* stage = ring + static_cast<std::size_t>(s) * tensors * row_bytes;
      cuda::mbarrier_arrive_expect_bytes(full + s, tensors * row_bytes);
      cuda::bulk_copy_to_shared(stage, static_cast<const T*>(p.x) + row * p.x_row_stride, row_bytes, full + s);
      cuda::bulk_copy_to_shared(stage + row_bytes, static_cast<const T*>(p.dout) + row * p.dout_row_stride, row_bytes,
                                full + s);
      if (p.dresidual) {
        cuda::bulk_copy_to_shared(stage + 2 * row_bytes,
                                  static_cast<const T*>(p.dresidual) + row * p.dresidual_row_stride, row_bytes,
                                  full + s);
      }
    }
  };
  if constexpr (kStaged) {
    if (rank == 0) {
      for (int s = 0; s < kStages; ++s) cuda::mbarrier_init(full + s, 1);
    }
    for (std::int64_t r = threadIdx.x; r < end - begin; r += blockDim.x) {
      chunk_mean[r] = means[begin + r];
      chunk_rstd[r] = rstds[begin + r];
    }
    if constexpr (kStagedWeights<kStaged, kGelu>) {
      for (std::int64_t c = threadIdx.x; c < p.columns; c += blockDim.x) staged_weights[c] = weight ? weight[c] : C(1);
    }
    __syncthreads();  // the barriers initialised, the statistics and weights stored
    if (rank == 0) {
      for (int s = 0; s < kStages; ++s) {
        const std::int64_t row = begin + team + static_cast<std::int64_t>(s) * kTeams;
        if (row < end) issue_row(row, s);
      }
    }
  }

  Group<T, P> x_next[kStaged ? 1 : N], dout_next[kStaged ? 1 : N];
  C mean_next = 0, rstd_next = 0;  // the statistics come with the row: loaded at its use,
                                   // each row waited for them (an L2 or DRAM round trip)
  const auto load_row = [&](std::int64_t row) {
    if constexpr (!kStaged) {
      mean_next = means[row];
      rstd_next = rstds[row];
      const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
      const T* dout = static_cast<const T*>(p.dout) + row * p.dout_row_stride;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if (owned[k]) {
          x_next[k] = load_group<T, P>(x, group_of(k));
          dout_next[k] = load_group<T, P>(dout, group_of(k));
        }
      }
    }
  };
  C dweight[N][P] = {}, dbias[N][P] = {};
  C dx_sums[kDxSums ? N : 1][kDxSums ? P : 1] = {};
  // kGelu: the first loop keeps each element's xhat and gelu'(x), so the raw x is dead after
  // it and the second loop is a few FMAs an element. Recomputing gelu there (one erf and
  // one exp an element, Phi kept) left the kernel bound by issuing: 51 instructions an
  // element, 0.38 ms a 32768 x 3072 call on an H200, twice its memory time. The plain rows
  // recompute xhat instead: kept, it would cost the d-wide rows a block an SM (registers).
  C kept_xhat[kGelu ? N : 1][kGelu ? P : 1], slope[kGelu ? N : 1][kGelu ? P : 1];
  if (!kStaged && begin + team < end) load_row(begin + team);
  int use = 0;  // rows this team has taken (kStaged: the ring position)
  for (std::int64_t row = begin + team; row < end; row += kTeams, ++use) {
    // This row's groups: from the registers loaded one row ago, or from its stage.
    Group<T, P> x_row[kStaged ? 1 : N], dout_row[kStaged ? 1 : N];
    const Group<T, P>* staged_x = nullptr;
    const Group<T, P>* staged_dout = nullptr;
    const Group<T, P>* staged_residual = nullptr;
    C mean, rstd;
    if constexpr (kStaged) {
      const int s = use % kStages;
      cuda::mbarrier_wait(full + s, static_cast<unsigned>(use / kStages) & 1);
      const unsigned char* stage = ring + static_cast<std::size_t>(s) * tensors * row_bytes;
      staged_x = reinterpret_cast<const Group<T, P>*>(stage);
      staged_dout = reinterpret_cast<const Group<T, P>*>(stage + row_bytes);
      staged_residual = reinterpret_cast<const Group<T, P>*>(stage + 2 * row_bytes);
      mean = chunk_mean[row - begin];
      rstd = chunk_rstd[row - begin];
    } else {
      for (int k = 0; k < N; ++k) x_row[k] = x_next[k], dout_row[k] = dout_next[k];
      mean = mean_next, rstd = rstd_next;
      if (row + kTeams < end) load_row(row + kTeams);
    }
    const auto x_of = [&](int k) -> Group<T, P> {
      if constexpr (kStaged) {
        return staged_x[group_of(k)];
      } else {
        return x_row[k];
      }
    };
    const auto dout_of = [&](int k) -> Group<T, P> {
      if constexpr (kStaged) {
        return staged_dout[group_of(k)];
      } else {
        return dout_row[k];
      }
    };
    const C shift = -mean * rstd;  // xhat = a rstd + shift
    // g = dout w is recomputed in the second loop rather than kept (registers hold rows).
    C g_sum = 0, gx_sum = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (owned[k]) {
        C w[P];
        weights_of(k, w);
        C xs[P], gs[P];
        unpack_group<T, P>(x_of(k), xs);
        unpack_group<T, P>(dout_of(k), gs);
        for (int e = 0; e < P; ++e) {
          const C g = gs[e], x = xs[e];
          C a = x;
          if constexpr (kGelu) {
            const GeluTerms<C> gelu = row_gelu_terms<T>(x);
            a = x * gelu.cdf;
            slope[k][e] = gelu.cdf + x * gelu.density;
          }
          const C xhat = fma(a, rstd, shift);
          if constexpr (kGelu) kept_xhat[k][e] = xhat;
          g_sum += g * w[e];
          gx_sum += g * w[e] * xhat;
          if constexpr (kParameters) {
            dweight[k][e] += g * xhat;
            dbias[k][e] += g;
          }
        }
      }
    }
    team_sum2(g_sum, gx_sum, shared, kWarpTeam || blockDim.x == 32);
    const C g_mean = g_sum * inverse_columns, gx_mean = gx_sum * inverse_columns;
    T* dx = static_cast<T*>(p.dx) + row * p.dx_row_stride;
    // dresidual is read here rather than with the row: held across the loop it cost the
    // d-wide kernel a block per SM (registers).
    const T* dresidual = p.dresidual ? static_cast<const T*>(p.dresidual) + row * p.dresidual_row_stride : nullptr;
    constexpr bool kDots = !kGelu && !kDxSums && kWarpTeam;  // rows that may take segment_dots (fused_segment_dots)
    C dots[kDots ? N : 1] = {};                              // this thread's part of each group's segment
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (owned[k]) {
        C w[P], d[P];
        C residual[P], gs[P], xs[kGelu ? 1 : P];
        if (dresidual) {
          unpack_group<T, P>(kStaged ? staged_residual[group_of(k)] : load_group<T, P>(dresidual, group_of(k)),
                             residual);
        }
        weights_of(k, w);
        unpack_group<T, P>(dout_of(k), gs);
        if constexpr (!kGelu) unpack_group<T, P>(x_of(k), xs);
        for (int e = 0; e < P; ++e) {
          const C xhat = kGelu ? kept_xhat[k][e] : fma(xs[e], rstd, shift);
          const C centred = fma(-xhat, gx_mean, fma(gs[e], w[e], -g_mean));
          if constexpr (kGelu) {
            const C scaled = mul_rn(rstd, centred);
            d[e] = dresidual ? fma(scaled, slope[k][e], residual[e]) : mul_rn(scaled, slope[k][e]);
          } else {
            d[e] = dresidual ? fma(rstd, centred, residual[e]) : mul_rn(rstd, centred);
          }
        }
        // dx as stored: converted once for the store and the sums (for bf16 the sums then read
        // the packed pairs back: a shift an element instead of a second conversion).
        const Group<T, P> stored = store_group<T, P>(dx, group_of(k), d);
        if constexpr (kDxSums || kDots) {
          C as_stored[P];
          unpack_group<T, P>(stored, as_stored);
          for (int e = 0; e < P; ++e) {
            if constexpr (kDxSums) dx_sums[k][e] = add_rn(dx_sums[k][e], as_stored[e]);
            if constexpr (kDots) {
              if (p.segment_dots) dots[k] = fma(as_stored[e], xs[e], dots[k]);
            }
          }
        }
      }
    }
    if constexpr (kDots) {
      // A segment's groups lie on `lanes` consecutive lanes of the (one-warp) team
      // (fused_segment_dots): added across them, written by the first.
      if (p.segment_dots) {
        const int lanes = static_cast<int>(p.segment_columns / P);
        const std::int64_t per_batch = p.segment_rows_per_batch, segments = p.columns / p.segment_columns;
        C* row_dots = static_cast<C*>(p.segment_dots) + (row / per_batch) * segments * per_batch + row % per_batch;
#pragma unroll
        for (int k = 0; k < N; ++k) {
          C dot = dots[k];
          for (int offset = lanes / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
          if (owned[k] && rank % lanes == 0) row_dots[group_of(k) / lanes * per_batch] = dot;
        }
      }
    }
    if constexpr (kStaged) {
      // The stage is free once every thread of the team has read it: refill it kStages rows on.
      if constexpr (kWarpTeam) {
        __syncwarp();
      } else {
        __syncthreads();
      }
      const std::int64_t next = row + static_cast<std::int64_t>(kStages) * kTeams;
      if (rank == 0 && next < end) {
        cuda::fence_shared_before_bulk_copies();
        issue_row(next, use % kStages);
      }
    }
  }
  if constexpr (kParameters && kWarpTeam) {
    // Each team's column sums to shared memory, then every column's teams in order. (Staged:
    // in the ring, whose rows are all read once every team is past this barrier.)
    constexpr int kSums = kChunkSums<kDxSums>;
    using TeamSums = WarpTeamSums<C, P, kTeams, kDxSums>;
    __shared__ C static_team_sums[kStaged ? 1 : kTeams][kSums][kStaged ? 1 : 32 * N * P];
    if constexpr (kStaged) __syncthreads();
    TeamSums& team_sums = *reinterpret_cast<TeamSums*>(
        kStaged ? static_cast<void*>(dynamic_shared + Ring::kBarrierBytes) : static_cast<void*>(static_team_sums));
    for (int k = 0; k < N; ++k) {
      if (owned[k]) {
        for (int e = 0; e < P; ++e) {
          const std::int64_t c = group_of(k) * P + e;
          team_sums[team][0][c] = dweight[k][e];
          team_sums[team][1][c] = dbias[k][e];
          if constexpr (kDxSums) team_sums[team][2][c] = dx_sums[k][e];
        }
      }
    }
    __syncthreads();
    const std::int64_t chunks = gridDim.x;
    for (std::int64_t c = threadIdx.x; c < p.columns; c += blockDim.x) {
      for (int s = 0; s < kSums; ++s) {
        C sum = 0;
        for (int j = 0; j < kTeams; ++j) sum += team_sums[j][s][c];
        partial[(s * chunks + blockIdx.x) * p.columns + c] = sum;
      }
    }
  } else if constexpr (kParameters) {
    const std::int64_t chunks = gridDim.x;
    for (int k = 0; k < N; ++k) {
      if (owned[k]) {
        for (int e = 0; e < P; ++e) {
          const std::int64_t c = group_of(k) * P + e;
          partial[blockIdx.x * p.columns + c] = dweight[k][e];
          partial[(chunks + blockIdx.x) * p.columns + c] = dbias[k][e];
          if constexpr (kDxSums) partial[(2 * chunks + blockIdx.x) * p.columns + c] = dx_sums[k][e];
        }
      }
    }
  }
}

template <class T, int P, bool kGelu>
__global__ void streaming_dx_kernel(LayerNormParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const std::int64_t groups = p.columns / P;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const T* dout = static_cast<const T*>(p.dout) + row * p.dout_row_stride;
  const C* weight = static_cast<const C*>(p.weight);
  const C mean = static_cast<const C*>(p.mean)[row], rstd = static_cast<const C*>(p.rstd)[row];
  C g_sum = 0, gx_sum = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    const Group<T, P> xg = load_group<T, P>(x, g), dg = load_group<T, P>(dout, g);
    C w[P];
    load_weights<C, P>(weight, g, C(1), w);
    for (int e = 0; e < P; ++e) {
      const C gw = to_compute(dg.v[e]) * w[e];
      g_sum += gw;
      gx_sum += gw * (normalised<T, kGelu>(to_compute(xg.v[e])) - mean) * rstd;
    }
  }
  const C g_mean = warp_sum(g_sum) / static_cast<C>(p.columns);
  const C gx_mean = warp_sum(gx_sum) / static_cast<C>(p.columns);
  T* dx = static_cast<T*>(p.dx) + row * p.dx_row_stride;
  const T* dresidual = p.dresidual ? static_cast<const T*>(p.dresidual) + row * p.dresidual_row_stride : nullptr;
  for (std::int64_t g = lane; g < groups; g += 32) {
    const Group<T, P> xg = load_group<T, P>(x, g), dg = load_group<T, P>(dout, g);
    C w[P], d[P];
    load_weights<C, P>(weight, g, C(1), w);
    for (int e = 0; e < P; ++e) {
      const C xv = to_compute(xg.v[e]);
      C a = xv, da_dx = 1;
      if constexpr (kGelu) {
        const GeluTerms<C> gelu = row_gelu_terms<T>(xv);
        a = xv * gelu.cdf;
        da_dx = gelu.cdf + xv * gelu.density;
      }
      d[e] = rstd * (to_compute(dg.v[e]) * w[e] - g_mean - (a - mean) * rstd * gx_mean);
      if constexpr (kGelu) d[e] *= da_dx;
    }
    if (dresidual) {
      const Group<T, P> rg = load_group<T, P>(dresidual, g);
      for (int e = 0; e < P; ++e) d[e] += to_compute(rg.v[e]);
    }
    store_group<T, P>(dx, g, d);
  }
}

// Streaming dweight/dbias: thread c sums column c over a chunk's rows in order, as the
// register kernel does, into the same partial layout.
template <class T, bool kGelu>
__global__ void streaming_parameter_sums_kernel(LayerNormParams p, std::int64_t chunks, Compute<T>* partial) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const T* x = static_cast<const T*>(p.x);
  const T* dout = static_cast<const T*>(p.dout);
  const C* means = static_cast<const C*>(p.mean);
  const C* rstds = static_cast<const C*>(p.rstd);
  LONGNET_GRID_STRIDE(i, chunks * p.columns) {
    const std::int64_t chunk = i / p.columns, c = i % p.columns;
    const std::int64_t end = min(p.rows, (chunk + 1) * kRowsPerChunk);
    C dweight = 0, dbias = 0;
    for (std::int64_t r = chunk * kRowsPerChunk; r < end; ++r) {
      const C g = to_compute(dout[r * p.dout_row_stride + c]);
      dweight += g * ((normalised<T, kGelu>(to_compute(x[r * p.x_row_stride + c])) - means[r]) * rstds[r]);
      dbias += g;
    }
    partial[chunk * p.columns + c] = dweight;
    partial[(chunks + chunk) * p.columns + c] = dbias;
  }
}

// One backward launch over `grid` chunks: rows staged through shared memory where the
// device and the rows allow (packed rows on sm_90), through registers otherwise.
template <class T, int P, bool kParameters, bool kDxSums, int kTeams, bool kGelu>
void launch_backward_rows(const LayerNormParams& p, unsigned grid, unsigned threads, Compute<T>* sums,
                          cudaStream_t stream) {
  if constexpr (P == kPack<T>) {
    if (cuda_device_info(current_device()).compute_major >= 9) {  // sm_90's bulk copies
      using Staged = StagedRows<kTeams, kRowStages>;
      const std::size_t team_sums = kStagedTeamSumsBytes<Compute<T>, P, kParameters, kDxSums, kTeams>;
      const std::size_t weight_bytes = kStagedWeights<true, kGelu> ? p.columns * sizeof(Compute<T>) : 0;
      const std::size_t bytes =
          Staged::bytes(p.columns * static_cast<std::int64_t>(sizeof(T)), p.dresidual ? 3 : 2, team_sums, weight_bytes);
      auto kernel = backward_kernel<T, P, kParameters, kDxSums, kTeams, kGelu, kRowStages>;
      LONGNET_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
      launch_model(kernel, grid, threads, bytes, stream, p, sums);
      return;
    }
  }
  launch_model(backward_kernel<T, P, kParameters, kDxSums, kTeams, kGelu, 0>, grid, threads, 0, stream, p, sums);
}

// Calls body(kParameters, kDxSums) with std::bool_constant's: the column sums a register-row
// launch writes. dx's come with the parameters' (three instantiations of each kernel, not
// four; asked for alone, the parameters' are computed and dropped: nn::LayerNorm always has
// both).
template <class Body>
void with_chunk_sums(bool parameters, bool dx_sums, Body&& body) {
  if (dx_sums) {
    body(std::true_type{}, std::true_type{});
  } else if (parameters) {
    body(std::true_type{}, std::false_type{});
  } else {
    body(std::false_type{}, std::false_type{});
  }
}

template <class T, int P, bool kGelu>
void backward(const LayerNormParams& p, cudaStream_t stream) {
  using C = Compute<T>;
  const std::int64_t chunks = (p.rows + kRowsPerChunk - 1) / kRowsPerChunk;
  require(chunks < (std::int64_t{1} << 31), "layer_norm_backward on CUDA: ", p.rows, " rows: too many");
  const bool parameters = p.dweight || p.dbias;
  const unsigned team = team_threads(p.columns / P);
  // Rows in registers sum dx's columns as they write it; streamed rows (rare) in a pass of
  // their own over dx.
  const bool dx_sums_in_launch = p.dx_column_sums && team != 0;
  const int chunk_sums = dx_sums_in_launch ? 3 : parameters ? 2 : 0;
  Tensor partial;
  if (chunk_sums > 0) {
    partial = Tensor::empty({chunk_sums * chunks * p.columns}, dtype_of<C>::value, Device::cuda(current_device()));
  }
  C* sums = chunk_sums > 0 ? partial.data<C>() : nullptr;
  if (team != 0) {
    const auto grid = static_cast<unsigned>(chunks);
    with_chunk_sums(parameters, dx_sums_in_launch, [&](auto with_parameters, auto with_dx_sums) {
      if (team == 32) {
        launch_backward_rows<T, P, with_parameters.value, with_dx_sums.value, kWarpTeams, kGelu>(
            p, grid, 32 * kWarpTeams, sums, stream);
      } else {
        launch_backward_rows<T, P, with_parameters.value, with_dx_sums.value, 1, kGelu>(p, grid, team, sums, stream);
      }
    });
  } else {
    launch_model(streaming_dx_kernel<T, P, kGelu>, streaming_blocks(p.rows), kThreads, 0, stream, p);
    if (parameters) {
      launch_model(streaming_parameter_sums_kernel<T, kGelu>, grid_for(chunks * p.columns), kThreads, 0, stream, p,
                   chunks, sums);
    }
  }
  check_launch();
  C* dweight = static_cast<C*>(p.dweight);
  C* dbias = static_cast<C*>(p.dbias);
  C* dx_column_sums = static_cast<C*>(p.dx_column_sums);
  // The totals write only parameter gradients (dx's column sums are a Linear's bias
  // gradient): on the gradient stream where one is active, which keeps `partial` alive.
  const auto totals = [&] {
    const cudaStream_t on = current_cuda_stream();
    if (chunk_sums == 3) {
      accumulate_chunk_totals<C, 3>(sums, chunks, p.columns, ColumnTargets<C, 3>{{dweight, dbias, dx_column_sums}}, on);
    } else if (chunk_sums == 2) {
      accumulate_chunk_totals<C, 2>(sums, chunks, p.columns, ColumnTargets<C, 2>{{dweight, dbias}}, on);
    }
  };
  if (GradientStream* side = chunk_sums > 0 ? GradientStream::active(Device::cuda(current_device())) : nullptr) {
    side->run(totals, {partial});
  } else {
    totals();
  }
  if (dx_column_sums && !dx_sums_in_launch) {
    accumulate_column_sums(static_cast<const T*>(p.dx), p.rows, p.columns, p.dx_row_stride, dx_column_sums, stream);
  }
}

// Whether the backward kernel of these rows (groups of P) takes segment_dots: one-warp
// teams whose segments are a power of two of whole groups within the warp, without dx's
// column sums (their registers and the dots' together cost the kernel a block an SM).
template <int P, bool kGelu>
bool fused_segment_dots(const LayerNormParams& p) {
  const std::int64_t lanes = p.segment_columns / P;
  return !kGelu && !p.dx_column_sums && team_threads(p.columns / P) == 32 && p.segment_columns % P == 0 &&
         lanes <= 32 && (lanes & (lanes - 1)) == 0;
}

template <class T, int P, bool kGelu>
void backward_with_dots(const LayerNormParams& p, cudaStream_t stream) {
  if (!p.segment_dots || fused_segment_dots<P, kGelu>(p)) return backward<T, P, kGelu>(p, stream);
  LayerNormParams rows = p;
  rows.segment_dots = nullptr;
  backward<T, P, kGelu>(rows, stream);
  // A pass of its own over dx and x: the attention's delta kernel, the segments as heads.
  const std::int64_t per_batch = p.segment_rows_per_batch;
  const auto as_heads = [&](const void* data, std::int64_t row_stride) {
    return RowTensor{const_cast<void*>(data), per_batch * row_stride, row_stride, p.segment_columns};
  };
  cuda::output_deltas_into<T, Compute<T>>(as_heads(p.x, p.x_row_stride), as_heads(p.dx, p.dx_row_stride),
                                          p.rows / per_batch, per_batch, p.columns / p.segment_columns,
                                          p.segment_columns, static_cast<Compute<T>*>(p.segment_dots), stream);
}

}  // namespace

void layer_norm_backward_cuda(const LayerNormParams& p) {
  validate_segment_dots(p);
  if (p.rows == 0) return;
  dispatch_rows(p, /*backward=*/true, "layer_norm_backward",
                [&]<class T, int P, bool kGelu>(cudaStream_t stream) { backward_with_dots<T, P, kGelu>(p, stream); });
}

}  // namespace longnet::kernels
