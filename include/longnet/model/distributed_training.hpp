// Distributed training (DESIGN 2.6; docs/guides/distributed.md): P processes train one
// model together, each on its share of every global batch, and take identical optimizer
// steps. Two ways to share a batch (B, N):
//   data:     rank r takes a contiguous block of the B sequences (the first B mod P ranks
//             one more; B >= P);
//   sequence: rank r takes its rows of every sequence as a SequenceLayout gives them
//             (contiguous slices or zigzag blocks; N >= P, zigzag N >= 2P), and the
//             model's attention runs sequence-parallel (nn/sequence_sharding.hpp).
// Either way the loss is the global one (token-loss sums and counts all-reduced before
// backward, so each rank scales its gradients by 1 / the global count) and the parameter
// gradients are summed over ranks, so a step equals the single-process step over the same
// global batch to rounding. The pieces below are what the Trainer uses.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_layout.hpp"
#include "longnet/model/language_model.hpp"
#include "longnet/nn/sequence_sharding.hpp"

namespace longnet::model {

enum class Parallelism { none, data, sequence };
std::string_view to_string(Parallelism parallelism);  // "none", "data", "sequence"
Parallelism parse_parallelism(std::string_view text, std::string_view argument = "parallelism");

struct Distribution {
  std::shared_ptr<Communicator> comm;  // null with Parallelism::none
  Parallelism parallelism = Parallelism::none;
  SequenceOrder order = SequenceOrder::contiguous;  // the layout of sequence parallelism

  bool distributed() const { return parallelism != Parallelism::none; }
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  // Throws Error unless the parts fit together (a communicator exactly when distributed).
  void validate() const;
};

// This rank's share of a global batch (inputs, targets and the source when defined), and
// for sequence parallelism the sharding the model's forward must get. Every rank calls it
// with the same global batch; a batch that cannot be shared (B < P for data, N < P or
// N < 2P zigzag for sequence) throws the same CollectiveError on every rank.
struct BatchShare {
  Batch batch;
  std::shared_ptr<const nn::SequenceSharding> sequence;  // sequence parallelism only
};
BatchShare share_batch(const Batch& global, const Distribution& distribution);

// Sums every parameter's gradient over the ranks, in place (packed into buckets of at most
// `bucket_elements` elements each, one all-reduce per bucket). Gradients must live where
// the communicator works and share one dtype.
void all_reduce_gradients(Communicator& comm, const std::vector<nn::ParameterPtr>& parameters,
                          std::int64_t bucket_elements = std::int64_t{1} << 22);

// A 64-bit fingerprint of tensors' bytes (any device), for checks that ranks agree.
std::uint64_t fingerprint(const std::vector<Tensor>& tensors);
std::uint64_t fingerprint(std::string_view bytes);
// Collective: throws the same CollectiveError on every rank unless every rank passed the
// same value ("<what>: rank r differs from rank 0 (fingerprints ...)", r the first such rank).
void require_equal_on_every_rank(Communicator& comm, std::uint64_t value, const std::string& what);

}  // namespace longnet::model
