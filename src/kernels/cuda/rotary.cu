// RoPE and xPos on CUDA (rotary.hpp): one thread per (batch, position, pair), which
// computes the angle, its sine and cosine and the xPos factor once in double (an fp32
// angle pos * theta loses digits at long positions) and applies them to that pair of
// every head, in Compute<T> (f32 for bf16 and f32 tensors).
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
__global__ void rotary_kernel(RotaryParams p) {
  using C = Compute<T>;
  const std::int64_t pairs = p.head_dim / 2;
  LONGNET_GRID_STRIDE(i, p.batch * p.seq_len * pairs) {
    const std::int64_t j = i % pairs, n = (i / pairs) % p.seq_len, b = i / (pairs * p.seq_len);
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
    const C cs = static_cast<C>(f * c), sn = static_cast<C>((p.transpose ? -f : f) * s);
    const T* x = static_cast<const T*>(p.x.data) + b * p.x.batch_stride + n * p.x.seq_stride + 2 * j;
    T* out = static_cast<T*>(p.out.data) + b * p.out.batch_stride + n * p.out.seq_stride + 2 * j;
    for (std::int64_t h = 0; h < p.heads; ++h) {
      const C x0 = to_compute(x[h * p.x.head_stride]), x1 = to_compute(x[h * p.x.head_stride + 1]);
      out[h * p.out.head_stride] = from_compute<T>(x0 * cs - x1 * sn);
      out[h * p.out.head_stride + 1] = from_compute<T>(x1 * cs + x0 * sn);
    }
  }
}

}  // namespace

void rotary_apply_cuda(const RotaryParams& p) {
  const std::int64_t count = p.batch * p.seq_len * (p.head_dim / 2);
  if (count == 0 || p.heads == 0) return;
  dispatch_activation(p.dtype, "rotary_apply", [&](auto tag) {
    rotary_kernel<decltype(tag)><<<grid_for(count), kThreads, 0, current_cuda_stream()>>>(p);
  });
  check_launch();
}

}  // namespace longnet::kernels
