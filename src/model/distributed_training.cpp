// Distributed training pieces (distributed_training.hpp): sharing a batch, the gradient
// all-reduce and the checks that ranks agree.
#include "longnet/model/distributed_training.hpp"

#include <cstring>

#include "longnet/kernels/counter_rng.hpp"

namespace longnet::model {

std::string_view to_string(Parallelism parallelism) {
  switch (parallelism) {
    case Parallelism::none:
      return "none";
    case Parallelism::data:
      return "data";
    case Parallelism::sequence:
      return "sequence";
  }
  return "?";
}

Parallelism parse_parallelism(std::string_view text, std::string_view argument) {
  if (text == "none") return Parallelism::none;
  if (text == "data") return Parallelism::data;
  if (text == "sequence") return Parallelism::sequence;
  throw Error(str(argument, " = '", text, "': must be none, data or sequence"));
}

void Distribution::validate() const {
  require(!distributed() || comm != nullptr, "parallelism = ", to_string(parallelism),
          " needs a communicator (mpi_world(), or self_communicator() for one process)");
  require(distributed() || comm == nullptr, "parallelism = none takes no communicator (got the ",
          comm ? comm->name() : std::string(), " communicator of ", size(), " ranks)");
}

namespace {

// Rows [first, last) of dimension `dim`, or the undefined tensor.
Tensor rows_of(const Tensor& t, int dim, std::int64_t first, std::int64_t last) {
  return t.defined() ? t.slice(dim, first, last).contiguous() : Tensor();
}

Tensor shard_of(const nn::SequenceSharding& sharding, const Tensor& t) {
  return t.defined() ? sharding.shard(t, 1) : Tensor();
}

}  // namespace

BatchShare share_batch(const Batch& global, const Distribution& distribution) {
  if (!distribution.distributed()) return {global, nullptr};
  require(global.inputs.defined() && global.inputs.dim() == 2,
          "share_batch: the batch's inputs must be (batch, seq_len)");
  const int P = distribution.size(), me = distribution.rank();
  if (distribution.parallelism == Parallelism::data) {
    const std::int64_t B = global.inputs.size(0);
    if (B < P) {
      throw CollectiveError(str("data parallelism over ", P, " processes: batch_size = ", B,
                                ": every process needs at least one sequence of each batch (batch_size >= ", P,
                                "; shares may be uneven)"));
    }
    const SequenceBlock share = SequenceLayout::contiguous(B, P).blocks()[static_cast<std::size_t>(me)];
    return {{rows_of(global.inputs, 0, share.begin, share.end), rows_of(global.targets, 0, share.begin, share.end),
             rows_of(global.source, 0, share.begin, share.end)},
            nullptr};
  }
  auto sharding = std::make_shared<const nn::SequenceSharding>(
      nn::make_sequence_sharding(distribution.comm, distribution.order, global.inputs.size(1)));
  return {{shard_of(*sharding, global.inputs), shard_of(*sharding, global.targets), shard_of(*sharding, global.source)},
          sharding};
}

void all_reduce_gradients(Communicator& comm, const std::vector<nn::ParameterPtr>& parameters,
                          std::int64_t bucket_elements) {
  require(bucket_elements >= 1, "bucket_elements = ", bucket_elements, ": must be >= 1");
  if (parameters.empty() || comm.size() == 1) return;
  const DType dtype = parameters.front()->grad.dtype();
  std::int64_t total = 0;
  for (const nn::ParameterPtr& p : parameters) {
    require(p->grad.dtype() == dtype, "all_reduce_gradients: parameter '", p->name, "' has a ",
            dtype_name(p->grad.dtype()), " gradient but '", parameters.front()->name, "' has ", dtype_name(dtype),
            ": all gradients must share one dtype");
    require(p->grad.device() == comm.device() && p->grad.is_contiguous(), "all_reduce_gradients: parameter '", p->name,
            "' has its gradient on ", to_string(p->grad.device()), " but the ", comm.name(), " communicator works on ",
            to_string(comm.device()));
    total += p->grad.numel();
  }
  const Tensor buffer = Tensor::empty({std::min(total, bucket_elements)}, dtype, comm.device());
  std::vector<const nn::Parameter*> bucket;
  std::int64_t filled = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    const Tensor used = buffer.slice(0, 0, filled);
    std::int64_t at = 0;
    for (const nn::Parameter* p : bucket) {
      used.slice(0, at, at + p->grad.numel()).copy_from(p->grad.view({p->grad.numel()}));
      at += p->grad.numel();
    }
    comm.all_reduce(used, ReduceOp::sum);
    at = 0;
    for (const nn::Parameter* p : bucket) {
      p->grad.view({p->grad.numel()}).copy_from(used.slice(0, at, at + p->grad.numel()));
      at += p->grad.numel();
    }
    bucket.clear();
    filled = 0;
  };
  for (const nn::ParameterPtr& p : parameters) {
    const std::int64_t n = p->grad.numel();
    if (n > bucket_elements) {  // larger than a bucket: reduced where it lies
      comm.all_reduce(p->grad, ReduceOp::sum);
      continue;
    }
    if (filled + n > bucket_elements) flush();
    bucket.push_back(p.get());
    filled += n;
  }
  flush();
}

std::uint64_t fingerprint(std::string_view bytes) {
  std::uint64_t hash = kernels::mix64(bytes.size());
  std::size_t at = 0;
  for (; at + 8 <= bytes.size(); at += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + at, 8);
    hash = kernels::mix64(hash ^ word);
  }
  std::uint64_t tail = 0;
  if (at < bytes.size()) std::memcpy(&tail, bytes.data() + at, bytes.size() - at);
  return kernels::mix64(hash ^ tail);
}

std::uint64_t fingerprint(const std::vector<Tensor>& tensors) {
  std::uint64_t hash = kernels::mix64(tensors.size());
  for (const Tensor& t : tensors) {
    const Tensor host = t.to(Device::cpu()).contiguous();
    const std::string_view bytes(static_cast<const char*>(host.data()), host.nbytes());
    hash = kernels::mix64(hash ^ fingerprint(bytes) ^ kernels::mix64(static_cast<std::uint64_t>(t.dtype())));
  }
  return hash;
}

void require_equal_on_every_rank(Communicator& comm, std::uint64_t value, const std::string& what) {
  const int P = comm.host().size();
  const Tensor all = Tensor::empty({P}, DType::i64);
  comm.host().all_gather(Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(value)}, {1}), all);
  const auto values = all.to_vector<std::int64_t>();
  for (int r = 1; r < P; ++r) {
    if (values[static_cast<std::size_t>(r)] != values[0]) {
      throw CollectiveError(str(what, ": rank ", r, " differs from rank 0 (fingerprints ",
                                values[static_cast<std::size_t>(r)], " and ", values[0], ")"));
    }
  }
}

}  // namespace longnet::model
