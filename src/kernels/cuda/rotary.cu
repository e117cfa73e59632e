// RoPE and xPos on CUDA (rotary.hpp): one thread per (batch, position, group of pairs),
// which computes the factors of its pairs once (rotary_factors.cuh: in double for f32 and
// f64 rows, fast f32 after a double-precision angle reduction for bf16) and applies them
// to those pairs of every head (loads of kHeadsAhead heads in flight), in Compute<T> (f32
// for bf16 and f32 tensors). A group is one 16-byte pack (4 pairs of bf16, 2 of f32, 1 of
// f64) when the strides allow, else 1 pair. A query and key pair (rotary_apply_query_key)
// is one launch: the key map's factors come from the same angle, and one launch's tail
// instead of two.
// Bytes: x read and out written once; at 3 TB/s 34 us for 32768 x 12 heads x 64 bf16.
#include "kernels/cuda/model_kernels_common.cuh"
#include "kernels/cuda/rotary_factors.cuh"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr int kHeadsAhead = 4;  // heads loaded before any is rotated: loads in flight

// The pairs of group g at position n of `heads` heads of x, rotated by (cs, sn) into out.
template <class T, bool kVector, class C, int P>
__device__ __forceinline__ void rotate_group(const RowTensor& x_rows, const RowTensor& out_rows, std::int64_t heads,
                                             std::int64_t b, std::int64_t n, std::int64_t g, const C* cs, const C* sn) {
  constexpr int Q = P / 2;
  const T* x = static_cast<const T*>(x_rows.data) + b * x_rows.batch_stride + n * x_rows.seq_stride + g * P;
  T* out = static_cast<T*>(out_rows.data) + b * out_rows.batch_stride + n * out_rows.seq_stride + g * P;
  // In place (out = x) each head's elements are read before they are written.
  for (std::int64_t h0 = 0; h0 < heads; h0 += kHeadsAhead) {
    C v[kHeadsAhead][P];
#pragma unroll
    for (int u = 0; u < kHeadsAhead; ++u) {
      if (h0 + u >= heads) break;
      const T* row = x + (h0 + u) * x_rows.head_stride;
      if constexpr (kVector) {
        const Pack<T> pack = load_pack(row, 0);
        for (int e = 0; e < P; ++e) v[u][e] = to_compute(pack.v[e]);
      } else {
        for (int e = 0; e < P; ++e) v[u][e] = to_compute(row[e]);
      }
    }
#pragma unroll
    for (int u = 0; u < kHeadsAhead; ++u) {
      if (h0 + u >= heads) break;
      Pack<T> result;  // P <= kPack<T> elements used
      for (int q = 0; q < Q; ++q) {
        result.v[2 * q] = from_compute<T>(v[u][2 * q] * cs[q] - v[u][2 * q + 1] * sn[q]);
        result.v[2 * q + 1] = from_compute<T>(v[u][2 * q + 1] * cs[q] + v[u][2 * q] * sn[q]);
      }
      T* row = out + (h0 + u) * out_rows.head_stride;
      if constexpr (kVector) {
        store_pack(row, 0, result);
      } else {
        for (int e = 0; e < P; ++e) row[e] = result.v[e];
      }
    }
  }
}

// kKeys: `key` holds the key rows of the same positions, rotated in the same thread by the
// key map's factors (the xPos factor inverted), which come from the same angle.
template <class T, bool kVector, bool kKeys>
__global__ void rotary_kernel(RotaryParams p, RotaryParams key) {
  begin_dependent_kernel();
  using C = Compute<T>;
  constexpr int P = kVector ? kPack<T> : 2;  // elements per group
  constexpr int Q = P / 2;                   // pairs per group
  const std::int64_t groups = p.head_dim / P;
  LONGNET_GRID_STRIDE(i, p.batch * p.seq_len * groups) {
    const std::int64_t g = i % groups, n = (i / groups) % p.seq_len, b = i / (groups * p.seq_len);
    C cs[Q], sn[Q], key_cs[Q], key_sn[Q];
    if constexpr (kKeys) {
      rotary_factors::of_pairs<T, C, Q>(p, g * Q, n, cs, sn, key_cs, key_sn);
    } else {
      rotary_factors::of_pairs<T, C, Q>(p, g * Q, n, cs, sn);
    }
    rotate_group<T, kVector, C, P>(p.x, p.out, p.heads, b, n, g, cs, sn);
    if constexpr (kKeys) rotate_group<T, kVector, C, P>(key.x, key.out, key.heads, b, n, g, key_cs, key_sn);
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

template <bool kKeys>
void launch_rotary(const RotaryParams& p, const RotaryParams& key) {
  const std::int64_t count = p.batch * p.seq_len * (p.head_dim / 2);
  if (count == 0 || (p.heads == 0 && key.heads == 0)) return;
  dispatch_activation(p.dtype, "rotary_apply", [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    if (packed<T>(p) && (!kKeys || packed<T>(key))) {
      launch_model(rotary_kernel<T, true, kKeys>, grid_for(count / (kPack<T> / 2)), kThreads, 0, stream, p, key);
    } else {
      launch_model(rotary_kernel<T, false, kKeys>, grid_for(count), kThreads, 0, stream, p, key);
    }
  });
  check_launch();
}

}  // namespace

void rotary_apply_cuda(const RotaryParams& p) { launch_rotary<false>(p, p); }

void rotary_apply_query_key_cuda(const RotaryParams& query, const RotaryParams& key) {
  check_query_key_maps(query, key);
  launch_rotary<true>(query, key);
}

void rotate_attention_gradients_cuda(const DilatedAttentionParams& params, bool dq, bool dk) {
  if (dq && params.dq_rotary) {
    rotary_apply_cuda(transposed_rotary_in_place(*params.dq_rotary, params, params.dq, params.heads));
  }
  if (dk && params.dk_rotary) {
    rotary_apply_cuda(transposed_rotary_in_place(*params.dk_rotary, params, params.dk, params.kv_heads));
  }
}

}  // namespace longnet::kernels
