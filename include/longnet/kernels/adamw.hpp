// One AdamW step (Loshchilov & Hutter; PyTorch's torch.optim.AdamW), elementwise over a
// parameter, with the gradient multiplied by grad_scale first (gradient clipping and
// accumulation fold into it):
//   g  = grad_scale * grad
//   p -= lr * weight_decay * p                       (decoupled weight decay)
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// param, grad, m, v: `count` contiguous elements of one dtype (f32 master weights, or f64
// in tests). t = step >= 1. The gradient is read, not changed.
// Clipping by a global norm that the update reads where it runs: with clip_sum_of_squares
// set (a double in the parameters' memory, e.g. written by sum_of_squares_many_into_*),
// grad_scale is first multiplied by clip_factor(sqrt(*clip_sum_of_squares), clip_max_norm),
// computed there in double, so the host queues the update without waiting for the norm;
// where that sum is not finite the update changes nothing (a diverged step is not taken).
// Mixed precision: when param_copy is set (CUDA only), the kernel also writes the updated
// parameter rounded to copy_dtype (bf16) there — the compute copy the next step's GEMMs
// read — in the same pass, so refreshing the copies costs no extra read of the weights.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/host_device.hpp"

namespace longnet::kernels {

// The factor that brings a gradient norm down to max_norm: 1 when the norm is at most
// max_norm (or not a number) and when max_norm <= 0 (no clipping). Host and device share it,
// so a factor computed on the device has the host's bits.
LONGNET_HOST_DEVICE inline double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.0;
  return max_norm / (norm + 1e-6);
}

// grad_scale times the clip factor of a global norm given as its sum of squares (what
// AdamWParams::clip_sum_of_squares holds), in double: the CPU and CUDA updates both use it.
LONGNET_HOST_DEVICE inline double clipped_grad_scale(double grad_scale, double sum_of_squares, double max_norm) {
#if defined(__CUDA_ARCH__)
  return grad_scale * clip_factor(sqrt(sum_of_squares), max_norm);
#else
  return grad_scale * clip_factor(std::sqrt(sum_of_squares), max_norm);
#endif
}

struct AdamWParams {
  std::int64_t count = 0;
  DType dtype = DType::f32;
  void* param = nullptr;
  const void* grad = nullptr;
  void* m = nullptr;
  void* v = nullptr;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_scale = 1.0;
  const double* clip_sum_of_squares = nullptr;  // optional, see above
  double clip_max_norm = 0;
  std::int64_t step = 1;
  void* param_copy = nullptr;  // optional (CUDA): param rounded to copy_dtype, written
  DType copy_dtype = DType::bf16;
};

void adamw_step_cpu(const AdamWParams& p);
void adamw_step_cuda(const AdamWParams& p);
// The steps of many parameters in a few launches, each parameter's elements with exactly the
// arithmetic of adamw_step_cuda (which is this with one parameter): a model's ~250
// parameters, most of them vectors of a few hundred elements, took a launch each, and the
// host's launches outlasted the device's work. Parameters with different dtypes, copies or
// hyperparameters may be mixed; every parameter is checked before any is changed.
void adamw_step_many_cuda(const AdamWParams* params, std::size_t count);

}  // namespace longnet::kernels
