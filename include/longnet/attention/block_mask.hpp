// Block masks of block-sparse attention (DESIGN 2.5). The sequence of N positions is cut
// into query blocks of block_q positions and key blocks of block_k positions (the last of
// each may be shorter); a mask lists, per query block, the key blocks it attends to, each
// either *full* (every (query, key) pair of the two blocks) or *partial* (only the pairs
// the element mask allows). One mask is shared by all heads or there is one per query
// head. Stored compactly: per (head, query block) the sorted key-block indices and their
// partial flags (CSR), plus the transposed lists per (head, key block) that backward needs.
//
// Causal (a property of the grid) applies to every block: no key after its query. The
// element mask applies to partial blocks:
//   - a band on distance = query position - key position, min_distance <= distance <=
//     max_distance (a sliding window of w tokens: 0 <= distance <= w - 1) — the element
//     masks the GPU kernels support;
//   - and, on the CPU only, a predicate(head, query, key) of positions.
// A pair is attended iff its blocks are listed, (not causal or key <= query), and (the
// block is full, or the band and the predicate allow the pair). Rows that attend to no
// key give out = 0 and lse = -inf.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace longnet {

// The geometry of a mask: sequence length, block sizes, and whether it is causal (then no
// pair with key > query is attended, in any block, and no block after the diagonal is
// listed).
struct BlockGrid {
  std::int64_t seq_len = 0;
  std::int64_t block_q = 64;
  std::int64_t block_k = 64;
  bool causal = false;

  std::int64_t query_blocks() const { return (seq_len + block_q - 1) / block_q; }
  std::int64_t key_blocks() const { return (seq_len + block_k - 1) / block_k; }
  // Positions [first, end) of query block i and key block j.
  std::int64_t query_begin(std::int64_t i) const { return i * block_q; }
  std::int64_t query_end(std::int64_t i) const { return seq_len < (i + 1) * block_q ? seq_len : (i + 1) * block_q; }
  std::int64_t key_begin(std::int64_t j) const { return j * block_k; }
  std::int64_t key_end(std::int64_t j) const { return seq_len < (j + 1) * block_k ? seq_len : (j + 1) * block_k; }
  // Throws Error naming the field: seq_len >= 1, block sizes >= 1, block counts < 2^31.
  void validate() const;
  friend bool operator==(const BlockGrid&, const BlockGrid&) = default;
};

// Which pairs of a partial block are attended (see the file comment).
struct ElementMask {
  static constexpr std::int64_t kUnbounded = INT64_MAX;
  std::int64_t min_distance = -kUnbounded;  // query - key >= min_distance
  std::int64_t max_distance = kUnbounded;   // query - key <= max_distance
  // CPU only: pairs the band allows are attended iff predicate(head, query, key).
  std::function<bool(std::int64_t head, std::int64_t query, std::int64_t key)> predicate;

  static ElementMask none() { return {}; }
  // Keys k with query - before <= k <= query + after.
  static ElementMask band(std::int64_t before, std::int64_t after) { return {-after, before, {}}; }
  bool has_band() const { return min_distance != -kUnbounded || max_distance != kUnbounded; }
  bool band_allows(std::int64_t query, std::int64_t key) const {
    const std::int64_t distance = query - key;
    return distance >= min_distance && distance <= max_distance;
  }
  bool allows(std::int64_t head, std::int64_t query, std::int64_t key) const {
    return band_allows(query, key) && (!predicate || predicate(head, query, key));
  }
  // "none", "band a <= query - key <= b", plus " and a predicate".
  std::string describe() const;
};

class BlockMask {
 public:
  // key_blocks[h][i]: the key blocks query block i of head h attends to (h < heads, where
  // heads = 1 means shared by all heads; any order, no duplicates). partial[h][i][n]
  // flags key_blocks[h][i][n] as partial; empty `partial` means: partial where the band
  // cuts the block, and every block when there is a predicate. Blocks in which no pair
  // can be attended (after the diagonal of a causal grid; partial blocks outside the
  // band) are dropped. Throws Error naming the head, block and rule on bad input.
  using Lists = std::vector<std::vector<std::vector<std::int64_t>>>;
  using Flags = std::vector<std::vector<std::vector<bool>>>;
  static BlockMask from_lists(const BlockGrid& grid, const Lists& key_blocks, ElementMask element_mask = {},
                              const Flags& partial = {});
  // Every key block for every query block (dense attention; causal with grid.causal).
  static BlockMask dense(const BlockGrid& grid);

  BlockMask() = default;
  const BlockGrid& grid() const { return grid_; }
  std::int64_t seq_len() const { return grid_.seq_len; }
  std::int64_t block_q() const { return grid_.block_q; }
  std::int64_t block_k() const { return grid_.block_k; }
  std::int64_t query_blocks() const { return grid_.query_blocks(); }
  std::int64_t key_blocks() const { return grid_.key_blocks(); }
  std::int64_t heads() const { return heads_; }  // 1: shared by all heads
  bool shared() const { return heads_ == 1; }
  const ElementMask& element_mask() const { return element_mask_; }
  // The mask head that serves query head h.
  std::int64_t mask_head(std::int64_t head) const { return heads_ == 1 ? 0 : head; }

  // Key blocks (sorted) of query block i of mask head h, and whether each is partial.
  std::span<const std::int32_t> key_blocks_of(std::int64_t h, std::int64_t i) const;
  std::span<const std::uint8_t> key_partial_of(std::int64_t h, std::int64_t i) const;
  // Transposed: query blocks (sorted) that attend to key block j of mask head h.
  std::span<const std::int32_t> query_blocks_of(std::int64_t h, std::int64_t j) const;
  std::span<const std::uint8_t> query_partial_of(std::int64_t h, std::int64_t j) const;

  // The CSR arrays themselves (row_offsets has heads * query_blocks + 1 entries,
  // column_offsets heads * key_blocks + 1), for the kernels.
  const std::vector<std::int64_t>& row_offsets() const { return row_offsets_; }
  const std::vector<std::int32_t>& column_indices() const { return column_indices_; }
  const std::vector<std::uint8_t>& row_partial() const { return row_partial_; }
  const std::vector<std::int64_t>& column_offsets() const { return column_offsets_; }
  const std::vector<std::int32_t>& row_indices() const { return row_indices_; }
  const std::vector<std::uint8_t>& column_partial() const { return column_partial_; }

  // Listed (query block, key block) pairs summed over mask heads, and their share of all
  // heads * query_blocks * key_blocks pairs.
  std::int64_t listed_blocks() const { return static_cast<std::int64_t>(column_indices_.size()); }
  double density() const;
  // Whether query position q attends to key position k under query head `head`.
  bool allows(std::int64_t head, std::int64_t q, std::int64_t k) const;
  // Attended (query, key) pairs of query head `head` (exact: partial blocks counted per
  // element), for FLOP counts (DESIGN 4).
  std::int64_t attended_pairs(std::int64_t head) const;
  // The lists as nested vectors (what from_lists takes), and the partial flags.
  Lists lists() const;
  Flags partial_flags() const;
  // "N = 4096, blocks 64 x 64, shared, 12.5% of blocks, causal".
  std::string describe() const;

 private:
  BlockGrid grid_;
  std::int64_t heads_ = 1;
  ElementMask element_mask_;
  std::vector<std::int64_t> row_offsets_{0};
  std::vector<std::int32_t> column_indices_;
  std::vector<std::uint8_t> row_partial_;
  std::vector<std::int64_t> column_offsets_{0};
  std::vector<std::int32_t> row_indices_;
  std::vector<std::uint8_t> column_partial_;
};

// The union of masks on the same grid: a pair is attended iff one of them attends it. A
// block listed by several is full if one lists it full. Masks with one head are
// broadcast to the others' head count. Their element masks must be equal (same band, no
// predicate), except that a mask without partial blocks takes the other's. Throws Error
// naming the mask and the rule otherwise.
BlockMask union_of(const std::vector<BlockMask>& masks);

// A mask file (safetensors), the interchange format with PyTorch: tensor "layout" u8
// (heads, query_blocks, key_blocks) with 0 = not listed, 1 = full, 2 = partial, and
// metadata seq_len, block_q, block_k, min_distance, max_distance ("-inf"/"inf" when
// unbounded). A mask with a predicate cannot be saved.
void save_block_mask(const std::string& path, const BlockMask& mask);
BlockMask load_block_mask(const std::string& path);

}  // namespace longnet
