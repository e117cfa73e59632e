// The host pool: 64-byte aligned blocks rounded up to size classes (powers of two up to
// 1 MiB, then multiples of 1 MiB), kept on free for reuse. Blocks of 256 MiB or more are
// returned to the system at once rather than cached.
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/memory_pool_internal.hpp"
#include "longnet/core/error.hpp"

namespace longnet::detail {
namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kLargestCached = 256 * kMiB;

std::size_t size_class(std::size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  if (bytes <= kMiB) {
    std::size_t size = kAlignment;
    while (size < bytes) size <<= 1;
    return size;
  }
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

class HostMemoryPool final : public MemoryPool {
 public:
  void* allocate(std::size_t bytes) override {
    const std::size_t size = size_class(bytes);
    const std::lock_guard<std::mutex> lock(mutex_);
    void* pointer = nullptr;
    auto cached = free_blocks_.find(size);
    if (cached != free_blocks_.end() && !cached->second.empty()) {
      pointer = cached->second.back();
      cached->second.pop_back();
      cached_bytes_ -= size;
    } else {
      pointer = std::aligned_alloc(kAlignment, size);
      if (pointer == nullptr) {
        throw Error(str("out of host memory allocating ", bytes, " bytes (in use ", stats_.in_use, ", reserved ",
                        stats_.reserved, ")"));
      }
      stats_.reserved += size;
      stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    }
    stats_.in_use += size;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    ++stats_.allocations;
    ++stats_.live_allocations;
    return pointer;
  }

  void deallocate(void* pointer, std::size_t bytes) noexcept override {
    if (pointer == nullptr) return;
    const std::size_t size = size_class(bytes);
    const std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use -= size;
    --stats_.live_allocations;
    if (size >= kLargestCached) {
      std::free(pointer);
      stats_.reserved -= size;
      return;
    }
    try {
      free_blocks_[size].push_back(pointer);
      cached_bytes_ += size;
    } catch (const std::bad_alloc&) {
      std::free(pointer);
      stats_.reserved -= size;
    }
  }

  MemoryStats stats() const override {
    const std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void reset_stats() override {
    const std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_in_use = stats_.in_use;
    stats_.peak_reserved = stats_.reserved;
    stats_.allocations = 0;
  }

  void release_cached() override {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_blocks_) {
      for (void* pointer : blocks) std::free(pointer);
      stats_.reserved -= size * blocks.size();
    }
    free_blocks_.clear();
    cached_bytes_ = 0;
  }

  Device device() const override { return Device::cpu(); }

 private:
  mutable std::mutex mutex_;
  MemoryStats stats_;
  std::size_t cached_bytes_ = 0;
  std::map<std::size_t, std::vector<void*>> free_blocks_;
};

}  // namespace

MemoryPool& host_pool_instance() {
  // Never destroyed: tensors in other static objects may be freed during exit.
  static auto* pool = new HostMemoryPool();
  return *pool;
}

}  // namespace longnet::detail
