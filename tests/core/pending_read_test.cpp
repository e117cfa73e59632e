// PendingRead: the values a read saw, on the CPU and on CUDA, and on CUDA that the read
// waits only for the work queued before it (what a training step queued one ahead needs).
#include "longnet/core/pending_read.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "longnet/core/device.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/stream.hpp"

namespace longnet {
namespace {

std::vector<Device> devices() {
  std::vector<Device> all{Device::cpu()};
  if (cuda_device_count() > 0) all.push_back(Device::cuda(0));
  return all;
}

TEST(PendingRead, GivesTheValuesAsTheyWereWhenRead) {
  for (const Device device : devices()) {
    for (const DType dtype : {DType::f64, DType::f32, DType::bf16, DType::i64}) {
      SCOPED_TRACE(str(to_string(device), " ", dtype_name(dtype)));
      const Tensor source = Tensor::from_vector<double>({1, -2, 3, 4, 5, -6}, {2, 3}).to(device, dtype);
      const PendingRead read(source);
      Tensor changed = source;  // the same storage, changed after the read was queued
      changed.fill(9);
      const Tensor& values = read.get();
      EXPECT_EQ(values.device(), Device::cpu());
      EXPECT_EQ(values.dtype(), dtype);
      EXPECT_EQ(values.shape(), (Shape{2, 3}));
      EXPECT_EQ(values.to_vector<double>(), (std::vector<double>{1, -2, 3, 4, 5, -6}));
      EXPECT_EQ(&read.get(), &values);  // read once
      EXPECT_EQ(source.to_vector<double>(), std::vector<double>(6, 9));
    }
  }
}

TEST(PendingRead, ReadsStridedViewsAndOneElement) {
  for (const Device device : devices()) {
    SCOPED_TRACE(to_string(device));
    const Tensor matrix = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).to(device);
    const PendingRead column(matrix.slice(1, 1, 2));  // (2, 1), stride 3
    EXPECT_EQ(column.get().to_vector<double>(), (std::vector<double>{2, 5}));
    const PendingRead one(matrix.slice(0, 1, 2).slice(1, 2, 3));
    EXPECT_EQ(one.item(), 6.0);
  }
}

TEST(PendingRead, MisuseIsAClearError) {
  const auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const PendingRead nothing;
  EXPECT_FALSE(nothing.defined());
  EXPECT_NE(message_of([&] { (void)nothing.get(); }).find("nothing was read"), std::string::npos);
  const PendingRead two(Tensor::zeros({2}, DType::f32));
  EXPECT_NE(message_of([&] { (void)two.item(); }).find("2 elements, must have exactly 1"), std::string::npos);
  EXPECT_NE(message_of([] { PendingRead{Tensor()}; }).find("source tensor is undefined"), std::string::npos);
}

// The point of PendingRead: work queued after the read does not delay it. ~20 ms of copies
// (100 x 2 x 128 MiB on an H100) are queued behind the read; when get() returns they are
// still running, where a read through Tensor::item() would have waited for all of them.
TEST(PendingReadCuda, WaitsOnlyForTheWorkQueuedBeforeIt) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Device gpu = Device::cuda(0);
  const Tensor value = Tensor::from_vector<double>({2.5}, {1}).to(gpu);
  Tensor a = Tensor::zeros({32 << 20}, DType::f32, gpu), b = Tensor::zeros({32 << 20}, DType::f32, gpu);
  synchronize_device(0);
  const PendingRead read(value);
  for (int i = 0; i < 100; ++i) {
    b.copy_from(a);
    a.copy_from(b);
  }
  const StreamEvent after = StreamEvent::record(current_stream(0));
  EXPECT_EQ(read.item(), 2.5);
  EXPECT_FALSE(after.done()) << "the read waited for the copies queued after it";
  after.wait();
  EXPECT_TRUE(after.done());
  // Dropped unread, a read waits for its copy before its page-locked block is reused.
  for (int i = 0; i < 8; ++i) {
    const PendingRead dropped(value);
  }
  EXPECT_EQ(PendingRead(value).item(), 2.5);
}

}  // namespace
}  // namespace longnet
