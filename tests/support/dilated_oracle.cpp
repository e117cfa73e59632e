// fp64 oracle of dilated attention (see the header). Key sets come from the definitions
// of DESIGN 2.1/2.2: seg(p) = floor(p / w), t(p) = p mod w, key k in K_i,h(p) iff it shares
// p's segment, t(k) mod r == o and t(p) mod r == o (and k <= p when causal). Only the
// offset formulas are taken from the shared header (they are unit-tested on their own).
#include "support/dilated_oracle.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace longnet::testing {

using kernels::DilatedMode;

Tensor output_deltas(const Tensor& out, const Tensor& dout, DType dtype, Device device) {
  const std::int64_t B = out.size(0), N = out.size(1), H = out.size(2), D = out.size(3);
  const std::vector<double> o = out.to(Device::cpu(), DType::f64).contiguous().to_vector<double>();
  const std::vector<double> g = dout.to(Device::cpu(), DType::f64).contiguous().to_vector<double>();
  std::vector<double> deltas(static_cast<std::size_t>(B * H * N), 0.0);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t h = 0; h < H; ++h) {
        double sum = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          const auto i = static_cast<std::size_t>(((b * N + n) * H + h) * D + d);
          sum += o[i] * g[i];
        }
        deltas[static_cast<std::size_t>((b * H + h) * N + n)] = sum;
      }
    }
  }
  return Tensor::from_vector(deltas, {B, H, N}).to(device, dtype);
}

std::vector<double> gradient_column_sums(const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  std::vector<double> sums;
  for (const Tensor* gradient : {&dq, &dk, &dv}) {
    const std::vector<double> values = gradient->to(DType::f64).to(Device::cpu()).contiguous().to_vector<double>();
    const std::size_t columns = static_cast<std::size_t>(gradient->size(2) * gradient->size(3)), first = sums.size();
    sums.resize(first + columns, 0.0);
    for (std::size_t i = 0; i < values.size(); ++i) sums[first + i % columns] += values[i];
  }
  return sums;
}

double dilated_output_scale(const DilatedProblem& problem) {
  return problem.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(problem.patterns.size()) : 1.0;
}

std::vector<int> dilated_count_matrix(const DilatedProblem& problem, std::int64_t head) {
  const std::int64_t N = problem.seq_len;
  const auto G = static_cast<std::int64_t>(problem.patterns.size());
  std::vector<int> count(static_cast<std::size_t>(N * N), 0);
  for (std::int64_t i = 0; i < G; ++i) {
    const std::int64_t w = problem.patterns[static_cast<std::size_t>(i)].segment_length;
    const std::int64_t r = problem.patterns[static_cast<std::size_t>(i)].dilation_rate;
    std::int64_t offset = 0;
    if (problem.mode == DilatedMode::longnet) {
      offset = kernels::longnet_offset(head, problem.heads, r);
    } else {
      if (kernels::head_group_of(head, problem.heads, G) != i) continue;
      offset = i % r;
    }
    for (std::int64_t p = 0; p < N; ++p) {
      if ((p % w) % r != offset) continue;  // p is not active
      for (std::int64_t k = 0; k < N; ++k) {
        const bool same_segment = k / w == p / w;
        const bool same_residue = (k % w) % r == offset;
        const bool allowed = !problem.causal || k <= p;
        if (same_segment && same_residue && allowed) ++count[static_cast<std::size_t>(p * N + k)];
      }
    }
  }
  return count;
}

namespace {

template <class R>
struct Dense {
  std::vector<R> values;
  Shape shape;
  R at(std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d) const {
    return values[static_cast<std::size_t>(((b * shape[1] + n) * shape[2] + h) * shape[3] + d)];
  }
};

template <class R>
Dense<R> dense(const Tensor& t) {
  const auto values = t.to_vector<double>();
  return {std::vector<R>(values.begin(), values.end()), t.shape()};
}

template <class R>
R dot_qk(const Dense<R>& q, const Dense<R>& k, std::int64_t b, std::int64_t p, std::int64_t h, std::int64_t key,
         std::int64_t kv_head) {
  R s = 0;
  for (std::int64_t d = 0; d < q.shape[3]; ++d) s += q.at(b, p, h, d) * k.at(b, key, kv_head, d);
  return s;
}

// Softmax weights P[p][k] = C exp(s - lse) of one (batch, head), and lse.
// Where a naive half-precision implementation rounds: the probabilities P, dS, and every
// output. DType::f32/f64 mean "no extra rounding".
double round_to(double x, DType precision) {
  switch (precision) {
    case DType::bf16:
      return static_cast<double>(BFloat16(x));
    case DType::f16:
      return static_cast<double>(Float16(x));
    default:
      return x;
  }
}

template <class R>
void weights(const DilatedProblem& pr, const Dense<R>& q, const Dense<R>& k, std::int64_t b, std::int64_t h,
             const std::vector<int>& count, std::vector<R>& P, std::vector<R>& lse, DType precision = DType::f64) {
  const std::int64_t N = pr.seq_len;
  const std::int64_t kv_head = h / (pr.heads / pr.kv_heads);
  P.assign(static_cast<std::size_t>(N * N), R(0));
  lse.assign(static_cast<std::size_t>(N), -std::numeric_limits<R>::infinity());
  std::vector<R> s(static_cast<std::size_t>(N));
  const R scale = static_cast<R>(pr.scale);
  for (std::int64_t p = 0; p < N; ++p) {
    R max_score = -std::numeric_limits<R>::infinity();
    for (std::int64_t key = 0; key < N; ++key) {
      if (count[static_cast<std::size_t>(p * N + key)] == 0) continue;
      s[static_cast<std::size_t>(key)] = scale * dot_qk(q, k, b, p, h, key, kv_head);
      max_score = std::max(max_score, s[static_cast<std::size_t>(key)]);
    }
    if (max_score == -std::numeric_limits<R>::infinity()) continue;  // no keys
    R sum = 0;
    for (std::int64_t key = 0; key < N; ++key) {
      const int c = count[static_cast<std::size_t>(p * N + key)];
      if (c) sum += static_cast<R>(c) * std::exp(s[static_cast<std::size_t>(key)] - max_score);
    }
    const R row_lse = max_score + std::log(sum);
    lse[static_cast<std::size_t>(p)] = row_lse;
    for (std::int64_t key = 0; key < N; ++key) {
      const int c = count[static_cast<std::size_t>(p * N + key)];
      if (c) {
        const R weight = static_cast<R>(c) * std::exp(s[static_cast<std::size_t>(key)] - row_lse);
        P[static_cast<std::size_t>(p * N + key)] = static_cast<R>(round_to(static_cast<double>(weight), precision));
      }
    }
  }
}

template <class R>
OracleOutput forward_in(const DilatedProblem& pr, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                        DType precision = DType::f64) {
  const Dense<R> q = dense<R>(q_in), k = dense<R>(k_in), v = dense<R>(v_in);
  const std::int64_t B = pr.batch, N = pr.seq_len, H = pr.heads, D = pr.head_dim;
  const R alpha = static_cast<R>(dilated_output_scale(pr));
  OracleOutput result{Tensor::zeros({B, N, H, D}, dtype_of<R>::value), Tensor::zeros({B, H, N}, dtype_of<R>::value)};
  R* out = result.out.data<R>();
  R* lse_out = result.lse.data<R>();
  std::vector<R> P, lse;
  for (std::int64_t h = 0; h < H; ++h) {
    const std::vector<int> count = dilated_count_matrix(pr, h);
    const std::int64_t kv_head = h / (H / pr.kv_heads);
    for (std::int64_t b = 0; b < B; ++b) {
      weights(pr, q, k, b, h, count, P, lse, precision);
      for (std::int64_t p = 0; p < N; ++p) {
        lse_out[(b * H + h) * N + p] = lse[static_cast<std::size_t>(p)];
        for (std::int64_t key = 0; key < N; ++key) {
          const R weight = P[static_cast<std::size_t>(p * N + key)];
          if (weight == 0) continue;
          for (std::int64_t d = 0; d < D; ++d)
            out[((b * N + p) * H + h) * D + d] += alpha * weight * v.at(b, key, kv_head, d);
        }
      }
    }
  }
  if (precision == DType::bf16 || precision == DType::f16) result.out = result.out.to(precision).to(dtype_of<R>::value);
  return result;
}

template <class R>
OracleGradients backward_in(const DilatedProblem& pr, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                            const Tensor& dout_in, DType precision = DType::f64) {
  const Dense<R> q = dense<R>(q_in), k = dense<R>(k_in), v = dense<R>(v_in), dout = dense<R>(dout_in);
  const std::int64_t B = pr.batch, N = pr.seq_len, H = pr.heads, Hk = pr.kv_heads, D = pr.head_dim;
  const R alpha = static_cast<R>(dilated_output_scale(pr));
  const R scale = static_cast<R>(pr.scale);
  constexpr DType dt = dtype_of<R>::value;
  OracleGradients g{Tensor::zeros({B, N, H, D}, dt), Tensor::zeros({B, N, Hk, D}, dt),
                    Tensor::zeros({B, N, Hk, D}, dt)};
  R* dq = g.dq.data<R>();
  R* dk = g.dk.data<R>();
  R* dv = g.dv.data<R>();
  std::vector<R> P, lse;
  for (std::int64_t h = 0; h < H; ++h) {
    const std::vector<int> count = dilated_count_matrix(pr, h);
    const std::int64_t kv_head = h / (H / Hk);
    for (std::int64_t b = 0; b < B; ++b) {
      weights(pr, q, k, b, h, count, P, lse, precision);
      for (std::int64_t p = 0; p < N; ++p) {
        // out_p = alpha * sum_k P_pk v_k with sum_k P_pk = 1, so
        // d out_p / d s_pk = alpha * P_pk (v_k - sum_j P_pj v_j).
        std::vector<R> softmax_out(static_cast<std::size_t>(D), R(0));
        for (std::int64_t key = 0; key < N; ++key) {
          const R weight = P[static_cast<std::size_t>(p * N + key)];
          for (std::int64_t d = 0; d < D && weight != 0; ++d)
            softmax_out[static_cast<std::size_t>(d)] += weight * v.at(b, key, kv_head, d);
        }
        // The half-precision computation follows DESIGN 2.3 literally: D_p = sum(dO_p * O_p)
        // with the stored (rounded) output O_p = round(alpha * softmax_out).
        R delta = 0;
        const bool rounded = precision == DType::bf16 || precision == DType::f16;
        if (rounded) {
          for (std::int64_t d = 0; d < D; ++d) {
            const R stored = static_cast<R>(
                round_to(static_cast<double>(alpha * softmax_out[static_cast<std::size_t>(d)]), precision));
            delta += dout.at(b, p, h, d) * stored;
          }
        }
        for (std::int64_t key = 0; key < N; ++key) {
          const R weight = P[static_cast<std::size_t>(p * N + key)];
          if (weight == 0) continue;
          R dscore = 0;  // d loss / d s_pk
          for (std::int64_t d = 0; d < D; ++d) {
            const R g_out = alpha * dout.at(b, p, h, d);
            dv[((b * N + key) * Hk + kv_head) * D + d] += weight * g_out;
            dscore += rounded ? g_out * v.at(b, key, kv_head, d)
                              : g_out * (v.at(b, key, kv_head, d) - softmax_out[static_cast<std::size_t>(d)]);
          }
          if (rounded) dscore -= delta;
          dscore = static_cast<R>(round_to(static_cast<double>(dscore * weight), precision));
          for (std::int64_t d = 0; d < D; ++d) {
            dq[((b * N + p) * H + h) * D + d] += scale * dscore * k.at(b, key, kv_head, d);
            dk[((b * N + key) * Hk + kv_head) * D + d] += scale * dscore * q.at(b, p, h, d);
          }
        }
      }
    }
  }
  if (precision == DType::bf16 || precision == DType::f16) {
    g.dq = g.dq.to(precision).to(dtype_of<R>::value);
    g.dk = g.dk.to(precision).to(dtype_of<R>::value);
    g.dv = g.dv.to(precision).to(dtype_of<R>::value);
  }
  return g;
}

}  // namespace

OracleOutput dilated_oracle_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k, const Tensor& v) {
  return forward_in<double>(problem, q, k, v);
}
OracleGradients dilated_oracle_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& dout) {
  return backward_in<double>(problem, q, k, v, dout);
}
OracleOutput dilated_naive_float_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                         const Tensor& v) {
  return forward_in<float>(problem, q, k, v);
}
OracleGradients dilated_naive_float_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& dout) {
  return backward_in<float>(problem, q, k, v, dout);
}

OracleOutput dilated_naive_half_forward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                        const Tensor& v, DType precision) {
  return forward_in<float>(problem, q, k, v, precision);
}
OracleGradients dilated_naive_half_backward(const DilatedProblem& problem, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& dout, DType precision) {
  return backward_in<float>(problem, q, k, v, dout, precision);
}

double relative_l2_error(const Tensor& actual_in, const Tensor& expected_in, double floor_rms) {
  const auto actual = actual_in.to_vector<double>();
  const auto expected = expected_in.to_vector<double>();
  if (actual.size() != expected.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const bool a_inf = std::isinf(actual[i]), e_inf = std::isinf(expected[i]);
    if (a_inf || e_inf) {
      if (actual[i] != expected[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (std::isnan(actual[i]) || std::isnan(expected[i])) return std::numeric_limits<double>::infinity();
    diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  const double floor = floor_rms * floor_rms * static_cast<double>(actual.size());
  if (diff == 0) return 0;
  return std::sqrt(diff / std::max(norm, floor));
}

double max_abs_error(const Tensor& actual, const Tensor& expected) {
  const auto a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(e[i]) && a[i] == e[i]) continue;
    worst = std::max(worst, std::isnan(a[i]) ? INFINITY : std::fabs(a[i] - e[i]));
  }
  return worst;
}

double rounding_tolerance(const Tensor& expected, DType dtype) {
  auto round = [dtype](double x) {
    return dtype == DType::bf16 ? static_cast<double>(BFloat16(x)) : static_cast<double>(Float16(x));
  };
  double worst = 0;
  for (double x : expected.to_vector<double>()) {
    if (std::isfinite(x)) worst = std::max(worst, std::fabs(round(round(x + 0.3) - 0.3) - x));
  }
  return std::max(2 * worst, 1e-3);
}

Tensor rotary_transpose(const Tensor& g, const kernels::RotaryParams& map) {
  const Tensor in = g.contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
  kernels::RotaryParams r = map;
  r.batch = in.size(0), r.seq_len = in.size(1), r.heads = in.size(2), r.head_dim = in.size(3);
  r.dtype = in.dtype(), r.transpose = true;
  r.x = {in.data(), in.stride(0), in.stride(1), in.stride(2)};
  r.out = {out.data(), out.stride(0), out.stride(1), out.stride(2)};
  if (in.device().is_cuda()) {
    kernels::rotary_apply_cuda(r);
  } else {
    kernels::rotary_apply_cpu(r);
  }
  return out;
}

}  // namespace longnet::testing
