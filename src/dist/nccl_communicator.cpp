// The NCCL communicator (buffers on one CUDA device): rank 0 of the host (MPI)
// communicator creates NCCL's unique id and broadcasts it over the host; every operation
// is enqueued on the device's current stream (longnet::current_stream), so it is ordered
// with the kernels before and after it and completes asynchronously, in stream order.
// all_gather_v is a group of broadcasts (NCCL has no all-gather-v); exchange() and
// reduce-scatter are NCCL's own; split() splits both the NCCL and the host communicator.
// Errors: status codes through LONGNET_CHECK (NCCL and CUDA); error agreement runs on the host.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "core/status_cuda.hpp"
#include "core/status_nccl.hpp"
#include "dist/communicator_checks.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/communicator.hpp"

namespace longnet {
namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  throw Error("unknown dtype");
}

ncclDataType_t nccl_reduction_type(DType dtype) {
  require(dtype != DType::u8, "reduction on dtype u8: NCCL reductions take floating types, i32 or i64");
  return nccl_type(dtype);
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

// Makes `device` current for a scope (NCCL calls and stream use need it).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    LONGNET_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) LONGNET_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, Communicator& host, std::unique_ptr<Communicator> owned_host)
      : comm_(comm), device_(device), host_(&host), owned_host_(std::move(owned_host)) {
    LONGNET_CHECK(ncclCommUserRank(comm_, &rank_));
    LONGNET_CHECK(ncclCommCount(comm_, &size_));
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }
  std::string name() const override { return "nccl"; }
  Communicator& host() override { return *host_; }

  void all_reduce(const Tensor& buffer, ReduceOp op) override {
    detail::require_buffer(*this, buffer, "buffer");
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclAllReduce(buffer.data(), buffer.data(), static_cast<std::size_t>(buffer.numel()),
                                nccl_reduction_type(buffer.dtype()), nccl_op(op), comm_, stream()));
  }

  void all_gather(const Tensor& input, const Tensor& output) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(output, input.numel(), "output", size_);
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclAllGather(input.data(), output.data(), static_cast<std::size_t>(input.numel()),
                                nccl_type(input.dtype()), comm_, stream()));
  }

  void all_gather_v(const Tensor& input, const Tensor& output, const std::vector<std::int64_t>& counts) override {
    detail::require_same_kind(*this, input, output);
    detail::require_counts(*this, input, output, counts);
    const DeviceScope scope(device_);
    const ncclDataType_t type = nccl_type(input.dtype());
    auto* out = static_cast<char*>(output.data());
    std::size_t at = 0;
    LONGNET_CHECK(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      const auto count = static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]);
      if (count > 0) {
        LONGNET_CHECK(ncclBroadcast(input.data(), out + at * input.element_size(), count, type, r, comm_, stream()));
      }
      at += count;
    }
    LONGNET_CHECK(ncclGroupEnd());
  }

  void reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(input, output.numel(), "input", size_);
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclReduceScatter(input.data(), output.data(), static_cast<std::size_t>(output.numel()),
                                    nccl_reduction_type(input.dtype()), nccl_op(op), comm_, stream()));
  }

  void broadcast(const Tensor& buffer, int root) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_rank(*this, root, "root");
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclBroadcast(buffer.data(), buffer.data(), static_cast<std::size_t>(buffer.numel()),
                                nccl_type(buffer.dtype()), root, comm_, stream()));
  }

  void send(const Tensor& buffer, int peer, int) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_peer(*this, peer);
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclSend(buffer.data(), static_cast<std::size_t>(buffer.numel()), nccl_type(buffer.dtype()), peer,
                           comm_, stream()));
  }

  void recv(const Tensor& buffer, int peer, int) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_peer(*this, peer);
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclRecv(buffer.data(), static_cast<std::size_t>(buffer.numel()), nccl_type(buffer.dtype()), peer,
                           comm_, stream()));
  }

  void exchange(const std::vector<Transfer>& sends, const std::vector<Transfer>& receives) override {
    for (const Transfer& t : sends) check_transfer(t);
    for (const Transfer& t : receives) check_transfer(t);
    const DeviceScope scope(device_);
    LONGNET_CHECK(ncclGroupStart());
    for (const Transfer& t : receives) {
      LONGNET_CHECK(ncclRecv(t.buffer.data(), static_cast<std::size_t>(t.buffer.numel()), nccl_type(t.buffer.dtype()),
                             t.peer, comm_, stream()));
    }
    for (const Transfer& t : sends) {
      LONGNET_CHECK(ncclSend(t.buffer.data(), static_cast<std::size_t>(t.buffer.numel()), nccl_type(t.buffer.dtype()),
                             t.peer, comm_, stream()));
    }
    LONGNET_CHECK(ncclGroupEnd());
  }

  // An all-reduce of one element, then the stream is drained: every rank has reached it.
  void barrier() override {
    const Tensor token = Tensor::zeros({1}, DType::f32, device());
    all_reduce(token, ReduceOp::sum);
    const DeviceScope scope(device_);
    LONGNET_CHECK(cudaStreamSynchronize(stream()));
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> host_part = host_->split(color, key);
    const DeviceScope scope(device_);
    ncclComm_t part = nullptr;
    LONGNET_CHECK(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &part, nullptr));
    if (part == nullptr) return nullptr;
    Communicator& host_ref = *host_part;
    return std::make_unique<NcclCommunicator>(part, device_, host_ref, std::move(host_part));
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(current_stream(device_).handle); }

  void check_transfer(const Transfer& t) const {
    detail::require_buffer(*this, t.buffer, "transfer buffer");
    detail::require_peer(*this, t.peer);
  }

  ncclComm_t comm_;
  int device_;
  Communicator* host_;
  std::unique_ptr<Communicator> owned_host_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> nccl_communicator(Communicator& host, int device) {
  require(host.device().is_cpu(), "nccl_communicator: the host communicator (", host.name(),
          ") must work on host memory: NCCL's unique id travels over it");
  // Rank 0's id creation may fail; every rank must then fail, not wait for the broadcast.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  run_collectively(host, [&] {
    require_device_available(Device::cuda(device), "device");
    if (host.rank() == 0) LONGNET_CHECK(ncclGetUniqueId(&id));
  });
  host.broadcast(Tensor::from_blob(&id, {static_cast<std::int64_t>(sizeof(id))}, DType::u8), 0);
  const DeviceScope scope(device);
  ncclComm_t comm = nullptr;
  LONGNET_CHECK(ncclCommInitRank(&comm, host.size(), id, host.rank()));
  return std::make_unique<NcclCommunicator>(comm, device, host, nullptr);
}

}  // namespace longnet
