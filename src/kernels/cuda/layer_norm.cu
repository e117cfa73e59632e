// LayerNorm on CUDA (layer_norm.hpp): forward and dx with one warp per row (two passes
// over the row for the statistics, in Compute<T>: f32 for bf16 and f32 rows, f64 for f64;
// 16-byte packs per lane when the rows allow); dweight and dbias together as deterministic
// two-pass column sums (no atomics; dout read once for both). Weight, bias and their gradients are in the
// accumulation dtype (the f32 master weights under bf16 activations).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/layer_norm.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

// Group g of a row: P consecutive columns (one 16-byte pack when kVector).
template <class T, bool kVector>
struct Row {
  static constexpr int P = kVector ? kPack<T> : 1;
  __device__ static void load(const T* row, std::int64_t g, Compute<T>* out) {
    if constexpr (kVector) {
      const Pack<T> pack = load_pack(row, g);
      for (int e = 0; e < P; ++e) out[e] = to_compute(pack.v[e]);
    } else {
      out[0] = to_compute(row[g]);
    }
  }
  __device__ static void store(T* row, std::int64_t g, const Compute<T>* values) {
    if constexpr (kVector) {
      Pack<T> pack;
      for (int e = 0; e < P; ++e) pack.v[e] = from_compute<T>(values[e]);
      store_pack(row, g, pack);
    } else {
      row[g] = from_compute<T>(values[0]);
    }
  }
};

template <class T, bool kVector>
__global__ void forward_kernel(LayerNormParams p) {
  using C = Compute<T>;
  using R = Row<T, kVector>;
  constexpr int P = R::P;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const std::int64_t groups = p.columns / P;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const C* weight = static_cast<const C*>(p.weight);
  const C* bias = static_cast<const C*>(p.bias);
  C v[P];
  C sum = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    R::load(x, g, v);
    for (int e = 0; e < P; ++e) sum += v[e];
  }
  const C mean = warp_sum(sum) / static_cast<C>(p.columns);
  C squares = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    R::load(x, g, v);
    for (int e = 0; e < P; ++e) squares += (v[e] - mean) * (v[e] - mean);
  }
  const C rstd = C(1) / sqrt(warp_sum(squares) / static_cast<C>(p.columns) + static_cast<C>(p.eps));
  T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
  for (std::int64_t g = lane; g < groups; g += 32) {
    R::load(x, g, v);
    for (int e = 0; e < P; ++e) {
      const std::int64_t c = g * P + e;
      C y = (v[e] - mean) * rstd;
      if (weight) y *= weight[c];
      if (bias) y += bias[c];
      v[e] = y;
    }
    R::store(out, g, v);
  }
  if (lane == 0) {
    static_cast<C*>(p.mean)[row] = mean;
    static_cast<C*>(p.rstd)[row] = rstd;
  }
}

// With xhat = (x - mean) rstd and g = dout * weight:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
template <class T, bool kVector>
__global__ void dx_kernel(LayerNormParams p) {
  using C = Compute<T>;
  using R = Row<T, kVector>;
  constexpr int P = R::P;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const std::int64_t groups = p.columns / P;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;
  const T* dout = static_cast<const T*>(p.dout) + row * p.dout_row_stride;
  const C* weight = static_cast<const C*>(p.weight);
  const C mean = static_cast<const C*>(p.mean)[row], rstd = static_cast<const C*>(p.rstd)[row];
  C xv[P], gv[P];
  C g_sum = 0, gx_sum = 0;
  for (std::int64_t g = lane; g < groups; g += 32) {
    R::load(x, g, xv);
    R::load(dout, g, gv);
    for (int e = 0; e < P; ++e) {
      const C gw = weight ? gv[e] * weight[g * P + e] : gv[e];
      g_sum += gw;
      gx_sum += gw * (xv[e] - mean) * rstd;
    }
  }
  const C g_mean = warp_sum(g_sum) / static_cast<C>(p.columns);
  const C gx_mean = warp_sum(gx_sum) / static_cast<C>(p.columns);
  T* dx = static_cast<T*>(p.dx) + row * p.dx_row_stride;
  for (std::int64_t g = lane; g < groups; g += 32) {
    R::load(x, g, xv);
    R::load(dout, g, gv);
    for (int e = 0; e < P; ++e) {
      const C gw = weight ? gv[e] * weight[g * P + e] : gv[e];
      xv[e] = rstd * (gw - g_mean - (xv[e] - mean) * rstd * gx_mean);
    }
    R::store(dx, g, xv);
  }
}

// The terms of dweight and dbias at (row r, column c), in the accumulation precision, from
// one read of dout.
template <class T>
struct ParameterGradientTerms {
  const T *x, *dout;
  const Compute<T>*mean, *rstd;
  std::int64_t x_row_stride, dout_row_stride;
  __device__ void operator()(std::int64_t r, std::int64_t c, Compute<T>* terms) const {
    const Compute<T> g = to_compute(dout[r * dout_row_stride + c]);
    terms[0] = g * (to_compute(x[r * x_row_stride + c]) - mean[r]) * rstd[r];
    terms[1] = g;
  }
};

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads); }

// Whole packs per lane when every row starts 16-byte aligned and is whole packs long.
template <class T>
bool packed_rows(const LayerNormParams& p, bool backward) {
  const std::int64_t P = kPack<T>;
  bool ok = p.columns % P == 0 && p.x_row_stride % P == 0 && aligned16(p.x);
  if (backward) {
    ok = ok && p.dout_row_stride % P == 0 && p.dx_row_stride % P == 0 && aligned16(p.dout, p.dx);
  } else {
    ok = ok && p.out_row_stride % P == 0 && aligned16(p.out);
  }
  return ok;
}

}  // namespace

void layer_norm_forward_cuda(const LayerNormParams& p) {
  if (p.rows == 0) return;
  dispatch_activation(p.dtype, "layer_norm_forward", [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    if (packed_rows<T>(p, false)) {
      forward_kernel<T, true><<<row_blocks(p.rows), kThreads, 0, stream>>>(p);
    } else {
      forward_kernel<T, false><<<row_blocks(p.rows), kThreads, 0, stream>>>(p);
    }
  });
  check_launch();
}

void layer_norm_backward_cuda(const LayerNormParams& p) {
  if (p.rows == 0) return;
  dispatch_activation(p.dtype, "layer_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    using C = Compute<T>;
    const cudaStream_t stream = current_cuda_stream();
    if (packed_rows<T>(p, true)) {
      dx_kernel<T, true><<<row_blocks(p.rows), kThreads, 0, stream>>>(p);
    } else {
      dx_kernel<T, false><<<row_blocks(p.rows), kThreads, 0, stream>>>(p);
    }
    check_launch();
    if (p.dweight || p.dbias) {
      const ParameterGradientTerms<T> terms{static_cast<const T*>(p.x),
                                            static_cast<const T*>(p.dout),
                                            static_cast<const C*>(p.mean),
                                            static_cast<const C*>(p.rstd),
                                            p.x_row_stride,
                                            p.dout_row_stride};
      accumulate_column_sums<C, 2>(p.rows, p.columns, terms,
                                   ColumnTargets<C, 2>{{static_cast<C*>(p.dweight), static_cast<C*>(p.dbias)}}, stream);
    }
  });
  check_launch();
}

}  // namespace longnet::kernels
