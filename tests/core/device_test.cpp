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

}  // namespace
}  // namespace longnet
