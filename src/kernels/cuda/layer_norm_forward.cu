// LayerNorm forward on CUDA (layer_norm.hpp; the rows' layout and teams: layer_norm_rows.cuh):
// rows in registers, a team of warps a row (or, for rows of one warp, eight warps a block
// each taking its own rows), and a streaming kernel for rows too long for registers.
#include "kernels/cuda/layer_norm_rows.cuh"

namespace longnet::kernels {
namespace {

using namespace layer_norm_cuda;

// kTeams = 1: the block is the team of each row. kTeams > 1 (rows of one warp): each of
// the block's kTeams warps takes its own rows, so an SM holds 64 warps' rows instead of
// the 32 one-warp blocks it can hold (48 KB of 768-column bf16 loads in flight).
template <class T, int P, bool kGelu, int kTeams>
__global__ void __launch_bounds__(kMaxTeamThreads) forward_kernel(LayerNormParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  constexpr int N = kGroupsPerThread;
  __shared__ C shared[32];
  const int t = kTeams > 1 ? static_cast<int>(threadIdx.x % 32) : static_cast<int>(threadIdx.x);
  const int team_threads = kTeams > 1 ? 32 : static_cast<int>(blockDim.x);
  const std::int64_t first_row = kTeams > 1 ? blockIdx.x * static_cast<std::int64_t>(kTeams) + threadIdx.x / 32
                                            : static_cast<std::int64_t>(blockIdx.x);
  const std::int64_t row_step = static_cast<std::int64_t>(gridDim.x) * kTeams;
  const std::int64_t groups = p.columns / P;
  const C* weight = static_cast<const C*>(p.weight);
  const C* bias = static_cast<const C*>(p.bias);
  const C inverse_columns = C(1) / static_cast<C>(p.columns);
  // Uniform over the team (kTeams = 1: the block; else the warp).
  for (std::int64_t row = first_row; row < p.rows; row += row_step) {
    const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
    C v[N][P];
    C sum = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const std::int64_t g = t + k * static_cast<std::int64_t>(team_threads);
      if (g < groups) {
        const Group<T, P> group = load_group<T, P>(x, g);
        for (int e = 0; e < P; ++e) {
          v[k][e] = normalised<T, kGelu>(to_compute(group.v[e]));
          sum += v[k][e];
        }
      }
    }
    const C mean = (kTeams > 1 ? warp_sum(sum) : team_sum(sum, shared)) * inverse_columns;
    C squares = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (t + k * static_cast<std::int64_t>(team_threads) < groups) {
        for (int e = 0; e < P; ++e) squares += (v[k][e] - mean) * (v[k][e] - mean);
      }
    }
    const C total_squares = kTeams > 1 ? warp_sum(squares) : team_sum(squares, shared);
    const C rstd = C(1) / sqrt(total_squares * inverse_columns + static_cast<C>(p.eps));
    T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const std::int64_t g = t + k * static_cast<std::int64_t>(team_threads);
      if (g < groups) {
        C w[P], b[P];
        load_weights<C, P>(weight, g, C(1), w);
        load_weights<C, P>(bias, g, C(0), b);
        for (int e = 0; e < P; ++e) v[k][e] = (v[k][e] - mean) * rstd * w[e] + b[e];
        store_group<T, P>(out, g, v[k]);
      }
    }
    if (t == 0) {
      static_cast<C*>(p.mean)[row] = mean;
      static_cast<C*>(p.rstd)[row] = rstd;
    }
  }
}

// Streaming kernels for rows too long for registers: one warp per row, every pass reads
// the row again (from L1/L2 after the first).
template <class T, int P, bool kGelu>
__global__ void streaming_forward_kernel(LayerNormParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const std::int64_t groups = p.columns / P;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const C* weight = static_cast<const C*>(p.weight);
  const C* bias = static_cast<const C*>(p.bias);
  C sum = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    const Group<T, P> group = load_group<T, P>(x, g);
    for (int e = 0; e < P; ++e) sum += normalised<T, kGelu>(to_compute(group.v[e]));
  }
  const C mean = warp_sum(sum) / static_cast<C>(p.columns);
  C squares = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    const Group<T, P> group = load_group<T, P>(x, g);
    for (int e = 0; e < P; ++e) {
      const C centred = normalised<T, kGelu>(to_compute(group.v[e])) - mean;
      squares += centred * centred;
    }
  }
  const C rstd = C(1) / sqrt(warp_sum(squares) / static_cast<C>(p.columns) + static_cast<C>(p.eps));
  T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
  for (std::int64_t g = lane; g < groups; g += 32) {
    const Group<T, P> group = load_group<T, P>(x, g);
    C w[P], b[P], y[P];
    load_weights<C, P>(weight, g, C(1), w);
    load_weights<C, P>(bias, g, C(0), b);
    for (int e = 0; e < P; ++e) y[e] = (normalised<T, kGelu>(to_compute(group.v[e])) - mean) * rstd * w[e] + b[e];
    store_group<T, P>(out, g, y);
  }
  if (lane == 0) {
    static_cast<C*>(p.mean)[row] = mean;
    static_cast<C*>(p.rstd)[row] = rstd;
  }
}

template <class T, int P, bool kGelu>
void forward(const LayerNormParams& p, cudaStream_t stream) {
  if (const unsigned team = team_threads(p.columns / P); team == 32) {
    constexpr int kTeams = kMaxTeamThreads / 32;
    launch_model(forward_kernel<T, P, kGelu, kTeams>, row_grid((p.rows + kTeams - 1) / kTeams), kTeams * 32, 0, stream,
                 p);
  } else if (team != 0) {
    launch_model(forward_kernel<T, P, kGelu, 1>, row_grid(p.rows), team, 0, stream, p);
  } else {
    launch_model(streaming_forward_kernel<T, P, kGelu>, streaming_blocks(p.rows), kThreads, 0, stream, p);
  }
}

// out_ones_column: 1, 0, ..., 0 after each output row; a thread a row (16 bytes of bf16).
template <class T>
__global__ void ones_columns_kernel(T* out, std::int64_t rows, std::int64_t columns, std::int64_t row_stride) {
  begin_dependent_kernel();
  LONGNET_GRID_STRIDE(row, rows) {
    T* pad = out + row * row_stride + columns;
#pragma unroll
    for (int c = 0; c < kOnesColumns; ++c) pad[c] = from_compute<T>(static_cast<Compute<T>>(c == 0 ? 1 : 0));
  }
}

}  // namespace

void layer_norm_forward_cuda(const LayerNormParams& p) {
  validate_ones_column(p);
  if (p.rows == 0) return;
  dispatch_rows(p, /*backward=*/false, "layer_norm_forward", [&]<class T, int P, bool kGelu>(cudaStream_t stream) {
    forward<T, P, kGelu>(p, stream);
    if (p.out_ones_column) {
      launch_model(ones_columns_kernel<T>, grid_for(p.rows), kThreads, 0, stream, static_cast<T*>(p.out), p.rows,
                   p.columns, p.out_row_stride);
    }
  });
  check_launch();
}

}  // namespace longnet::kernels
