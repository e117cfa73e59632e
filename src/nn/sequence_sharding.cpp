// SequenceSharding (sequence_sharding.hpp).
#include "longnet/nn/sequence_sharding.hpp"

#include <algorithm>

namespace longnet::nn {

std::vector<SequenceBlock> SequenceSharding::local_blocks() const {
  std::vector<SequenceBlock> out;
  for (const SequenceBlock& block : layout.blocks()) {
    if (block.rank == comm->rank()) out.push_back(block);
  }
  std::sort(out.begin(), out.end(),
            [](const SequenceBlock& a, const SequenceBlock& b) { return a.local_begin < b.local_begin; });
  return out;
}

Tensor SequenceSharding::shard(const Tensor& global, int dim) const {
  return layout.shard(global, comm->rank(), dim).contiguous();
}

SequenceSharding make_sequence_sharding(std::shared_ptr<Communicator> comm, SequenceOrder order, std::int64_t seq_len) {
  if (comm == nullptr) throw CollectiveError("sequence parallelism: the communicator is null");
  try {
    return {comm, SequenceLayout::make(order, seq_len, comm->size())};
  } catch (const Error& error) {
    throw CollectiveError(
        str("sequence parallelism over ", comm->size(), " processes (", to_string(order), " order): ", error.what()));
  }
}

}  // namespace longnet::nn
