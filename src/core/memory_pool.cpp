// memory_pool(Device): the host pool or the CUDA pool of a device.
#include "longnet/core/memory_pool.hpp"

#include "core/memory_pool_internal.hpp"
#include "longnet/core/error.hpp"

namespace longnet {

MemoryPool& memory_pool(Device device) {
  if (device.is_cpu()) return detail::host_pool_instance();
  return detail::cuda_pool_instance(device.index);
}

void set_cuda_release_threshold(int device, std::uint64_t bytes) {
  detail::set_cuda_pool_release_threshold(device, bytes);
}

}  // namespace longnet
