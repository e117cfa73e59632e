// The pool instances behind memory_pool(Device).
#pragma once

#include "longnet/core/memory_pool.hpp"

namespace longnet::detail {

MemoryPool& host_pool_instance();
MemoryPool& cuda_pool_instance(int device);  // throws Error without CUDA
void set_cuda_pool_release_threshold(int device, std::uint64_t bytes);

}  // namespace longnet::detail
