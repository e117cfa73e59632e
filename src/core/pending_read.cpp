// Reads that wait only for the work queued before them (pending_read.hpp).
#include "longnet/core/pending_read.hpp"

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "longnet/core/error.hpp"
#include "longnet/core/stream.hpp"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "core/status_cuda.hpp"
#endif

namespace longnet {
namespace {

#ifdef LONGNET_WITH_CUDA
// Page-locked blocks for the reads, kept for reuse: allocating one (cudaHostAlloc) costs
// far more than a read, and freeing one (cudaFreeHost) waits for the whole device. The
// reads are small (a loss, a norm), so the blocks stay few.
class PinnedBlocks {
 public:
  static PinnedBlocks& instance() {
    static PinnedBlocks* blocks = new PinnedBlocks;  // never destroyed: used until the process ends
    return *blocks;
  }
  // A block of at least `bytes`, and its size.
  std::pair<void*, std::size_t> acquire(std::size_t bytes) {
    std::size_t size = 64;
    while (size < bytes) size <<= 1;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto found = free_.find(size);
      if (found != free_.end()) {
        void* block = found->second;
        free_.erase(found);
        return {block, size};
      }
    }
    void* block = nullptr;
    LONGNET_CHECK(cudaHostAlloc(&block, size, cudaHostAllocPortable));
    return {block, size};
  }
  void release(void* block, std::size_t size) {
    const std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(size, block);
  }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
};
#endif

}  // namespace

struct PendingRead::State {
  std::mutex mutex;
  Tensor host;  // the values, once read
#ifdef LONGNET_WITH_CUDA
  Tensor source;  // the device memory the copy reads (contiguous), alive until it has
  void* pinned = nullptr;
  std::size_t pinned_size = 0;
  StreamEvent copied;
#endif

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
#ifdef LONGNET_WITH_CUDA
    if (pinned != nullptr) {
      // Not read: the copy may still be writing the block.
      try {
        copied.wait();
      } catch (...) {  // a failed device: the block is not reused
        return;
      }
      PinnedBlocks::instance().release(pinned, pinned_size);
    }
#endif
  }
};

PendingRead::PendingRead(const Tensor& source) : state_(std::make_shared<State>()) {
  require(source.defined(), "PendingRead: the source tensor is undefined");
  if (source.device().is_cpu()) {
    state_->host = source.clone();  // the source may change after the read
    return;
  }
#ifdef LONGNET_WITH_CUDA
  const DeviceGuard on_device(source.device());
  State& s = *state_;
  s.source = source.contiguous();
  const auto [block, size] = PinnedBlocks::instance().acquire(s.source.nbytes());
  s.pinned = block;
  s.pinned_size = size;
  const Stream stream = current_stream(source.device().index);
  LONGNET_CHECK(cudaMemcpyAsync(s.pinned, s.source.data(), s.source.nbytes(), cudaMemcpyDeviceToHost,
                                static_cast<cudaStream_t>(stream.handle)));
  s.copied = StreamEvent::record(stream);
#else
  throw Error("PendingRead: a CUDA tensor exists in a build without CUDA");
#endif
}

const Tensor& PendingRead::get() const {
  require(state_ != nullptr, "PendingRead::get(): nothing was read (a default-constructed PendingRead)");
  State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mutex);
#ifdef LONGNET_WITH_CUDA
  if (s.pinned != nullptr) {
    s.copied.wait();
    Tensor host = Tensor::empty(s.source.shape(), s.source.dtype(), Device::cpu());
    std::memcpy(host.data(), s.pinned, host.nbytes());
    PinnedBlocks::instance().release(s.pinned, s.pinned_size);
    s.pinned = nullptr;
    s.source = Tensor();
    s.host = std::move(host);
  }
#endif
  return s.host;
}

double PendingRead::item() const { return get().item(); }

}  // namespace longnet
