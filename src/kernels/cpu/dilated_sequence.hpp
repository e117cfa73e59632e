// Dense (causal) attention on one virtual sequence of a dilated pattern, and on the key
// blocks of one query block of a block mask: the CPU engine's unit of work (DESIGN 3.1).
// Queries [q_begin, q_end) of the virtual sequence attend to its keys [0, key_count)
// (causally: key j <= query i, in virtual indices). Query-side rows (q, dout, lse, delta,
// dq, out) are addressed from q_begin: row(0) is query q_begin. Key-side rows (k, v, dk,
// dv) are addressed from key 0. Rows are read in place through a base pointer and a row
// stride (the head_dim axis is contiguous), so the keys may come from the input tensor or
// from a buffer gathered from other ranks.
// Blocked online softmax: at most a kBlockQ x kBlockK score tile exists at a time.
//
// The general form (sequence_forward_blocks, sequence_backward_block) takes positions
// and a PairMask: a query tile runs one online softmax over several key blocks (the
// listed blocks of block-sparse attention), each masked or not. The causal mask of a
// virtual sequence is the band 0 <= query - key on virtual indices.
//
// These functions are compiled once per instruction set (generic and AVX2+FMA) into the
// namespaces below; dilated_attention_cpu.cpp picks one at run time.
#pragma once

#include <cstdint>

namespace longnet::kernels::cpu {

inline constexpr std::int64_t kBlockQ = 64;
inline constexpr std::int64_t kBlockK = 128;

template <class T>
struct Rows {  // row j at data + j * stride
  const T* data;
  std::int64_t stride;
  const T* row(std::int64_t j) const { return data + j * stride; }
};

template <class T>
struct MutableRows {
  T* data;
  std::int64_t stride;
  T* row(std::int64_t j) const { return data + j * stride; }
};

// Scratch memory of one thread, owned by the caller (so the instruction-set builds
// contain no standard-library template code that the linker could merge across them).
template <class T>
struct TileWorkspace {
  T* scores;     // kBlockQ * kBlockK
  T* grads;      // kBlockQ * kBlockK
  T* acc;        // kBlockQ * head_dim
  T* row_max;    // kBlockQ
  T* row_sum;    // kBlockQ
  T* row_lse;    // kBlockQ
  T* row_delta;  // kBlockQ
};

// Which (query, key) pairs of a key block are attended: query row i of a tile is at
// position query_position + i, key row j of a block at key_position + j, and a pair
// counts iff min_distance <= query - key <= max_distance (+-kUnboundedDistance: no
// bound) and, when set, predicate(context, head, query, key).
inline constexpr std::int64_t kUnboundedDistance = INT64_MAX;
struct PairMask {
  std::int64_t min_distance = -kUnboundedDistance;
  std::int64_t max_distance = kUnboundedDistance;
  bool (*predicate)(const void* context, std::int64_t head, std::int64_t query, std::int64_t key) = nullptr;
  const void* context = nullptr;
  std::int64_t head = 0;
};

// Keys k.row(j), values v.row(j), j in [0, count), at positions key_position + j; the
// pairs `mask` allows count (every pair when mask is null).
template <class T>
struct KeyBlock {
  Rows<T> k, v;
  std::int64_t count;
  std::int64_t key_position;
  const PairMask* mask;
};

// Queries [q_begin, q_end) (at most kBlockQ for the forward tile) against keys
// [0, key_count):
//  - sequence_forward_tile writes the normalised output rows (out_tile, contiguous, D per
//    row) and their log-sum-exp (zeros and -inf for a query that sees no key);
//  - sequence_backward, with P = exp(scale q.k - lse) and dS = P (alpha dO.v - delta),
//    accumulates (+=) dv += alpha P^T dO, dq += scale dS k and dk += scale dS^T q; the lse
//    and delta of query q_begin + i are lse.row(i)[0] and delta.row(i)[0].
// The general forms: sequence_forward_blocks runs queries [0, rows) (rows <= kBlockQ; q
// row 0 at query_position) through one online softmax over key blocks [0, block_count);
// sequence_backward_block accumulates the gradients of queries [0, rows) (any number)
// against one key block, skipping dq when dq.data is null and dk, dv when dk.data is null.
#define LONGNET_DECLARE_SEQUENCE_KERNELS                                                                             \
  template <class T>                                                                                                 \
  void sequence_forward_tile(Rows<T> q, Rows<T> k, Rows<T> v, std::int64_t key_count, std::int64_t q_begin,          \
                             std::int64_t q_end, std::int64_t head_dim, bool causal, T scale, T* out_tile,           \
                             T* lse_tile, const TileWorkspace<T>& workspace);                                        \
  template <class T>                                                                                                 \
  void sequence_backward(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, Rows<T> lse, Rows<T> delta,                  \
                         std::int64_t key_count, std::int64_t q_begin, std::int64_t q_end, std::int64_t head_dim,    \
                         bool causal, T scale, T alpha, MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv,     \
                         const TileWorkspace<T>& workspace);                                                         \
  template <class T>                                                                                                 \
  void sequence_forward_blocks(Rows<T> q, std::int64_t rows, std::int64_t query_position, const KeyBlock<T>* blocks, \
                               std::int64_t block_count, std::int64_t head_dim, T scale, T* out_tile, T* lse_tile,   \
                               const TileWorkspace<T>& workspace);                                                   \
  template <class T>                                                                                                 \
  void sequence_backward_block(Rows<T> q, Rows<T> dout, Rows<T> lse, Rows<T> delta, std::int64_t rows,               \
                               std::int64_t query_position, const KeyBlock<T>& keys, std::int64_t head_dim, T scale, \
                               T alpha, MutableRows<T> dq, MutableRows<T> dk, MutableRows<T> dv,                     \
                               const TileWorkspace<T>& workspace);

namespace generic {
LONGNET_DECLARE_SEQUENCE_KERNELS
}
namespace avx2 {
LONGNET_DECLARE_SEQUENCE_KERNELS
}

#undef LONGNET_DECLARE_SEQUENCE_KERNELS

}  // namespace longnet::kernels::cpu
