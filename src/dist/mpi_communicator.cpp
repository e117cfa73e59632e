// The MPI communicator (host buffers): each operation is the MPI call of the same name
// on a duplicate of MPI_COMM_WORLD (or a split of it) whose error handler is
// MPI_ERRORS_RETURN, so an MPI failure becomes a longnet::Error (through LONGNET_CHECK)
// instead of aborting the job. exchange() posts every receive, then every send, without
// blocking (MPI_Irecv/MPI_Isend) and waits for all of them.
#include <mpi.h>

#include "core/status_mpi.hpp"
#include "dist/communicator_checks.hpp"
#include "longnet/dist/communicator.hpp"

namespace longnet {
namespace {

using detail::MpiCall;

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::bf16:
    case DType::f16:
      return MPI_UINT16_T;  // moved as bits; MPI cannot reduce them
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
  }
  throw Error("unknown dtype");
}

MPI_Datatype mpi_reduction_type(DType dtype) {
  require(dtype == DType::f32 || dtype == DType::f64 || dtype == DType::i32 || dtype == DType::i64,
          "reduction on dtype ", dtype_name(dtype), ": MPI reductions take f32, f64, i32 or i64 (convert first)");
  return mpi_type(dtype);
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : MPI_MAX; }

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction).
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    LONGNET_CHECK(MpiCall{MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN)});
    LONGNET_CHECK(MpiCall{MPI_Comm_rank(comm_, &rank_)});
    LONGNET_CHECK(MpiCall{MPI_Comm_size(comm_, &size_)});
  }
  ~MpiCommunicator() override {
    if (!mpi_finalized()) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "mpi"; }

  void all_reduce(const Tensor& buffer, ReduceOp op) override {
    detail::require_buffer(*this, buffer, "buffer");
    const MPI_Datatype type = mpi_reduction_type(buffer.dtype());
    const int count = detail::int_count(buffer.numel(), "buffer");
    LONGNET_CHECK(MpiCall{MPI_Allreduce(MPI_IN_PLACE, buffer.data(), count, type, mpi_op(op), comm_)});
  }

  void all_gather(const Tensor& input, const Tensor& output) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(output, input.numel(), "output", size_);
    const int count = detail::int_count(input.numel(), "input");
    detail::int_count(output.numel(), "output");
    const MPI_Datatype type = mpi_type(input.dtype());
    LONGNET_CHECK(MpiCall{MPI_Allgather(input.data(), count, type, output.data(), count, type, comm_)});
  }

  void all_gather_v(const Tensor& input, const Tensor& output, const std::vector<std::int64_t>& counts) override {
    detail::require_same_kind(*this, input, output);
    detail::require_counts(*this, input, output, counts);
    detail::int_count(output.numel(), "output");
    std::vector<int> sizes, offsets;
    int at = 0;
    for (std::int64_t c : counts) {
      sizes.push_back(static_cast<int>(c));
      offsets.push_back(at);
      at += static_cast<int>(c);
    }
    const MPI_Datatype type = mpi_type(input.dtype());
    LONGNET_CHECK(MpiCall{MPI_Allgatherv(input.data(), sizes[static_cast<std::size_t>(rank_)], type, output.data(),
                                         sizes.data(), offsets.data(), type, comm_)});
  }

  void reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(input, output.numel(), "input", size_);
    const MPI_Datatype type = mpi_reduction_type(input.dtype());
    detail::int_count(input.numel(), "input");
    const int count = detail::int_count(output.numel(), "output");
    LONGNET_CHECK(MpiCall{MPI_Reduce_scatter_block(input.data(), output.data(), count, type, mpi_op(op), comm_)});
  }

  void broadcast(const Tensor& buffer, int root) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_rank(*this, root, "root");
    const int count = detail::int_count(buffer.numel(), "buffer");
    LONGNET_CHECK(MpiCall{MPI_Bcast(buffer.data(), count, mpi_type(buffer.dtype()), root, comm_)});
  }

  void send(const Tensor& buffer, int peer, int tag) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_peer(*this, peer);
    const int count = detail::int_count(buffer.numel(), "buffer");
    LONGNET_CHECK(MpiCall{MPI_Send(buffer.data(), count, mpi_type(buffer.dtype()), peer, tag, comm_)});
  }

  void recv(const Tensor& buffer, int peer, int tag) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_peer(*this, peer);
    const int count = detail::int_count(buffer.numel(), "buffer");
    LONGNET_CHECK(
        MpiCall{MPI_Recv(buffer.data(), count, mpi_type(buffer.dtype()), peer, tag, comm_, MPI_STATUS_IGNORE)});
  }

  void exchange(const std::vector<Transfer>& sends, const std::vector<Transfer>& receives) override {
    for (const Transfer& t : sends) check_transfer(t);
    for (const Transfer& t : receives) check_transfer(t);
    std::vector<MPI_Request> requests;
    requests.reserve(sends.size() + receives.size());
    for (const Transfer& t : receives) {
      requests.emplace_back();
      LONGNET_CHECK(MpiCall{MPI_Irecv(t.buffer.data(), static_cast<int>(t.buffer.numel()), mpi_type(t.buffer.dtype()),
                                      t.peer, t.tag, comm_, &requests.back())});
    }
    for (const Transfer& t : sends) {
      requests.emplace_back();
      LONGNET_CHECK(MpiCall{MPI_Isend(t.buffer.data(), static_cast<int>(t.buffer.numel()), mpi_type(t.buffer.dtype()),
                                      t.peer, t.tag, comm_, &requests.back())});
    }
    std::vector<MPI_Status> statuses(requests.size());
    LONGNET_CHECK(MpiCall{MPI_Waitall(static_cast<int>(requests.size()), requests.data(), statuses.data())});
  }

  void barrier() override { LONGNET_CHECK(MpiCall{MPI_Barrier(comm_)}); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm part = MPI_COMM_NULL;
    LONGNET_CHECK(MpiCall{MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &part)});
    if (part == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(part);
  }

 private:
  void check_transfer(const Transfer& t) const {
    detail::require_buffer(*this, t.buffer, "transfer buffer");
    detail::require_peer(*this, t.peer);
    detail::int_count(t.buffer.numel(), "transfer buffer");
    require(t.tag >= 0, "tag = ", t.tag, ": must be >= 0");
  }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

MpiSession::MpiSession() {
  int initialized = 0;
  LONGNET_CHECK(MpiCall{MPI_Initialized(&initialized)});
  if (initialized) return;
  int provided = 0;
  LONGNET_CHECK(MpiCall{MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided)});
  initialized_here_ = true;
}

MpiSession::MpiSession(int& argc, char**& argv) {
  int initialized = 0;
  LONGNET_CHECK(MpiCall{MPI_Initialized(&initialized)});
  if (initialized) return;
  int provided = 0;
  LONGNET_CHECK(MpiCall{MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided)});
  initialized_here_ = true;
}

MpiSession::~MpiSession() {
  if (initialized_here_ && !mpi_finalized()) MPI_Finalize();
}

std::unique_ptr<Communicator> mpi_world() {
  int initialized = 0;
  LONGNET_CHECK(MpiCall{MPI_Initialized(&initialized)});
  require(initialized != 0 && !mpi_finalized(),
          "mpi_world: MPI is not initialised (keep a longnet::MpiSession alive while communicating)");
  MPI_Comm world = MPI_COMM_NULL;
  LONGNET_CHECK(MpiCall{MPI_Comm_dup(MPI_COMM_WORLD, &world)});
  return std::make_unique<MpiCommunicator>(world);
}

}  // namespace longnet
