// Sequence parallelism in the layers (DESIGN 2.6): a forward whose ForwardContext names a
// SequenceSharding runs on this process's rows of every sequence, as `layout` gives them to
// rank comm->rank(). Everything but attention works row by row and needs nothing else;
// MultiheadDilatedAttention applies the positional encodings at the rows' global positions
// (xPos centred on the whole sequence) and attends through SequenceParallelDilatedAttention
// over `comm`, so the sharded forward and backward equal the single-process ones to
// rounding. Every rank of `comm` must run the same forward and backward calls (they are
// collective), each with its own rows: (B, layout.local_length(rank), ...).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_layout.hpp"

namespace longnet::nn {

struct SequenceSharding {
  std::shared_ptr<Communicator> comm;
  SequenceLayout layout;  // the whole sequence over comm's ranks

  std::int64_t seq_len() const { return layout.seq_len(); }
  std::int64_t local_length() const { return layout.local_length(comm->rank()); }
  // This rank's blocks in local order (local_begin ascending): runs of global positions.
  std::vector<SequenceBlock> local_blocks() const;
  // Rows `dim` of a global tensor that this rank holds (a contiguous copy).
  Tensor shard(const Tensor& global, int dim) const;
};

// The sharding of sequences of seq_len positions over comm's ranks in `order`. Every rank
// calls it with the same arguments, so a bad one (seq_len < P, or < 2P for zigzag) throws
// the same CollectiveError on every rank.
SequenceSharding make_sequence_sharding(std::shared_ptr<Communicator> comm, SequenceOrder order, std::int64_t seq_len);

}  // namespace longnet::nn
