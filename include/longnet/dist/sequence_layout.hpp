// Which rank holds which rows of a sequence of N positions (DESIGN 2.6). The sequence is
// cut into blocks, contiguous ranges of positions, each owned by one rank; a rank's local
// tensors hold its blocks one after another in sequence order. Two layouts:
//   contiguous: block r = rank r's slice, any lengths >= 1 (uneven slices allowed);
//   zigzag:     2P blocks of (nearly) equal length, rank r owns blocks r and 2P-1-r, so
//               under causal attention every rank gets one early and one late block
//               (the load balancing of striped/zigzag ring attention).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/core/tensor.hpp"

namespace longnet {

struct SequenceBlock {
  std::int64_t begin = 0;        // first position (global)
  std::int64_t end = 0;          // one past the last position
  int rank = 0;                  // owner
  std::int64_t local_begin = 0;  // row of `begin` in the owner's local tensors

  std::int64_t length() const { return end - begin; }
};

enum class SequenceOrder { contiguous, zigzag };
std::string_view to_string(SequenceOrder order);  // "contiguous" or "zigzag"
SequenceOrder parse_sequence_order(std::string_view text, std::string_view argument = "order");

class SequenceLayout {
 public:
  // Rank r holds positions [sum of lengths before r, + local_lengths[r]); every length >= 1.
  static SequenceLayout contiguous(const std::vector<std::int64_t>& local_lengths);
  // Equal slices (the first N mod P ranks one row longer); N >= P.
  static SequenceLayout contiguous(std::int64_t seq_len, int world_size);
  // 2P blocks, the first N mod 2P one row longer; rank r owns blocks r and 2P-1-r. N >= 2P.
  static SequenceLayout zigzag(std::int64_t seq_len, int world_size);
  static SequenceLayout make(SequenceOrder order, std::int64_t seq_len, int world_size);

  std::int64_t seq_len() const { return seq_len_; }
  int world_size() const { return world_size_; }
  SequenceOrder order() const { return order_; }
  // All blocks in sequence order; they cover [0, N) without overlap.
  const std::vector<SequenceBlock>& blocks() const { return blocks_; }
  // Index into blocks() of the block holding position `position`.
  std::size_t block_of(std::int64_t position) const;
  std::int64_t local_length(int rank) const;
  std::vector<std::int64_t> local_lengths() const;

  // Rank `rank`'s local rows of a global tensor whose dimension `dim` is the sequence
  // (a view for contiguous layouts, a copy for zigzag), and the inverse: the global tensor
  // from all ranks' local tensors.
  Tensor shard(const Tensor& global, int rank, int dim = 1) const;
  Tensor unshard(const std::vector<Tensor>& locals, int dim = 1) const;

 private:
  SequenceLayout() = default;
  void finish();

  std::int64_t seq_len_ = 0;
  int world_size_ = 0;
  SequenceOrder order_ = SequenceOrder::contiguous;
  std::vector<SequenceBlock> blocks_;
};

}  // namespace longnet
