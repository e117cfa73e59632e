// RoPE and xPos on the CPU (rotary.hpp). The cosines, sines and xPos factors of the call's
// positions are computed once, in double (an fp32 angle pos * theta loses digits at long
// positions), and then applied to every (batch, head) row.
#include <cmath>
#include <vector>

#include "kernels/cpu/float_dispatch.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {

double xpos_factor(std::int64_t pair, std::int64_t head_dim, double distance, double scale_base) {
  return std::pow(xpos_zeta(pair, head_dim), distance / scale_base);
}

void rotary_apply_cpu(const RotaryParams& p) {
  const std::int64_t pairs = p.head_dim / 2;
  // table[(n * pairs + j) * 2 + {0, 1}] = f * cos, f * sin of position n, pair j.
  std::vector<double> table(static_cast<std::size_t>(p.seq_len * pairs * 2));
  parallel_for(p.seq_len, cpu::grain_for(32 * pairs), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t n = begin; n < end; ++n) {
      const double pos = static_cast<double>(p.position_start + n);
      for (std::int64_t j = 0; j < pairs; ++j) {
        const double theta = rotary_theta(p.base, j, p.head_dim);
        double f = 1.0;
        if (p.kind == RotaryKind::xpos) {
          f = xpos_factor(j, p.head_dim, pos - p.center, p.scale_base);
          if (p.downscale) f = 1.0 / f;
        }
        table[static_cast<std::size_t>((n * pairs + j) * 2)] = f * std::cos(pos * theta);
        table[static_cast<std::size_t>((n * pairs + j) * 2 + 1)] = f * std::sin(pos * theta);
      }
    }
  });
  const double sign = p.transpose ? -1.0 : 1.0;  // M^T rotates by -angle with the same factor
  cpu::dispatch_float(p.dtype, "rotary_apply", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(
        p.batch * p.seq_len, cpu::grain_for(2 * p.heads * p.head_dim), [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t bn = begin; bn < end; ++bn) {
            const std::int64_t b = bn / p.seq_len, n = bn % p.seq_len;
            const double* row_table = table.data() + n * pairs * 2;
            for (std::int64_t h = 0; h < p.heads; ++h) {
              const T* x =
                  static_cast<const T*>(p.x.data) + b * p.x.batch_stride + n * p.x.seq_stride + h * p.x.head_stride;
              T* out =
                  static_cast<T*>(p.out.data) + b * p.out.batch_stride + n * p.out.seq_stride + h * p.out.head_stride;
              for (std::int64_t j = 0; j < pairs; ++j) {
                const T c = static_cast<T>(row_table[2 * j]), s = static_cast<T>(sign * row_table[2 * j + 1]);
                const T x0 = x[2 * j], x1 = x[2 * j + 1];
                out[2 * j] = x0 * c - x1 * s;
                out[2 * j + 1] = x1 * c + x0 * s;
              }
            }
          }
        });
  });
}

void check_query_key_maps(const RotaryParams& query, const RotaryParams& key) {
  const auto same = [](const char* field, auto q, auto k) {
    require(q == k, "rotary_apply_query_key: key.", field, " = ", k, " differs from query.", field, " = ", q,
            ": a query and key pair shares every field but the rows, the heads and downscale");
  };
  same("batch", query.batch, key.batch);
  same("seq_len", query.seq_len, key.seq_len);
  same("head_dim", query.head_dim, key.head_dim);
  same("dtype", dtype_name(query.dtype), dtype_name(key.dtype));
  same("kind", static_cast<int>(query.kind), static_cast<int>(key.kind));
  same("base", query.base, key.base);
  same("scale_base", query.scale_base, key.scale_base);
  same("position_start", query.position_start, key.position_start);
  same("center", query.center, key.center);
  same("transpose", query.transpose, key.transpose);
  require(!query.downscale && key.downscale, "rotary_apply_query_key: query.downscale = ", query.downscale,
          " and key.downscale = ", key.downscale, ": the query map must not be downscaled and the key map must");
}

void rotary_apply_query_key_cpu(const RotaryParams& query, const RotaryParams& key) {
  check_query_key_maps(query, key);
  rotary_apply_cpu(query);
  rotary_apply_cpu(key);
}

RotaryParams transposed_rotary_in_place(const RotaryParams& map, const DilatedAttentionParams& attention,
                                        const RowTensor& rows, std::int64_t heads) {
  RotaryParams r = map;
  r.batch = attention.batch, r.seq_len = attention.seq_len, r.heads = heads, r.head_dim = attention.head_dim;
  r.dtype = attention.dtype, r.transpose = true, r.x = rows, r.out = rows;
  return r;
}

void rotate_attention_gradients_cpu(const DilatedAttentionParams& params) {
  if (params.dq_rotary) rotary_apply_cpu(transposed_rotary_in_place(*params.dq_rotary, params, params.dq, params.heads));
  if (params.dk_rotary) {
    rotary_apply_cpu(transposed_rotary_in_place(*params.dk_rotary, params, params.dk, params.kv_heads));
  }
}

}  // namespace longnet::kernels
