// fp64 oracle of block-sparse attention (see block_sparse_oracle.hpp).
#include "attention/block_sparse_oracle.hpp"

#include <cmath>
#include <limits>

#include "longnet/core/half.hpp"

namespace longnet::testing {

std::vector<bool> block_sparse_allowed(const BlockMask& mask, std::int64_t head) {
  const std::int64_t N = mask.seq_len(), Bq = mask.block_q(), Bk = mask.block_k();
  const std::int64_t h = mask.heads() == 1 ? 0 : head;
  const BlockMask::Lists lists = mask.lists();
  const BlockMask::Flags flags = mask.partial_flags();
  const ElementMask& element = mask.element_mask();
  std::vector<bool> allowed(static_cast<std::size_t>(N * N), false);
  for (std::int64_t i = 0; i < mask.query_blocks(); ++i) {
    const auto& keys = lists[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
    const auto& partial = flags[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
    for (std::size_t n = 0; n < keys.size(); ++n) {
      for (std::int64_t q = i * Bq; q < std::min((i + 1) * Bq, N); ++q) {
        for (std::int64_t k = keys[n] * Bk; k < std::min((keys[n] + 1) * Bk, N); ++k) {
          if (mask.grid().causal && k > q) continue;
          if (partial[n]) {
            const std::int64_t distance = q - k;
            if (distance < element.min_distance || distance > element.max_distance) continue;
            if (element.predicate && !element.predicate(head, q, k)) continue;
          }
          allowed[static_cast<std::size_t>(q * N + k)] = true;
        }
      }
    }
  }
  return allowed;
}

namespace {

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
BlockSparseReference reference_in(const BlockMask& mask, double scale_in, const Tensor& q_in, const Tensor& k_in,
                                  const Tensor& v_in, const Tensor& dout_in, DType precision) {
  const std::int64_t B = q_in.size(0), N = q_in.size(1), H = q_in.size(2), Hk = k_in.size(2), D = q_in.size(3);
  const auto to_r = [](const Tensor& t) {
    const auto values = t.to_vector<double>();
    return std::vector<R>(values.begin(), values.end());
  };
  const std::vector<R> q = to_r(q_in), k = to_r(k_in), v = to_r(v_in);
  const std::vector<R> dout = dout_in.defined() ? to_r(dout_in) : std::vector<R>{};
  auto at_q = [&](const std::vector<R>& x, std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d) {
    return x[static_cast<std::size_t>(((b * N + n) * H + h) * D + d)];
  };
  auto at_k = [&](const std::vector<R>& x, std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d) {
    return x[static_cast<std::size_t>(((b * N + n) * Hk + h) * D + d)];
  };
  const R scale = static_cast<R>(scale_in);
  const bool rounded = precision == DType::bf16 || precision == DType::f16;
  std::vector<R> out(static_cast<std::size_t>(B * N * H * D), R(0)), lse(static_cast<std::size_t>(B * H * N));
  std::vector<R> dq(q.size(), R(0)), dk(k.size(), R(0)), dv(v.size(), R(0));
  std::vector<R> s(static_cast<std::size_t>(N)), p(static_cast<std::size_t>(N)), o(static_cast<std::size_t>(D));
  for (std::int64_t h = 0; h < H; ++h) {
    const std::vector<bool> allowed = block_sparse_allowed(mask, h);
    const std::int64_t kv = h / (H / Hk);
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t row = 0; row < N; ++row) {
        // Softmax over the allowed keys of the row.
        R max_score = -std::numeric_limits<R>::infinity();
        for (std::int64_t key = 0; key < N; ++key) {
          if (!allowed[static_cast<std::size_t>(row * N + key)]) continue;
          R dot = 0;
          for (std::int64_t d = 0; d < D; ++d) dot += at_q(q, b, row, h, d) * at_k(k, b, key, kv, d);
          s[static_cast<std::size_t>(key)] = scale * dot;
          max_score = std::max(max_score, s[static_cast<std::size_t>(key)]);
        }
        R& row_lse = lse[static_cast<std::size_t>((b * H + h) * N + row)];
        if (max_score == -std::numeric_limits<R>::infinity()) {  // no keys: out 0, lse -inf, no gradient
          row_lse = max_score;
          continue;
        }
        R sum = 0;
        for (std::int64_t key = 0; key < N; ++key) {
          if (allowed[static_cast<std::size_t>(row * N + key)])
            sum += std::exp(s[static_cast<std::size_t>(key)] - max_score);
        }
        row_lse = max_score + std::log(sum);
        std::fill(o.begin(), o.end(), R(0));
        for (std::int64_t key = 0; key < N; ++key) {
          R& weight = p[static_cast<std::size_t>(key)];
          weight = allowed[static_cast<std::size_t>(row * N + key)]
                       ? static_cast<R>(round_to(
                             static_cast<double>(std::exp(s[static_cast<std::size_t>(key)] - row_lse)), precision))
                       : R(0);
          for (std::int64_t d = 0; d < D && weight != 0; ++d)
            o[static_cast<std::size_t>(d)] += weight * at_k(v, b, key, kv, d);
        }
        for (std::int64_t d = 0; d < D; ++d) {
          out[static_cast<std::size_t>(((b * N + row) * H + h) * D + d)] =
              static_cast<R>(round_to(static_cast<double>(o[static_cast<std::size_t>(d)]), precision));
        }
        if (dout.empty()) continue;
        // Backward (DESIGN 2.3): dS = P (dO.v - D_row), D_row = dO.O with the stored
        // (rounded) O in half precision, as an implementation in that precision has it.
        R delta = 0;
        for (std::int64_t d = 0; d < D && rounded; ++d) {
          delta += at_q(dout, b, row, h, d) * out[static_cast<std::size_t>(((b * N + row) * H + h) * D + d)];
        }
        for (std::int64_t key = 0; key < N; ++key) {
          const R weight = p[static_cast<std::size_t>(key)];
          if (weight == 0) continue;
          R dp = 0;  // dO . v - D_row (unrounded: dO . (v - O), which cancels less)
          for (std::int64_t d = 0; d < D; ++d) {
            const R g = at_q(dout, b, row, h, d);
            dv[static_cast<std::size_t>(((b * N + key) * Hk + kv) * D + d)] += weight * g;
            dp += rounded ? g * at_k(v, b, key, kv, d) : g * (at_k(v, b, key, kv, d) - o[static_cast<std::size_t>(d)]);
          }
          if (rounded) dp -= delta;
          const R ds = static_cast<R>(round_to(static_cast<double>(weight * dp), precision));
          for (std::int64_t d = 0; d < D; ++d) {
            dq[static_cast<std::size_t>(((b * N + row) * H + h) * D + d)] += scale * ds * at_k(k, b, key, kv, d);
            dk[static_cast<std::size_t>(((b * N + key) * Hk + kv) * D + d)] += scale * ds * at_q(q, b, row, h, d);
          }
        }
      }
    }
  }
  auto tensor = [&](const std::vector<R>& values, const Shape& shape) {
    Tensor t = Tensor::from_vector(std::vector<double>(values.begin(), values.end()), shape);
    return rounded ? t.to(precision).to(DType::f64) : t;
  };
  BlockSparseReference result;
  result.out = tensor(out, q_in.shape());
  result.lse = Tensor::from_vector(std::vector<double>(lse.begin(), lse.end()), {B, H, N});
  if (!dout.empty()) {
    result.dq = tensor(dq, q_in.shape());
    result.dk = tensor(dk, k_in.shape());
    result.dv = tensor(dv, v_in.shape());
  }
  return result;
}

}  // namespace

BlockSparseReference block_sparse_reference(const BlockMask& mask, double scale, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& dout, DType precision) {
  if (precision == DType::f64) return reference_in<double>(mask, scale, q, k, v, dout, precision);
  return reference_in<float>(mask, scale, q, k, v, dout, precision);
}

BlockSparseTensors random_block_sparse_tensors(const BlockSparseProblem& p, std::uint64_t seed, DType dtype,
                                               Device device) {
  return {Tensor::randn({p.batch, p.seq_len, p.heads, p.head_dim}, seed * 4 + 0, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.kv_heads, p.head_dim}, seed * 4 + 1, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.kv_heads, p.head_dim}, seed * 4 + 2, dtype, device),
          Tensor::randn({p.batch, p.seq_len, p.heads, p.head_dim}, seed * 4 + 3, dtype, device)};
}

BlockMask random_block_mask(std::mt19937_64& rng, std::int64_t seq_len, std::int64_t heads, std::int64_t block_q,
                            std::int64_t block_k) {
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  BlockGrid grid{seq_len, block_q, block_k, uniform(0, 2) == 0};
  const std::int64_t mask_heads = uniform(0, 1) ? heads : 1;
  const double density = std::uniform_real_distribution<double>(0.05, 1.0)(rng);
  BlockMask::Lists lists(static_cast<std::size_t>(mask_heads));
  BlockMask::Flags flags(static_cast<std::size_t>(mask_heads));
  for (std::int64_t h = 0; h < mask_heads; ++h) {
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      lists[static_cast<std::size_t>(h)].emplace_back();
      flags[static_cast<std::size_t>(h)].emplace_back();
      for (std::int64_t j = 0; j < grid.key_blocks(); ++j) {
        if (std::uniform_real_distribution<double>(0, 1)(rng) >= density) continue;
        lists[static_cast<std::size_t>(h)].back().push_back(j);
        flags[static_cast<std::size_t>(h)].back().push_back(uniform(0, 2) == 0);
      }
    }
  }
  ElementMask band;
  switch (uniform(0, 3)) {
    case 0:
      break;  // partial blocks without a band are full in effect
    case 1:
      band = ElementMask::band(uniform(0, 2 * block_k), uniform(0, 2 * block_k));
      break;
    case 2:
      band = ElementMask::band(uniform(0, block_k), 0);
      break;
    default:
      band.min_distance = uniform(-block_k, block_k);
      band.max_distance = band.min_distance + uniform(0, 3 * block_k);
      break;
  }
  return BlockMask::from_lists(grid, lists, band, flags);
}

std::string describe(const BlockSparseProblem& p, const BlockMask& mask) {
  return str("B=", p.batch, " N=", p.seq_len, " H=", p.heads, " Hk=", p.kv_heads, " D=", p.head_dim, " scale=", p.scale,
             "; mask: ", mask.describe());
}

}  // namespace longnet::testing
