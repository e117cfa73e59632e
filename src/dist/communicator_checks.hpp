// Argument checks shared by the communicator implementations: buffers are defined,
// contiguous and on the communicator's device, sizes match, ranks exist. Each throws
// Error naming the argument, the value and the rule.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "longnet/dist/communicator.hpp"

namespace longnet::detail {

inline void require_buffer(const Communicator& comm, const Tensor& t, const char* name) {
  require(t.defined(), name, " is undefined");
  require(t.is_contiguous(), name, " ", t.description(), " must be contiguous");
  require(t.device() == comm.device(), name, " is on ", to_string(t.device()), " but the ", comm.name(),
          " communicator works on ", to_string(comm.device()));
}

inline void require_same_kind(const Communicator& comm, const Tensor& input, const Tensor& output) {
  require_buffer(comm, input, "input");
  require_buffer(comm, output, "output");
  require(input.dtype() == output.dtype(), "input is ", dtype_name(input.dtype()), " but output is ",
          dtype_name(output.dtype()), ": they must be equal");
}

// t must hold size() * per_rank elements.
inline void require_count(const Tensor& t, std::int64_t per_rank, const char* name, int ranks = 1) {
  require(t.numel() == per_rank * ranks, name, " has ", t.numel(), " elements: must have ", per_rank * ranks, " (",
          ranks, " ranks x ", per_rank, ")");
}

inline void require_rank(const Communicator& comm, int rank, const char* name) {
  require(rank >= 0 && rank < comm.size(), name, " = ", rank, ": must be in [0, ", comm.size(), ")");
}

inline void require_peer(const Communicator& comm, int peer) {
  require_rank(comm, peer, "peer");
  require(peer != comm.rank(), "peer = ", peer, ": a rank cannot send to or receive from itself");
}

inline void require_counts(const Communicator& comm, const Tensor& input, const Tensor& output,
                           const std::vector<std::int64_t>& counts) {
  require(static_cast<int>(counts.size()) == comm.size(), "counts has ", counts.size(),
          " entries: must have one per rank (", comm.size(), ")");
  std::int64_t total = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    require(counts[r] >= 0, "counts[", r, "] = ", counts[r], ": must be >= 0");
    total += counts[r];
  }
  require(input.numel() == counts[static_cast<std::size_t>(comm.rank())], "input has ", input.numel(),
          " elements but counts[", comm.rank(), "] = ", counts[static_cast<std::size_t>(comm.rank())]);
  require(output.numel() == total, "output has ", output.numel(), " elements: must have the sum of counts, ", total);
}

// MPI counts are ints.
inline int int_count(std::int64_t count, const char* name) {
  require(count <= std::numeric_limits<int>::max(), name, " = ", count,
          " elements: MPI messages are limited to 2^31 - 1 elements; split the buffer");
  return static_cast<int>(count);
}

}  // namespace longnet::detail
