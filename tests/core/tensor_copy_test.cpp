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

}  // namespace
}  // namespace longnet
