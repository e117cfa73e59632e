// Communicator: the collective and point-to-point operations distribution is built on
// (DESIGN 3, dist layer), over the ranks 0..size()-1 of one group of processes. Buffers
// are contiguous tensors on the communicator's device: host memory for MPI and the self
// communicator, one CUDA device for NCCL (whose work is issued on the device's current
// stream, so it is ordered with the kernels around it and completes in stream order; the
// blocking operations below mean "enqueued" there). Every rank of the group must call
// a collective, in the same order, with matching sizes and dtypes.
//
// Implementations: MPI (built with LONGNET_WITH_MPI; OpenMPI tested), NCCL (built with
// LONGNET_WITH_NCCL; its unique id travels over an MPI communicator), and the
// single-process self communicator (size 1; always built).
//
// Errors: a library error status (MPI runs with MPI_ERRORS_RETURN on our communicators)
// and a bad argument become longnet::Error on the calling rank. Operations built from
// several collectives use run_collectively() so that a failure on one rank becomes the
// same Error on every rank instead of a hang.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "longnet/core/device.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet {

enum class ReduceOp { sum, max };

// One point-to-point message of an exchange(): `buffer` is sent to (or received from) `peer`.
struct Transfer {
  Tensor buffer;
  int peer = 0;
  int tag = 0;  // MPI tag (NCCL matches messages by order; keep one message per peer and direction there)
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "self", "mpi", "nccl"

  // In place: every rank's buffer becomes the elementwise reduction over ranks. Sum and max
  // on f32, f64, i32, i64 (and bf16/f16 on NCCL).
  virtual void all_reduce(const Tensor& buffer, ReduceOp op) = 0;
  // output (size() * n elements) = the inputs (n elements each) of ranks 0, 1, ... in order.
  virtual void all_gather(const Tensor& input, const Tensor& output) = 0;
  // Variable sizes: rank r contributes counts[r] elements (input.numel() == counts[rank()]);
  // output holds them in rank order (sum of counts elements).
  virtual void all_gather_v(const Tensor& input, const Tensor& output, const std::vector<std::int64_t>& counts) = 0;
  // input (size() * n elements): the reduction over ranks of its r-th part of n elements lands in rank r's output.
  virtual void reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) = 0;
  // buffer of `root` is copied to every rank.
  virtual void broadcast(const Tensor& buffer, int root) = 0;
  // Blocking point-to-point messages.
  virtual void send(const Tensor& buffer, int peer, int tag = 0) = 0;
  virtual void recv(const Tensor& buffer, int peer, int tag = 0) = 0;
  // All sends and receives issued together (no order between them, so any pattern of
  // peers is deadlock-free); MPI returns when all have completed, NCCL when they are
  // enqueued on the current stream. A rank may not send to itself.
  virtual void exchange(const std::vector<Transfer>& sends, const std::vector<Transfer>& receives) = 0;
  virtual void barrier() = 0;
  // Collective: ranks with the same color >= 0 form a new communicator, ordered by (key,
  // rank); a rank passing a negative color gets nullptr.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // The host-side communicator over the same ranks, used to agree on errors: itself for
  // MPI and self, the MPI communicator the NCCL one was created from for NCCL.
  virtual Communicator& host() { return *this; }
};

// An Error that every rank of a communicator throws together with the same message: the
// outcome of agree_on_errors, or a check of values every rank shares (sizes all ranks
// gathered, a configuration every rank holds). It needs no further agreement, so an outer
// run_collectively passes its message on as it is instead of prefixing it once more.
class CollectiveError : public Error {
 public:
  explicit CollectiveError(const std::string& message) : Error(message) {}
};

// Collective error agreement: every rank calls it with its own outcome. When any rank
// failed, every rank throws the same CollectiveError naming the failing ranks with their
// messages, in rank order ("rank 1: <message>", "ranks 0, 2: <message>" for a message
// several reported; a message that every one of several ranks reported, or that a rank reports as
// `already_agreed` — a CollectiveError it caught —, appears once without a prefix);
// otherwise it returns. Costs one all-reduce of one integer when all succeeded.
void agree_on_errors(Communicator& comm, bool failed, const std::string& message, bool already_agreed = false);

// Runs `body` on every rank; an exception on any rank becomes the same CollectiveError on
// every rank (through agree_on_errors). `body` must not itself hang when another rank
// fails, so keep communication out of it (or make it collective-safe: communication that
// throws a CollectiveError on every rank when it fails, as SequenceParallelDilatedAttention).
void run_collectively(Communicator& comm, const std::function<void()>& body);

// The single-process communicator (rank 0 of 1, host buffers): collectives copy.
std::unique_ptr<Communicator> self_communicator();

// Whether this build has the MPI (NCCL) communicator.
bool mpi_compiled();
bool nccl_compiled();

// MPI. MpiSession initialises MPI (thread level FUNNELED: only the thread that called it
// communicates) unless it already is, and finalises it on destruction if it initialised it.
class MpiSession {
 public:
  MpiSession();  // without command-line arguments
  MpiSession(int& argc, char**& argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  [[maybe_unused]] bool initialized_here_ = false;  // unused in builds without MPI
};

// A communicator over all processes of the MPI job (a duplicate of MPI_COMM_WORLD, so its
// messages never mix with the application's own). Requires MPI to be initialised (an
// MpiSession alive). Throws Error when the build has no MPI.
std::unique_ptr<Communicator> mpi_world();

// NCCL over the ranks of `host` (an MPI communicator): rank 0 creates the unique id and
// broadcasts it over `host`; buffers live on CUDA device `device`. Throws Error when the
// build has no NCCL. `host` must outlive the returned communicator.
std::unique_ptr<Communicator> nccl_communicator(Communicator& host, int device);

}  // namespace longnet
