// Memory pools with statistics. Every tensor allocation goes through one:
//  - the host pool: 64-byte aligned blocks in power-of-two-ish size classes, kept on free
//    for reuse (an aligned arena), returned to the system by release_cached();
//  - one CUDA pool per device: CUDA's stream-ordered allocator (cudaMallocFromPoolAsync on
//    a cudaMemPool of our own) with a release threshold, so freed memory stays reserved
//    for the next allocation instead of going back to the driver at each synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "longnet/core/device.hpp"

namespace longnet {

struct MemoryStats {
  std::size_t in_use = 0;              // bytes handed out and not yet freed
  std::size_t peak_in_use = 0;         // high-water mark of in_use since the last reset
  std::size_t reserved = 0;            // bytes held from the system (in use + cached)
  std::size_t peak_reserved = 0;       // high-water mark of reserved since the last reset
  std::uint64_t allocations = 0;       // allocation calls since the last reset
  std::uint64_t live_allocations = 0;  // blocks currently handed out
};

class MemoryPool {
 public:
  virtual ~MemoryPool() = default;
  // Returns `bytes` bytes aligned to at least 256 bytes (64 on the host); bytes == 0 gives
  // a valid unique pointer. Throws Error when memory is exhausted.
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* pointer, std::size_t bytes) noexcept = 0;
  virtual MemoryStats stats() const = 0;
  // Resets the peaks to the current values and the allocation counter to 0.
  virtual void reset_stats() = 0;
  // Gives cached (free) memory back to the system.
  virtual void release_cached() = 0;
  virtual Device device() const = 0;
};

// The pool for `device` (created on first use; lives until the program ends).
MemoryPool& memory_pool(Device device);
inline MemoryPool& host_memory_pool() { return memory_pool(Device::cpu()); }

// CUDA pools: bytes kept reserved across synchronisations (cudaMemPoolAttrReleaseThreshold).
// Default: all of it (nothing is returned until release_cached()).
void set_cuda_release_threshold(int device, std::uint64_t bytes);

}  // namespace longnet
