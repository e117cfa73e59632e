// Causal dilated attention of one new query position against a KV cache (generation).
//
// Under pattern (w, r) the query at position p with in-segment index t = p mod w is active
// for head h iff t mod r == o(h) (dilation.hpp), and its keys are the positions of the
// current segment with the same residue o that are <= p: s*w + o + r*j, j = 0..t/r. So a
// pattern's cache only holds the current segment, one *slot* per residue class some head
// uses, row j of a slot holding the key at in-segment index o + r*j: at most ceil(w / r)
// rows per slot, whatever the length generated. The output is one softmax over the
// multiset union of all patterns' keys, exactly as the full forward (DESIGN 2.1, 2.2),
// including the 1/G scaling of head-groups mode.
//
// Positional encodings: the caller stores q and k rotated (RoPE, or xPos without its
// scale factor); with xpos_scale_base > 0 the kernel applies xPos's relative factor
// zeta_j^((p - p_key) / scale_base) to the product of pair j, which is what xPos's
// factors on q and k multiply to in the full forward, with no overflow however long the
// generation.
//
// q, out: (batch, heads, D) contiguous; cache keys/values per pattern:
// (slots, capacity, batch, kv_heads, D) contiguous. All float tensors share dtype (f32 or
// f64; on CUDA also bf16, accumulated in double like the others).
#pragma once

#include <cstdint>
#include <vector>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/dilation.hpp"

namespace longnet::kernels {

struct DecodePatternCache {
  DilationPattern pattern;
  std::int64_t slots = 0;
  std::int64_t capacity = 0;  // rows per slot
  const void* keys = nullptr;
  const void* values = nullptr;
};

struct DilatedDecodeParams {
  std::int64_t batch = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t position = 0;  // p of the query (its keys are already in the cache)
  DilatedMode mode = DilatedMode::longnet;
  double scale = 1.0;
  double xpos_scale_base = 0.0;  // > 0: apply xPos's relative factor
  DType dtype = DType::f32;
  std::vector<DecodePatternCache> patterns;
  const void* q = nullptr;
  void* out = nullptr;
};

// Slots a pattern's cache needs: every offset some head uses. In LongNet mode the offsets
// used are 0 .. floor((H-1) / ceil(H/r)), all of them; in head-groups mode one group uses
// the pattern with one offset.
inline std::int64_t decode_cache_slots(DilatedMode mode, std::int64_t rate, std::int64_t heads) {
  return mode == DilatedMode::longnet ? (heads - 1) / ceil_div(heads, rate) + 1 : 1;
}

// The slot holding residue `offset` (which some head uses).
LONGNET_HOST_DEVICE inline std::int64_t decode_cache_slot(DilatedMode mode, std::int64_t offset) {
  return mode == DilatedMode::longnet ? offset : 0;
}

// The offset whose slot a position with in-segment index t fills (-1: no head reads it).
inline std::int64_t decode_cache_offset_of(DilatedMode mode, std::int64_t pattern, std::int64_t num_patterns,
                                           DilationPattern p, std::int64_t heads, std::int64_t t) {
  const std::int64_t residue = t % p.dilation_rate;
  if (mode == DilatedMode::longnet) {
    return residue < decode_cache_slots(mode, p.dilation_rate, heads) ? residue : -1;
  }
  return residue == pattern % p.dilation_rate && pattern < num_patterns ? residue : -1;
}

void dilated_decode_cpu(const DilatedDecodeParams& p);
void dilated_decode_cuda(const DilatedDecodeParams& p);

}  // namespace longnet::kernels
