// SequenceLayout: blocks of positions and their owners (see the header), and the copies
// between a global tensor and its per-rank slices.
#include "longnet/dist/sequence_layout.hpp"

#include <algorithm>

namespace longnet {

std::string_view to_string(SequenceOrder order) { return order == SequenceOrder::zigzag ? "zigzag" : "contiguous"; }

SequenceOrder parse_sequence_order(std::string_view text, std::string_view argument) {
  if (text == "contiguous") return SequenceOrder::contiguous;
  if (text == "zigzag") return SequenceOrder::zigzag;
  throw Error(str(argument, " = '", text, "': must be contiguous or zigzag"));
}

SequenceLayout SequenceLayout::contiguous(const std::vector<std::int64_t>& local_lengths) {
  require(!local_lengths.empty(), "local_lengths is empty: give one slice length per rank");
  SequenceLayout layout;
  layout.world_size_ = static_cast<int>(local_lengths.size());
  std::int64_t begin = 0;
  for (std::size_t r = 0; r < local_lengths.size(); ++r) {
    require(local_lengths[r] >= 1, "local_lengths[", r, "] = ", local_lengths[r],
            ": every rank must hold at least one row of the sequence");
    layout.blocks_.push_back({begin, begin + local_lengths[r], static_cast<int>(r), 0});
    begin += local_lengths[r];
  }
  layout.seq_len_ = begin;
  layout.finish();
  return layout;
}

SequenceLayout SequenceLayout::contiguous(std::int64_t seq_len, int world_size) {
  require(world_size >= 1, "world_size = ", world_size, ": must be >= 1");
  require(seq_len >= world_size, "seq_len = ", seq_len, " with world_size = ", world_size,
          ": every rank must hold at least one row (seq_len >= world_size)");
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(world_size), seq_len / world_size);
  for (std::int64_t r = 0; r < seq_len % world_size; ++r) ++lengths[static_cast<std::size_t>(r)];
  return contiguous(lengths);
}

SequenceLayout SequenceLayout::zigzag(std::int64_t seq_len, int world_size) {
  require(world_size >= 1, "world_size = ", world_size, ": must be >= 1");
  const std::int64_t block_count = 2 * static_cast<std::int64_t>(world_size);
  require(seq_len >= block_count, "seq_len = ", seq_len, " with world_size = ", world_size,
          ": the zigzag order cuts the sequence into 2 * world_size blocks of at least one row (seq_len >= ",
          block_count, ")");
  SequenceLayout layout;
  layout.seq_len_ = seq_len;
  layout.world_size_ = world_size;
  layout.order_ = SequenceOrder::zigzag;
  std::int64_t begin = 0;
  for (std::int64_t c = 0; c < block_count; ++c) {
    const std::int64_t length = seq_len / block_count + (c < seq_len % block_count ? 1 : 0);
    const auto owner = static_cast<int>(c < world_size ? c : block_count - 1 - c);
    layout.blocks_.push_back({begin, begin + length, owner, 0});
    begin += length;
  }
  layout.finish();
  return layout;
}

SequenceLayout SequenceLayout::make(SequenceOrder order, std::int64_t seq_len, int world_size) {
  return order == SequenceOrder::zigzag ? zigzag(seq_len, world_size) : contiguous(seq_len, world_size);
}

// Local rows: each rank's blocks one after another in sequence order.
void SequenceLayout::finish() {
  std::vector<std::int64_t> filled(static_cast<std::size_t>(world_size_), 0);
  for (SequenceBlock& block : blocks_) {
    block.local_begin = filled[static_cast<std::size_t>(block.rank)];
    filled[static_cast<std::size_t>(block.rank)] += block.length();
  }
}

std::size_t SequenceLayout::block_of(std::int64_t position) const {
  require(position >= 0 && position < seq_len_, "position = ", position, ": must be in [0, ", seq_len_, ")");
  const auto it = std::upper_bound(blocks_.begin(), blocks_.end(), position,
                                   [](std::int64_t p, const SequenceBlock& b) { return p < b.begin; });
  return static_cast<std::size_t>(it - blocks_.begin()) - 1;
}

std::int64_t SequenceLayout::local_length(int rank) const {
  require(rank >= 0 && rank < world_size_, "rank = ", rank, ": must be in [0, ", world_size_, ")");
  std::int64_t length = 0;
  for (const SequenceBlock& block : blocks_) {
    if (block.rank == rank) length += block.length();
  }
  return length;
}

std::vector<std::int64_t> SequenceLayout::local_lengths() const {
  std::vector<std::int64_t> lengths;
  for (int r = 0; r < world_size_; ++r) lengths.push_back(local_length(r));
  return lengths;
}

Tensor SequenceLayout::shard(const Tensor& global, int rank, int dim) const {
  require(global.defined(), "SequenceLayout::shard: the global tensor is undefined");
  require(dim >= 0 && dim < global.dim(), "dim = ", dim, ": must be a dimension of a tensor of shape ",
          shape_to_string(global.shape()));
  require(global.size(dim) == seq_len_, "the global tensor has ", global.size(dim), " rows in dimension ", dim,
          " but the layout covers seq_len = ", seq_len_);
  const std::int64_t length = local_length(rank);
  if (order_ == SequenceOrder::contiguous) {
    for (const SequenceBlock& block : blocks_) {
      if (block.rank == rank) return global.slice(dim, block.begin, block.end);
    }
  }
  Shape shape = global.shape();
  shape[static_cast<std::size_t>(dim)] = length;
  Tensor local = Tensor::empty(shape, global.dtype(), global.device());
  for (const SequenceBlock& block : blocks_) {
    if (block.rank != rank) continue;
    local.slice(dim, block.local_begin, block.local_begin + block.length())
        .copy_from(global.slice(dim, block.begin, block.end));
  }
  return local;
}

Tensor SequenceLayout::unshard(const std::vector<Tensor>& locals, int dim) const {
  require(static_cast<int>(locals.size()) == world_size_, "SequenceLayout::unshard: ", locals.size(),
          " local tensors for world_size = ", world_size_);
  const Tensor& first = locals.front();
  require(first.defined() && dim >= 0 && dim < first.dim(), "SequenceLayout::unshard: dim = ", dim,
          " is not a dimension of the local tensors");
  Shape shape = first.shape();
  shape[static_cast<std::size_t>(dim)] = seq_len_;
  for (int r = 0; r < world_size_; ++r) {
    const Tensor& local = locals[static_cast<std::size_t>(r)];
    Shape expected = shape;
    expected[static_cast<std::size_t>(dim)] = local_length(r);
    require(local.defined() && local.shape() == expected, "SequenceLayout::unshard: rank ", r, "'s tensor has shape ",
            local.defined() ? shape_to_string(local.shape()) : std::string("(undefined)"), ", expected ",
            shape_to_string(expected));
  }
  Tensor global = Tensor::empty(shape, first.dtype(), first.device());
  for (const SequenceBlock& block : blocks_) {
    global.slice(dim, block.begin, block.end)
        .copy_from(locals[static_cast<std::size_t>(block.rank)].slice(dim, block.local_begin,
                                                                      block.local_begin + block.length()));
  }
  return global;
}

}  // namespace longnet
