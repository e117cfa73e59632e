// Device queries work with and without a GPU (they never throw).
#include "longnet/core/device.hpp"

#include <gtest/gtest.h>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

TEST(Device, QueryNeverThrows) {
  std::string why;
  const auto devices = cuda_devices(&why);
  EXPECT_EQ(static_cast<int>(devices.size()), cuda_device_count());
  if (devices.empty()) {
    EXPECT_FALSE(why.empty());
    EXPECT_THROW(require_device_available(Device::cuda(0)), Error);
  } else {
    EXPECT_FALSE(devices[0].name.empty());
    EXPECT_GT(devices[0].total_memory, 0u);
    EXPECT_NO_THROW(require_device_available(Device::cuda(0)));
  }
  EXPECT_NO_THROW(require_device_available(Device::cpu()));
  EXPECT_EQ(to_string(Device::cuda(2)), "cuda:2");
}

// cuda_device_info: the kept copy of cuda_devices()'s entry, an error for a missing index.
TEST(Device, DeviceInfoIsTheListsEntry) {
  const auto devices = cuda_devices();
  for (const CudaDeviceInfo& d : devices) {
    const CudaDeviceInfo& kept = cuda_device_info(d.index);
    EXPECT_EQ(kept.name, d.name);
    EXPECT_EQ(kept.compute_major, d.compute_major);
    EXPECT_EQ(&cuda_device_info(d.index), &kept);  // queried once
  }
  try {
    cuda_device_info(static_cast<int>(devices.size()) + 7);
    FAIL() << "a missing device was found";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet
