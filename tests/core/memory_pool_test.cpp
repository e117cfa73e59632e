// Memory pool statistics: in use, peak, reserved, allocation counts, reset, release.
#include "longnet/core/memory_pool.hpp"

#include <gtest/gtest.h>

#include "longnet/core/tensor.hpp"

namespace longnet {
namespace {

void check_pool_statistics(Device device) {
  MemoryPool& pool = memory_pool(device);
  pool.release_cached();
  pool.reset_stats();
  const MemoryStats before = pool.stats();
  EXPECT_EQ(before.allocations, 0u);
  EXPECT_EQ(before.peak_in_use, before.in_use);
  {
    const Tensor a = Tensor::empty({1 << 20}, DType::f32, device);  // 4 MiB
    const Tensor b = Tensor::empty({1 << 18}, DType::f32, device);  // 1 MiB
    const MemoryStats during = pool.stats();
    EXPECT_GE(during.in_use, before.in_use + 5 * (1u << 20));
    EXPECT_EQ(during.live_allocations, before.live_allocations + 2);
    EXPECT_EQ(during.allocations, 2u);
    EXPECT_GE(during.reserved, during.in_use);
    EXPECT_GE(during.peak_in_use, during.in_use);
  }
  const MemoryStats after = pool.stats();
  EXPECT_EQ(after.in_use, before.in_use);
  EXPECT_EQ(after.live_allocations, before.live_allocations);
  EXPECT_GE(after.peak_in_use, before.in_use + 5 * (1u << 20));
  pool.reset_stats();
  EXPECT_EQ(pool.stats().peak_in_use, pool.stats().in_use);
  EXPECT_EQ(pool.stats().allocations, 0u);
  pool.release_cached();
  EXPECT_LE(pool.stats().reserved, after.reserved);
}

TEST(MemoryPool, HostStatistics) { check_pool_statistics(Device::cpu()); }

TEST(MemoryPool, HostReusesFreedBlocks) {
  MemoryPool& pool = host_memory_pool();
  pool.release_cached();
  void* first = pool.allocate(1000);
  pool.deallocate(first, 1000);
  const std::size_t reserved = pool.stats().reserved;
  void* second = pool.allocate(900);  // same size class
  EXPECT_EQ(first, second);
  EXPECT_EQ(pool.stats().reserved, reserved);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(second) % 64, 0u);
  pool.deallocate(second, 900);
  void* zero = pool.allocate(0);
  EXPECT_NE(zero, nullptr);
  pool.deallocate(zero, 0);
}

TEST(MemoryPool, CudaStatistics) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  check_pool_statistics(Device::cuda(0));
}

TEST(MemoryPool, CudaOutOfMemoryIsAnError) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  EXPECT_THROW((void)Tensor::empty({std::int64_t{1} << 40}, DType::f32, Device::cuda(0)), Error);
  const Tensor still_fine = Tensor::zeros({16}, DType::f32, Device::cuda(0));
  EXPECT_EQ(still_fine.to_vector<float>(), std::vector<float>(16, 0.0f));
}

TEST(MemoryPool, CudaPoolWithoutDeviceIsAnError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_THROW((void)memory_pool(Device::cuda(0)), Error);
}

}  // namespace
}  // namespace longnet
