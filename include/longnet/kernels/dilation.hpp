// The pattern math of dilated attention (DESIGN 2.1, 2.2, 3.1), shared by the fp64
// oracle, the CPU kernel and the CUDA kernels so they cannot drift apart.
//
// A pattern (w, r) splits the sequence into segments of w positions (the last may be
// shorter); in each segment the positions whose in-segment index t satisfies t mod r == o
// form a *virtual sequence* s*w + o + r*j, j = 0..len-1. A head attends within the
// virtual sequence of its offset o (causally: key j' <= query j). Which offset a head
// uses depends on the mode:
//   LongNet mode:     o_i(h) = floor(h / ceil(H / r_i)) for every pattern i;
//   head-groups mode: heads are split into G contiguous groups (the first H mod G groups
//                     one larger), group i uses pattern i alone with o = i mod r_i.
#pragma once

#include <cstdint>

#include "longnet/kernels/host_device.hpp"

namespace longnet::kernels {

enum class DilatedMode : std::int32_t { longnet = 0, head_groups = 1 };

struct DilationPattern {
  std::int64_t segment_length = 1;  // w >= 1
  std::int64_t dilation_rate = 1;   // 1 <= r <= w
};

// Rows first_row + row_step * j for j in [0, length): one dense (causal) sub-problem.
struct VirtualSequence {
  std::int64_t first_row = 0;
  std::int64_t row_step = 1;
  std::int64_t length = 0;
};

// ceil(a / b) for a >= 0, b > 0, without overflow for any b (a dense pattern uses a huge w).
LONGNET_HOST_DEVICE inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0); }

// Number of segments of length w covering [0, N).
LONGNET_HOST_DEVICE inline std::int64_t segment_count(std::int64_t seq_len, std::int64_t segment_length) {
  return ceil_div(seq_len, segment_length);
}

// LongNet mode: heads split into r contiguous groups of ceil(H / r); group index = offset.
LONGNET_HOST_DEVICE inline std::int64_t longnet_offset(std::int64_t head, std::int64_t heads, std::int64_t rate) {
  return head / ceil_div(heads, rate);
}

// Head-groups mode: the group of head h when H heads form G groups, the first H mod G of
// them with floor(H/G) + 1 heads and the rest with floor(H/G).
LONGNET_HOST_DEVICE inline std::int64_t head_group_of(std::int64_t head, std::int64_t heads, std::int64_t groups) {
  const std::int64_t base = heads / groups;
  const std::int64_t larger = heads % groups;  // groups of size base + 1
  const std::int64_t in_larger = larger * (base + 1);
  return head < in_larger ? head / (base + 1) : larger + (head - in_larger) / base;
}

// The offset head `head` uses under pattern `pattern`, or -1 when the head does not use
// the pattern at all (head-groups mode, another group's pattern).
LONGNET_HOST_DEVICE inline std::int64_t pattern_offset(DilatedMode mode, std::int64_t pattern,
                                                       std::int64_t num_patterns, std::int64_t rate, std::int64_t head,
                                                       std::int64_t heads) {
  if (mode == DilatedMode::longnet) return longnet_offset(head, heads, rate);
  return head_group_of(head, heads, num_patterns) == pattern ? pattern % rate : -1;
}

// The virtual sequence of segment `segment` at offset `offset` (length 0 when the
// segment is shorter than the offset).
LONGNET_HOST_DEVICE inline VirtualSequence virtual_sequence(std::int64_t seq_len, DilationPattern p,
                                                            std::int64_t offset, std::int64_t segment) {
  const std::int64_t start = segment * p.segment_length;
  const std::int64_t rows = seq_len - start < p.segment_length ? seq_len - start : p.segment_length;
  const std::int64_t length = rows > offset ? ceil_div(rows - offset, p.dilation_rate) : 0;
  return {start + offset, p.dilation_rate, length};
}

// The longest virtual sequence of a pattern over seq_len rows (a whole segment's at
// offset 0): the rows one CTA or work item of the pattern's launches may have to cover.
LONGNET_HOST_DEVICE inline std::int64_t longest_virtual_length(std::int64_t seq_len, DilationPattern p) {
  return ceil_div(seq_len < p.segment_length ? seq_len : p.segment_length, p.dilation_rate);
}

// pattern_offset and virtual_sequence's length in 32-bit arithmetic, for the CUDA kernels'
// per-CTA set-up (a 64-bit division is a ~70-instruction subroutine there). Exact when
// seq_len < 2^31 and heads < 2^31, with rate = min(dilation_rate, 2^31 - 1): a rate past
// every row count gives the same offsets and lengths as the true one.
LONGNET_HOST_DEVICE inline std::int32_t pattern_offset_32(DilatedMode mode, std::uint32_t pattern,
                                                           std::uint32_t num_patterns, std::uint32_t rate,
                                                           std::uint32_t head, std::uint32_t heads) {
  if (mode == DilatedMode::longnet) return static_cast<std::int32_t>(head / (heads / rate + (heads % rate != 0)));
  const std::uint32_t base = heads / num_patterns, larger = heads % num_patterns, in_larger = larger * (base + 1);
  const std::uint32_t group = head < in_larger ? head / (base + 1) : larger + (head - in_larger) / base;
  return group == pattern ? static_cast<std::int32_t>(pattern % rate) : -1;
}

// The length of the virtual sequence at `offset` of a segment of `rows` rows (rows <
// 2^31): virtual_sequence(...).length.
LONGNET_HOST_DEVICE inline std::uint32_t virtual_length_32(std::uint32_t rows, std::uint32_t offset,
                                                            std::uint32_t rate) {
  return rows > offset ? (rows - offset) / rate + ((rows - offset) % rate != 0) : 0;
}

LONGNET_HOST_DEVICE inline std::uint32_t rate_32(std::int64_t dilation_rate) {
  return dilation_rate < 0x7fffffff ? static_cast<std::uint32_t>(dilation_rate) : 0x7fffffffu;
}

// The output rows one forward work item writes zeros to (rows its head's pattern does not
// reach are 0, DESIGN 2.2), so the output needs no fill first. The item owns the rows
// [q_begin, q_end) of the virtual sequence at `offset` (rate r) of a segment; it covers the
// in-segment rows offset + r j + d (d = 1 .. r - 1) of its rows j and, when q_begin = 0,
// the rows before `offset`. Over the items of a non-empty virtual sequence that is every
// unreached row of the segment exactly once, plus some past the segment's end (the caller
// skips row(i) >= the segment's rows). count is 0 when r = 1. Needs r * (q_end - q_begin)
// < 2^32.
struct UnreachedRowsOfItem {
  std::uint32_t rate = 1, offset = 0, head_rows = 0, count = 0;
  std::int64_t first_index = 0;  // in-segment index of the item's first row: q_begin * r

  // In-segment index of the index-th row, index < count.
  LONGNET_HOST_DEVICE std::int64_t row(std::uint32_t index) const {
    if (index < head_rows) return index;
    const std::uint32_t gap = index - head_rows;
    return first_index + offset + static_cast<std::int64_t>(gap / (rate - 1)) * rate + gap % (rate - 1) + 1;
  }
};

LONGNET_HOST_DEVICE inline UnreachedRowsOfItem unreached_rows_of_item(std::int64_t q_begin, std::int64_t q_end,
                                                                      std::int64_t rate, std::int64_t offset) {
  UnreachedRowsOfItem u;
  u.rate = static_cast<std::uint32_t>(rate);
  u.offset = static_cast<std::uint32_t>(offset);
  const auto queries = static_cast<std::uint32_t>(q_end - q_begin);
  u.head_rows = q_begin == 0 ? u.offset : 0;
  u.count = u.head_rows + queries * (u.rate - 1);
  u.first_index = q_begin * rate;
  return u;
}

// The key tiles (of `block_n` keys) that a warpgroup of the Hopper forward multiplies: its
// `rows` query rows from `first_row` of a work item whose tiles are the first `item_tiles`
// of a virtual sequence of length `length`. Causal: the tiles up to its last row (the rest
// are masked for every one of its rows); rows all past the sequence (written nowhere):
// one. Otherwise all of the item's.
LONGNET_HOST_DEVICE inline int consumer_key_tiles(bool causal, int length, int first_row, int rows, int item_tiles,
                                                  int block_n) {
  if (first_row >= length) return 1;
  if (!causal) return item_tiles;
  const int key_end = first_row + rows < length ? first_row + rows : length;
  const int tiles = (key_end + block_n - 1) / block_n;
  return tiles < item_tiles ? tiles : item_tiles;
}

// The causal forward's work order (the warp-specialised Hopper kernel's items): item
// `local` of a launch over `sequences` virtual sequences of `tiles` query tiles each, by
// cost (a tile's keys end at its last row, so the last tile is the heaviest): the last tile
// of each sequence, then the one before, ... (the persistent CTAs take the items round
// robin, each getting a mix of costs), within groups of `group` consecutive sequences,
// a group's items before the next group's (0 or >= sequences: one group), so that the K
// and V of the sequences in flight can stay in L2. Every (sequence, tile) once.
struct CostOrderedItem {
  std::int64_t sequence = 0, tile = 0;
};

LONGNET_HOST_DEVICE inline CostOrderedItem cost_ordered_item(std::int64_t local, std::int64_t sequences,
                                                             std::int64_t tiles, std::int64_t group) {
  if (group <= 0 || group > sequences) group = sequences;
  const std::int64_t first = local / (group * tiles) * group;  // the group's first sequence
  const std::int64_t size = sequences - first < group ? sequences - first : group;
  const std::int64_t within = local - first * tiles;
  return {first + within % size, tiles - 1 - within / size};
}

// The group size (in sequences) of a causal forward launch's cost order (cost_ordered_item)
// over `sequences` virtual sequences whose K and V take `sequence_bytes` each.
// - Why groups: ordered by cost across all 192 sequences of the training configuration's
//   first pattern (96 MB of K and V), each sequence's K and V came back from DRAM at every
//   tile level (77 % of DRAM bandwidth); groups of ~16 MB made that forward 1-3 % faster.
// - 0 (one group) when the launch's K and V fit in 32 MB: they stay in an H100's 50 MB L2
//   anyway, and a group boundary inside a round of the persistent CTAs only unbalanced them
//   (the rate-4 and rate-6 launches alone ran 15-20 % faster without groups; H100,
//   docs/benchmarks.md 2026-12-06).
// - Otherwise as few groups of at most ~16 MB as fit, of equal size, so that no small group
//   of heavy items ends the launch.
inline constexpr std::int64_t kForwardL2GroupBytes = std::int64_t{16} << 20;
inline constexpr std::int64_t kForwardUngroupedBytes = std::int64_t{32} << 20;

inline std::int64_t forward_cost_group(std::int64_t sequence_bytes, std::int64_t sequences) {
  if (sequence_bytes <= 0 || sequences <= 1 || sequences <= kForwardUngroupedBytes / sequence_bytes) return 0;
  const std::int64_t most = sequence_bytes < kForwardL2GroupBytes ? kForwardL2GroupBytes / sequence_bytes : 1;
  const std::int64_t group = ceil_div(sequences, ceil_div(sequences, most));
  return group < sequences ? group : 0;
}

// Attended (query, key) pairs of one virtual sequence of length n.
LONGNET_HOST_DEVICE inline std::int64_t sequence_pairs(std::int64_t n, bool causal) {
  return causal ? n * (n + 1) / 2 : n * n;
}

// Attended (query, key) pairs of one (batch element, head) summed over patterns and
// segments, counted with multiplicity (DESIGN 4 counts FLOPs from this).
inline std::int64_t attended_pairs_per_head(std::int64_t seq_len, std::int64_t heads, std::int64_t head,
                                            const DilationPattern* patterns, std::int64_t num_patterns,
                                            DilatedMode mode, bool causal) {
  std::int64_t pairs = 0;
  for (std::int64_t i = 0; i < num_patterns; ++i) {
    const std::int64_t offset = pattern_offset(mode, i, num_patterns, patterns[i].dilation_rate, head, heads);
    if (offset < 0) continue;
    const std::int64_t segments = segment_count(seq_len, patterns[i].segment_length);
    for (std::int64_t s = 0; s < segments; ++s) {
      pairs += sequence_pairs(virtual_sequence(seq_len, patterns[i], offset, s).length, causal);
    }
  }
  return pairs;
}

// All attended pairs of a (B, N, H) problem.
inline std::int64_t attended_pairs(std::int64_t batch, std::int64_t seq_len, std::int64_t heads,
                                   const DilationPattern* patterns, std::int64_t num_patterns, DilatedMode mode,
                                   bool causal) {
  std::int64_t pairs = 0;
  for (std::int64_t h = 0; h < heads; ++h) {
    pairs += attended_pairs_per_head(seq_len, heads, h, patterns, num_patterns, mode, causal);
  }
  return batch * pairs;
}

}  // namespace longnet::kernels
