// LayerNorm on the CPU (layer_norm.hpp): forward and backward per row in the input
// precision (statistics in double for f64, float otherwise; the row sums in double so a
// long row loses nothing, as four interleaved sums: row_sum). dweight, dbias and dx's
// column sums are summed over fixed chunks of rows and the chunks added in order, so the
// result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/float_dispatch.hpp"
#include "kernels/cpu/vector_normal.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/gelu.hpp"
#include "longnet/kernels/layer_norm.hpp"

namespace longnet::kernels {
namespace {

// The row a normalises: x itself, or gelu(x) (in double) for input = gelu; with
// `derivative`, for input = gelu, also gelu'(x) from the same erf (gelu_and_derivative).
// f32 rows take Phi and phi from the vectorised normal_terms (vector_normal.hpp, a few
// float ulps), where libm's scalar erf and exp in double were a sixth of a training step.
template <class T>
void normalised_row(const LayerNormParams& p, const T* xr, std::vector<double>& a,
                    std::vector<double>* derivative = nullptr) {
  a.resize(static_cast<std::size_t>(p.columns));
  const bool gelu = p.input == LayerNormInput::gelu;
  if (gelu && derivative) derivative->resize(static_cast<std::size_t>(p.columns));
  if constexpr (std::is_same_v<T, float>) {
    if (gelu) {
      thread_local std::vector<float> cdf, density;
      cdf.resize(static_cast<std::size_t>(p.columns));
      density.resize(static_cast<std::size_t>(p.columns));
      cpu::normal_terms(xr, p.columns, cdf.data(), density.data());
      for (std::int64_t c = 0; c < p.columns; ++c) {
        const double v = xr[c], phi_cdf = cdf[c];
        a[c] = v * phi_cdf;
        if (derivative) (*derivative)[c] = phi_cdf + v * static_cast<double>(density[c]);
      }
      return;
    }
  }
  for (std::int64_t c = 0; c < p.columns; ++c) {
    const double v = xr[c];
    if (gelu && derivative) {
      const GeluAndDerivative<double> both = gelu_and_derivative(v);
      a[static_cast<std::size_t>(c)] = both.value;
      (*derivative)[static_cast<std::size_t>(c)] = both.derivative;
    } else {
      a[static_cast<std::size_t>(c)] = gelu ? gelu_value(v) : v;
    }
  }
}

// sum_c term(c) over a row's columns in four running sums (c mod 4) added as
// (s0 + s1) + (s2 + s3): an order fixed by the row's length, and four independent chains of
// additions instead of one, which waited for each add's latency at every column.
template <class Term>
double row_sum(std::int64_t columns, Term&& term) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::int64_t c = 0;
  for (; c + 4 <= columns; c += 4) {
    s0 += term(c);
    s1 += term(c + 1);
    s2 += term(c + 2);
    s3 += term(c + 3);
  }
  if (c < columns) s0 += term(c++);
  if (c < columns) s1 += term(c++);
  if (c < columns) s2 += term(c);
  return (s0 + s1) + (s2 + s3);
}

template <class T>
void forward(const LayerNormParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  T* mean_out = static_cast<T*>(p.mean);
  T* rstd_out = static_cast<T*>(p.rstd);
  const std::int64_t C = p.columns;
  parallel_for(p.rows, cpu::grain_for(4 * C), [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> a;
    for (std::int64_t r = begin; r < end; ++r) {
      normalised_row(p, x + r * p.x_row_stride, a);
      const double mean = row_sum(C, [&](std::int64_t c) { return a[c]; }) / static_cast<double>(C);
      const double squares = row_sum(C, [&](std::int64_t c) {
        const double d = a[c] - mean;
        return d * d;
      });
      const double rstd = 1.0 / std::sqrt(squares / static_cast<double>(C) + p.eps);
      T* yr = out + r * p.out_row_stride;
      for (std::int64_t c = 0; c < C; ++c) {
        T y = static_cast<T>((a[c] - mean) * rstd);
        if (weight) y *= weight[c];
        if (bias) y += bias[c];
        yr[c] = y;
      }
      if (p.out_ones_column) {
        yr[C] = T(1);
        std::fill_n(yr + C + 1, kOnesColumns - 1, T(0));
      }
      mean_out[r] = static_cast<T>(mean);
      rstd_out[r] = static_cast<T>(rstd);
    }
  });
}

// With a the normalised row (x, or gelu(x)), xhat = (a - mean) rstd and g = dout * weight:
//   da = rstd * (g - mean(g) - xhat * mean(g * xhat)),
//   dx = da (or gelu'(x) da) [+ dresidual].
// One pass over each fixed chunk of rows, the rows in order: dx, and the chunk's column
// sums of dweight, dbias and dx as stored (those in the Linear bias gradient's order: the
// same bits as its pass would give); each element's erf is taken once (gelu_and_derivative).
template <class T>
void backward(const LayerNormParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  const T* dout = static_cast<const T*>(p.dout);
  const T* mean = static_cast<const T*>(p.mean);
  const T* rstd = static_cast<const T*>(p.rstd);
  T* dx = static_cast<T*>(p.dx);
  const std::int64_t C = p.columns;
  const T* dresidual = static_cast<const T*>(p.dresidual);
  const bool gelu = p.input == LayerNormInput::gelu;
  const bool parameters = p.dweight || p.dbias;
  const bool sums = parameters || p.dx_column_sums;
  const std::int64_t chunks = (p.rows + cpu::kReductionChunk - 1) / cpu::kReductionChunk;
  std::vector<double> partial(sums ? static_cast<std::size_t>(chunks * 3 * C) : 0, 0.0);
  parallel_for(chunks, cpu::grain_for(cpu::kReductionChunk * 4 * C), [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> a, derivative, xhat(static_cast<std::size_t>(C)), g(static_cast<std::size_t>(C));
    for (std::int64_t chunk = begin; chunk < end; ++chunk) {
      double* dw = sums ? partial.data() + chunk * 3 * C : nullptr;
      double* db = sums ? dw + C : nullptr;
      double* dx_sum = sums ? db + C : nullptr;
      const std::int64_t row_end = std::min(p.rows, (chunk + 1) * cpu::kReductionChunk);
      for (std::int64_t r = chunk * cpu::kReductionChunk; r < row_end; ++r) {
        normalised_row(p, x + r * p.x_row_stride, a, &derivative);
        const T* gr = dout + r * p.dout_row_stride;
        for (std::int64_t c = 0; c < C; ++c) {
          g[c] = weight ? gr[c] * weight[c] : gr[c];
          xhat[c] = (a[c] - mean[r]) * rstd[r];
        }
        const double g_mean = row_sum(C, [&](std::int64_t c) { return g[c]; }) / static_cast<double>(C);
        const double gx_mean = row_sum(C, [&](std::int64_t c) { return g[c] * xhat[c]; }) / static_cast<double>(C);
        T* dxr = dx + r * p.dx_row_stride;
        const T* dresidual_row = dresidual ? dresidual + r * p.dresidual_row_stride : nullptr;
        for (std::int64_t c = 0; c < C; ++c) {
          double d = rstd[r] * (g[c] - g_mean - xhat[c] * gx_mean);
          if (gelu) d *= derivative[c];
          if (dresidual_row) d += dresidual_row[c];
          dxr[c] = static_cast<T>(d);
        }
        if (parameters) {
          for (std::int64_t c = 0; c < C; ++c) {
            dw[c] += static_cast<double>(gr[c]) * xhat[c];
            db[c] += gr[c];
          }
        }
        if (p.dx_column_sums) {
          for (std::int64_t c = 0; c < C; ++c) dx_sum[c] += dxr[c];
        }
        if (p.segment_dots) {  // (B, S, N) order
          const std::int64_t S = C / p.segment_columns, rows = p.segment_rows_per_batch;
          T* dots = static_cast<T*>(p.segment_dots) + (r / rows) * S * rows + r % rows;
          const T* xr = x + r * p.x_row_stride;
          for (std::int64_t s = 0; s < S; ++s) {
            double dot = 0;
            for (std::int64_t c = s * p.segment_columns; c < (s + 1) * p.segment_columns; ++c) {
              dot += static_cast<double>(dxr[c]) * xr[c];
            }
            dots[s * rows] = static_cast<T>(dot);
          }
        }
      }
    }
  });
  if (!sums) return;
  T* targets[3] = {static_cast<T*>(p.dweight), static_cast<T*>(p.dbias), static_cast<T*>(p.dx_column_sums)};
  for (int k = 0; k < 3; ++k) {
    if (!targets[k]) continue;
    for (std::int64_t c = 0; c < C; ++c) {
      double total = 0;
      for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
        total += partial[static_cast<std::size_t>((chunk * 3 + k) * C + c)];
      }
      targets[k][c] += static_cast<T>(total);
    }
  }
}

}  // namespace

void layer_norm_forward_cpu(const LayerNormParams& p) {
  validate_ones_column(p);
  cpu::dispatch_float(p.dtype, "layer_norm_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void layer_norm_backward_cpu(const LayerNormParams& p) {
  validate_segment_dots(p);
  cpu::dispatch_float(p.dtype, "layer_norm_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
