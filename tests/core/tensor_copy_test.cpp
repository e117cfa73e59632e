// Copies between strides, dtypes and devices, checked element by element against a
// converted reference.
#include <gtest/gtest.h>

#include <cmath>

#include "longnet/core/tensor.hpp"

namespace longnet {
namespace {

const DType kAll[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};

double expected_after(double value, DType dtype) {
  switch (dtype) {
    case DType::f32:
      return static_cast<float>(value);
    case DType::f64:
      return value;
    case DType::bf16:
      return static_cast<double>(BFloat16(value));
    case DType::f16:
      return static_cast<double>(Float16(value));
    case DType::i32:
    case DType::i64:
      return std::trunc(value);
    case DType::u8:
      return value < 0 ? 0 : std::trunc(value);
  }
  return 0;
}

TEST(TensorCopy, EveryDTypePairConvertsLikeTheScalarConversion) {
  const Tensor source = Tensor::uniform({7, 5}, 3, -100, 100, DType::f64);
  const auto values = source.to_vector<double>();
  for (DType from : kAll) {
    const Tensor a = source.to(from);
    const auto a_values = a.to_vector<double>();
    for (std::size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(a_values[i], expected_after(values[i], from)) << dtype_name(from);
    }
    for (DType to : kAll) {
      const auto b_values = a.to(to).to_vector<double>();
      for (std::size_t i = 0; i < values.size(); ++i) {
        ASSERT_EQ(b_values[i], expected_after(a_values[i], to)) << dtype_name(from) << " -> " << dtype_name(to);
      }
    }
  }
}

TEST(TensorCopy, StridedSourceAndDestination) {
  const Tensor base = Tensor::randn({4, 6, 8}, 11);
  const Tensor src = base.permute({2, 0, 1}).slice(0, 1, 8, 3);  // (3, 4, 6), strided
  Tensor dst_base = Tensor::zeros({6, 3, 4, 2}, DType::f64);
  Tensor dst = dst_base.select(3, 1).permute({1, 2, 0});  // (3, 4, 6), strided
  dst.copy_from(src);
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      for (std::int64_t k = 0; k < 6; ++k) {
        const float s = base.data<float>()[j * 48 + k * 8 + (1 + 3 * i)];
        const double d = dst_base.data<double>()[k * 24 + i * 8 + j * 2 + 1];
        ASSERT_EQ(d, static_cast<double>(s));
      }
  // The other half of dst_base was not touched.
  for (std::int64_t n = 0; n < dst_base.numel(); n += 2) ASSERT_EQ(dst_base.data<double>()[n], 0.0);
}

TEST(TensorCopy, OverlappingViewsCopyAsIfThroughATemporary) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {6});
  Tensor head = t.slice(0, 0, 5);
  Tensor tail = t.slice(0, 1, 6);
  tail.copy_from(head);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 0, 1, 2, 3, 4}));
}

TEST(TensorCopy, ShapeMismatchIsAnError) {
  Tensor a = Tensor::zeros({2, 3}, DType::f32);
  const Tensor b = Tensor::zeros({3, 2}, DType::f32);
  EXPECT_THROW(a.copy_from(b), Error);
}

TEST(TensorCopy, FillAndSaturation) {
  Tensor t = Tensor::zeros({3, 4}, DType::f32);
  t.slice(1, 1, 3).fill(2.5);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 2.5, 2.5, 0, 0, 2.5, 2.5, 0, 0, 2.5, 2.5, 0}));
  const Tensor big = Tensor::from_vector(std::vector<double>{1e300, -1e300, NAN, 300, -5}, {5});
  EXPECT_EQ(big.to(DType::i32).to_vector<std::int32_t>(),
            (std::vector<std::int32_t>{INT32_MAX, INT32_MIN, 0, 300, -5}));
  EXPECT_EQ(big.to(DType::u8).to(DType::i32).to_vector<std::int32_t>(), (std::vector<std::int32_t>{255, 0, 0, 255, 0}));
}

TEST(TensorCopy, CudaRoundTrip) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Tensor host = Tensor::randn({5, 7, 3}, 21);
  for (DType dtype : kAll) {
    const Tensor device = host.to(Device::cuda(0), dtype);
    EXPECT_EQ(device.device(), Device::cuda(0));
    const auto expected = host.to(dtype).to_vector<double>();
    EXPECT_EQ(device.to_vector<double>(), expected) << dtype_name(dtype);
    // Strided on the device, converted on the device.
    const Tensor strided = device.permute({2, 0, 1}).to(DType::f64);
    EXPECT_EQ(strided.to_vector<double>(), host.to(dtype).permute({2, 0, 1}).to_vector<double>());
  }
  Tensor filled = Tensor::empty({100}, DType::bf16, Device::cuda(0));
  filled.fill(1.5);
  EXPECT_EQ(filled.to_vector<float>(), std::vector<float>(100, 1.5f));
}

// Views of one byte buffer at odd offsets and lengths (shorter than the kernel's 16-byte
// alignment head, spanning it, many vectors long), more than one launch's 64 ranges, a
// strided view (zeroed elementwise), an undefined tensor: exactly the viewed bytes become 0.
TEST(TensorCopy, ZeroTensorsOnCpuAndCudaZeroEachTensorAndNothingElse) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_device_count() > 0) devices.push_back(Device::cuda(0));
  for (const Device device : devices) {
    const std::int64_t size = 20000;
    Tensor buffer = Tensor::full({size}, 7, DType::u8, device);
    std::vector<bool> zeroed(size, false);
    std::vector<Tensor> tensors;
    auto add_view = [&](std::int64_t offset, std::int64_t length) {
      tensors.push_back(buffer.as_strided({length}, {1}, offset));
      for (std::int64_t i = offset; i < offset + length; ++i) zeroed[static_cast<std::size_t>(i)] = true;
    };
    add_view(1, 5);
    add_view(9, 30);
    add_view(64, 1024);
    add_view(2001, 9999);
    for (std::int64_t i = 0; i < 70; ++i) add_view(12100 + 37 * i, 1 + i % 19);  // two launches' worth
    tensors.push_back(buffer.as_strided({40}, {3}, 15000));                      // strided
    for (std::int64_t i = 0; i < 40; ++i) zeroed[static_cast<std::size_t>(15000 + 3 * i)] = true;
    tensors.emplace_back();  // undefined: skipped
    Tensor wide = Tensor::full({3, 100001}, -2.5, DType::f32, device);
    tensors.push_back(wide);
    zero_tensors(tensors);
    const std::vector<std::int32_t> bytes = buffer.to_vector<std::int32_t>();
    for (std::int64_t i = 0; i < size; ++i)
      ASSERT_EQ(bytes[static_cast<std::size_t>(i)], zeroed[static_cast<std::size_t>(i)] ? 0 : 7)
          << to_string(device) << " byte " << i;
    EXPECT_EQ(wide.to_vector<float>(), std::vector<float>(3 * 100001, 0.0f)) << to_string(device);
  }
}

}  // namespace
}  // namespace longnet
