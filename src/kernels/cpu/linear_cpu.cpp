// nn.Linear on the CPU (linear.hpp) through OpenBLAS: y = x W^T + b, dx = dy W (or +=),
// dW += dy^T x, and db += column sums of dy over fixed chunks of rows added in order.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/column_sums.hpp"
#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/linear.hpp"

namespace longnet::kernels {
namespace {

// Row-major C (m x n) = alpha op(A) op(B) + beta C.
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  cblas_dgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

template <class T>
void forward(const LinearParams& p) {
  if (p.rows == 0 || p.out_features == 0) return;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const T* residual = static_cast<const T*>(p.residual);
  // y starts as bias [+ residual] (or 0), then the GEMM adds x W^T.
  const bool start = bias || residual;
  if (start) {
    parallel_for(p.rows, cpu::grain_for(p.out_features), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) {
        T* yr = y + r * p.y_row_stride;
        const T* rr = residual ? residual + r * p.residual_row_stride : nullptr;
        for (std::int64_t c = 0; c < p.out_features; ++c) yr[c] = (bias ? bias[c] : T(0)) + (rr ? rr[c] : T(0));
      }
    });
  }
  if (p.in_features == 0) {
    if (!start) {
      for (std::int64_t r = 0; r < p.rows; ++r) std::fill_n(y + r * p.y_row_stride, p.out_features, T(0));
    }
    return;
  }
  gemm(false, true, p.rows, p.out_features, p.in_features, x, p.x_row_stride, w, p.in_features, start ? T(1) : T(0), y,
       p.y_row_stride);
}

template <class T>
void backward(const LinearParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  const T* dy = static_cast<const T*>(p.dy);
  if (p.dx && p.rows > 0 && p.in_features > 0) {
    T* dx = static_cast<T*>(p.dx);
    if (p.out_features == 0) {
      if (!p.dx_accumulate) {
        for (std::int64_t r = 0; r < p.rows; ++r) std::fill_n(dx + r * p.dx_row_stride, p.in_features, T(0));
      }
    } else {
      gemm(false, false, p.rows, p.in_features, p.out_features, dy, p.dy_row_stride, w, p.in_features,
           p.dx_accumulate ? T(1) : T(0), dx, p.dx_row_stride);
    }
  }
  if (p.dweight && p.in_features > 0 && p.out_features > 0) {
    T* dweight = static_cast<T*>(p.dweight);
    if (p.rows > 0) {
      gemm(true, false, p.out_features, p.in_features, p.rows, dy, p.dy_row_stride, x, p.x_row_stride,
           p.dweight_store ? T(0) : T(1), dweight, p.in_features);
    } else if (p.dweight_store) {
      std::fill_n(dweight, p.out_features * p.in_features, T(0));
    }
  }
  if (p.dbias) cpu::add_column_sums(dy, p.rows, p.out_features, p.dy_row_stride, static_cast<T*>(p.dbias));
}

}  // namespace

void linear_forward_cpu(const LinearParams& p) {
  cpu::dispatch_float(p.dtype, "linear_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void linear_backward_cpu(const LinearParams& p) {
  validate_ones_column(p);  // (the CPU sums dy's columns itself: the ones are not read)
  cpu::dispatch_float(p.dtype, "linear_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
