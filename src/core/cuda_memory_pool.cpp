// The CUDA pools: one cudaMemPool per device (ours, so its statistics are only our
// tensors), allocations with cudaMallocFromPoolAsync and frees with cudaFreeAsync on the
// calling thread's current stream. Built only with the CUDA backend; without it, asking
// for a CUDA pool is an error.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/memory_pool_internal.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/stream.hpp"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "core/status_cuda.hpp"
#endif

namespace longnet::detail {

#ifdef LONGNET_WITH_CUDA
namespace {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    LONGNET_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) LONGNET_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

class CudaMemoryPool final : public MemoryPool {
 public:
  explicit CudaMemoryPool(int device) : device_(device) {
    DeviceGuard guard(device);
    cudaMemPoolProps properties{};
    properties.allocType = cudaMemAllocationTypePinned;
    properties.location.type = cudaMemLocationTypeDevice;
    properties.location.id = device;
    LONGNET_CHECK(cudaMemPoolCreate(&pool_, &properties));
    std::uint64_t keep_everything = UINT64_MAX;
    LONGNET_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_everything));
    // Memory freed on one stream goes to another only once the free has completed or the
    // other has waited for it, never by a wait the pool inserts itself: such a wait would
    // silently serialise streams meant to overlap (nn::WeightGradientOverlap).
    int no_inserted_waits = 0;
    LONGNET_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolReuseAllowInternalDependencies, &no_inserted_waits));
  }

  void* allocate(std::size_t bytes) override {
    DeviceGuard guard(device_);
    void* pointer = nullptr;
    const auto stream = static_cast<cudaStream_t>(current_stream(device_).handle);
    const cudaError_t status = cudaMallocFromPoolAsync(&pointer, std::max<std::size_t>(bytes, 1), pool_, stream);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      const MemoryStats now = stats();
      throw Error(str("out of CUDA memory on cuda:", device_, " allocating ", bytes, " bytes (in use ", now.in_use,
                      ", reserved ", now.reserved, "; ", cudaGetErrorString(status), ")"));
    }
    const std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use += bytes;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    ++stats_.allocations;
    ++stats_.live_allocations;
    return pointer;
  }

  void deallocate(void* pointer, std::size_t bytes) noexcept override {
    if (pointer == nullptr) return;
    int previous = 0;
    (void)cudaGetDevice(&previous);
    (void)cudaSetDevice(device_);
    (void)cudaFreeAsync(pointer, static_cast<cudaStream_t>(current_stream(device_).handle));
    (void)cudaSetDevice(previous);
    const std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use -= bytes;
    --stats_.live_allocations;
  }

  MemoryStats stats() const override {
    MemoryStats out;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      out = stats_;
    }
    std::uint64_t reserved = 0;
    std::uint64_t reserved_high = 0;
    (void)cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved);
    (void)cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &reserved_high);
    out.reserved = reserved;
    out.peak_reserved = reserved_high;
    return out;
  }

  void reset_stats() override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stats_.peak_in_use = stats_.in_use;
      stats_.allocations = 0;
    }
    std::uint64_t zero = 0;
    (void)cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &zero);
  }

  void release_cached() override {
    DeviceGuard guard(device_);
    LONGNET_CHECK(cudaDeviceSynchronize());
    LONGNET_CHECK(cudaMemPoolTrimTo(pool_, 0));
  }

  Device device() const override { return Device::cuda(device_); }

  void set_release_threshold(std::uint64_t bytes) {
    LONGNET_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &bytes));
  }

 private:
  int device_;
  cudaMemPool_t pool_ = nullptr;
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

std::mutex& pools_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::vector<CudaMemoryPool*>& pools() {
  static auto* instances = new std::vector<CudaMemoryPool*>();  // never destroyed (see host pool)
  return *instances;
}

CudaMemoryPool& pool_for(int device) {
  require_device_available(Device::cuda(device), "device");
  const std::lock_guard<std::mutex> lock(pools_mutex());
  auto& all = pools();
  if (all.size() <= static_cast<std::size_t>(device)) all.resize(static_cast<std::size_t>(device) + 1, nullptr);
  if (all[static_cast<std::size_t>(device)] == nullptr) {
    all[static_cast<std::size_t>(device)] = new CudaMemoryPool(device);
  }
  return *all[static_cast<std::size_t>(device)];
}

}  // namespace

MemoryPool& cuda_pool_instance(int device) { return pool_for(device); }
void set_cuda_pool_release_threshold(int device, std::uint64_t bytes) { pool_for(device).set_release_threshold(bytes); }

#else

MemoryPool& cuda_pool_instance(int device) {
  throw Error(str("device = cuda:", device, ": this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)"));
}
void set_cuda_pool_release_threshold(int device, std::uint64_t) { (void)cuda_pool_instance(device); }

#endif

}  // namespace longnet::detail
