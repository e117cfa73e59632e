// RoPE and xPos on CUDA (rotary.hpp): one thread per (batch, position, group of pairs),
// which computes the rotations of its pairs once and applies them to those pairs of every
// head (loads of kHeadsAhead heads in flight), in Compute<T> (f32 for bf16 and f32
// tensors). A group is one 16-byte pack (4 pairs of bf16, 2 of f32, 1 of f64) when the
// strides allow, else 1 pair.
// The factors: f32 and f64 tensors take them in double (an fp32 angle pos * theta loses
// digits at long positions). bf16 tensors, whose rounding (2^-9) is far coarser, keep the
// angle in double only up to its reduction to [-pi, pi] and take sine, cosine and the
// xPos power in fast f32 (errors ~1e-6): the double pow/pow/sincos of every pair made the
// kernel 1.5x its memory time (0.043 ms a 32768 x 12 x 64 call on an H200).
// Bytes: x read and out written once; at 3 TB/s 34 us for 32768 x 12 heads x 64 bf16.
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr int kHeadsAhead = 4;  // heads loaded before any is rotated: loads in flight

// f * cos(angle) and +-f * sin(angle) of pair j at position index n, in double.
template <class C>
__device__ void exact_rotation(const RotaryParams& p, std::int64_t j, std::int64_t n, C& cs, C& sn) {
  const double pos = static_cast<double>(p.position_start + n);
  const double D = static_cast<double>(p.head_dim);
  const double theta = pow(p.base, -2.0 * static_cast<double>(j) / D);
  double f = 1.0;
  if (p.kind == RotaryKind::xpos) {
    const double zeta = (2.0 * static_cast<double>(j) + 0.4 * D) / (1.4 * D);
    f = pow(zeta, (pos - p.center) / p.scale_base);
    if (p.downscale) f = 1.0 / f;
  }
  double s, c;
  sincos(pos * theta, &s, &c);
  cs = static_cast<C>(f * c);
  sn = static_cast<C>((p.transpose ? -f : f) * s);
}

// The same for Q consecutive pairs j0, j0 + 1, ... of bf16 rows: theta_j = base^(-2j / D)
// in double (theta_{j+1} = theta_j * base^(-2 / D)), the angle reduced by whole turns in
// double, then __sincosf on [-pi, pi] (absolute error 2^-21.4) and exp2f of
// log2(zeta_j) (pos - center) / scale_base in f32.
template <int Q>
__device__ void fast_rotations(const RotaryParams& p, std::int64_t j0, std::int64_t n, float* cs, float* sn) {
  constexpr double kTwoPi = 6.283185307179586476925;
  const double pos = static_cast<double>(p.position_start + n);
  const double D = static_cast<double>(p.head_dim);
  const double log2_base = log2(p.base);
  const double step = exp2(-2.0 / D * log2_base);
  double theta = exp2(-2.0 * static_cast<double>(j0) / D * log2_base);
  const float distance = static_cast<float>((pos - p.center) / p.scale_base);
#pragma unroll
  for (int q = 0; q < Q; ++q, theta *= step) {
    const double angle = pos * theta;
    const float r = static_cast<float>(fma(-rint(angle * (1.0 / kTwoPi)), kTwoPi, angle));
    float s, c;
    __sincosf(r, &s, &c);
    float f = 1.0f;
    if (p.kind == RotaryKind::xpos) {
      const float j = static_cast<float>(j0 + q), d = static_cast<float>(p.head_dim);
      const float exponent = log2f((2.0f * j + 0.4f * d) / (1.4f * d)) * distance;
      f = exp2f(p.downscale ? -exponent : exponent);
    }
    cs[q] = f * c;
    sn[q] = (p.transpose ? -f : f) * s;
  }
}

template <class T, bool kVector>
__global__ void rotary_kernel(RotaryParams p) {
  using C = Compute<T>;
  constexpr int P = kVector ? kPack<T> : 2;  // elements per group
  constexpr int Q = P / 2;                   // pairs per group
  const std::int64_t groups = p.head_dim / P;
  LONGNET_GRID_STRIDE(i, p.batch * p.seq_len * groups) {
    const std::int64_t g = i % groups, n = (i / groups) % p.seq_len, b = i / (groups * p.seq_len);
    C cs[Q], sn[Q];
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      fast_rotations<Q>(p, g * Q, n, cs, sn);
    } else {
      for (int q = 0; q < Q; ++q) exact_rotation(p, g * Q + q, n, cs[q], sn[q]);
    }
    const T* x = static_cast<const T*>(p.x.data) + b * p.x.batch_stride + n * p.x.seq_stride + g * P;
    T* out = static_cast<T*>(p.out.data) + b * p.out.batch_stride + n * p.out.seq_stride + g * P;
    // In place (out = x) each head's elements are read before they are written.
    for (std::int64_t h0 = 0; h0 < p.heads; h0 += kHeadsAhead) {
      C v[kHeadsAhead][P];
#pragma unroll
      for (int u = 0; u < kHeadsAhead; ++u) {
        if (h0 + u >= p.heads) break;
        const T* row = x + (h0 + u) * p.x.head_stride;
        if constexpr (kVector) {
          const Pack<T> pack = load_pack(row, 0);
          for (int e = 0; e < P; ++e) v[u][e] = to_compute(pack.v[e]);
        } else {
          for (int e = 0; e < P; ++e) v[u][e] = to_compute(row[e]);
        }
      }
#pragma unroll
      for (int u = 0; u < kHeadsAhead; ++u) {
        if (h0 + u >= p.heads) break;
        Pack<T> result;  // P <= kPack<T> elements used
        for (int q = 0; q < Q; ++q) {
          result.v[2 * q] = from_compute<T>(v[u][2 * q] * cs[q] - v[u][2 * q + 1] * sn[q]);
          result.v[2 * q + 1] = from_compute<T>(v[u][2 * q + 1] * cs[q] + v[u][2 * q] * sn[q]);
        }
        T* row = out + (h0 + u) * p.out.head_stride;
        if constexpr (kVector) {
          store_pack(row, 0, result);
        } else {
          for (int e = 0; e < P; ++e) row[e] = result.v[e];
        }
      }
    }
  }
}

// Whole packs: every row of head_dim elements starts 16-byte aligned.
template <class T>
bool packed(const RotaryParams& p) {
  const std::int64_t P = kPack<T>;
  const auto whole = [&](const RowTensor& t) {
    return t.batch_stride % P == 0 && t.seq_stride % P == 0 && t.head_stride % P == 0 && aligned16(t.data);
  };
  return p.head_dim % P == 0 && whole(p.x) && whole(p.out);
}

}  // namespace

void rotary_apply_cuda(const RotaryParams& p) {
  const std::int64_t count = p.batch * p.seq_len * (p.head_dim / 2);
  if (count == 0 || p.heads == 0) return;
  dispatch_activation(p.dtype, "rotary_apply", [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    if (packed<T>(p)) {
      rotary_kernel<T, true><<<grid_for(count / (kPack<T> / 2)), kThreads, 0, stream>>>(p);
    } else {
      rotary_kernel<T, false><<<grid_for(count), kThreads, 0, stream>>>(p);
    }
  });
  check_launch();
}

}  // namespace longnet::kernels
