// Tensor views and shape bookkeeping: every view shares storage and addresses the
// elements the same index would in a naive nested-array model.
#include "longnet/core/tensor.hpp"

#include <gtest/gtest.h>

#include <numeric>

namespace longnet {
namespace {

Tensor iota_tensor(const Shape& shape) {
  std::vector<float> values(static_cast<std::size_t>(shape_numel(shape)));
  std::iota(values.begin(), values.end(), 0.0f);
  return Tensor::from_vector(values, shape);
}

float at(const Tensor& t, std::initializer_list<std::int64_t> index) {
  std::int64_t offset = 0;
  int d = 0;
  for (std::int64_t i : index) offset += i * t.stride(d++);
  return t.data<float>()[offset];
}

TEST(Tensor, EmptyHasContiguousStrides) {
  const Tensor t = Tensor::empty({2, 3, 4}, DType::f32);
  EXPECT_EQ(t.strides(), (Strides{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_TRUE(t.defined());
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, RankZeroAndZeroSize) {
  Tensor scalar = Tensor::full({}, 3.5, DType::f64);
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_DOUBLE_EQ(scalar.item(), 3.5);
  const Tensor empty = Tensor::zeros({4, 0, 2}, DType::f32);
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_TRUE(empty.is_contiguous());
  EXPECT_EQ(empty.clone().numel(), 0);
}

TEST(Tensor, SliceSelectPermuteAddressTheRightElements) {
  const Tensor t = iota_tensor({3, 4, 5});
  const Tensor s = t.slice(1, 1, 4, 2);  // rows 1 and 3 of dim 1
  EXPECT_EQ(s.shape(), (Shape{3, 2, 5}));
  EXPECT_EQ(at(s, {2, 1, 4}), at(t, {2, 3, 4}));
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.storage(), t.storage());

  const Tensor sel = t.select(2, 3);
  EXPECT_EQ(sel.shape(), (Shape{3, 4}));
  EXPECT_EQ(at(sel, {1, 2}), at(t, {1, 2, 3}));

  const Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{5, 3, 4}));
  EXPECT_EQ(at(p, {4, 2, 1}), at(t, {2, 1, 4}));
  const Tensor tr = t.transpose(0, -1);
  EXPECT_EQ(at(tr, {1, 2, 0}), at(t, {0, 2, 1}));

  const Tensor u = t.unsqueeze(1);
  EXPECT_EQ(u.shape(), (Shape{3, 1, 4, 5}));
  EXPECT_TRUE(u.is_contiguous());
}

TEST(Tensor, ViewAndReshape) {
  const Tensor t = iota_tensor({2, 6});
  const Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 4}));
  EXPECT_EQ(v.storage(), t.storage());
  const Tensor transposed = t.transpose(0, 1);
  EXPECT_THROW((void)transposed.view({12}), Error);
  const Tensor r = transposed.reshape({12});
  EXPECT_NE(r.storage(), t.storage());
  const auto values = r.to_vector<float>();
  EXPECT_EQ(values[1], 6.0f);  // (0,1) of the transpose is (1,0) of t
  EXPECT_THROW((void)t.view({5, -1}), Error);
  EXPECT_THROW((void)t.view({-1, -1}), Error);
}

TEST(Tensor, AsStridedChecksBounds) {
  const Tensor t = iota_tensor({10});
  const Tensor every_third = t.as_strided({3}, {3}, 1);
  EXPECT_EQ(every_third.to_vector<float>(), (std::vector<float>{1, 4, 7}));
  EXPECT_THROW((void)t.as_strided({4}, {3}, 1), Error);
  EXPECT_THROW((void)t.as_strided({2}, {-1}, 5), Error);
}

TEST(Tensor, BadArgumentsGiveClearErrors) {
  const Tensor t = iota_tensor({3, 4});
  try {
    (void)t.slice(0, 2, 5);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 5)"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)t.select(1, 4), Error);
  EXPECT_THROW((void)t.permute({0, 0}), Error);
  EXPECT_THROW((void)t.size(2), Error);
  EXPECT_THROW((void)t.data<double>(), Error);
  EXPECT_THROW((void)Tensor::empty({-1}, DType::f32), Error);
  EXPECT_THROW((void)Tensor::from_vector(std::vector<float>(3), {2, 2}), Error);
  EXPECT_THROW((void)Tensor::empty({INT64_MAX, 4}, DType::f32), Error);
  try {
    (void)Tensor::empty({2}, DType::f32, Device::cuda(7));
    if (cuda_device_count() <= 7) FAIL() << "expected Error for a missing CUDA device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:7"), std::string::npos) << e.what();
  }
}

TEST(Tensor, DeviceAndDTypeParsing) {
  EXPECT_EQ(parse_device("cpu"), Device::cpu());
  EXPECT_EQ(parse_device("cuda"), Device::cuda(0));
  EXPECT_EQ(parse_device("cuda:3"), Device::cuda(3));
  EXPECT_THROW((void)parse_device("cuda:"), Error);
  EXPECT_THROW((void)parse_device("gpu"), Error);
  EXPECT_THROW((void)parse_device("cuda:-1"), Error);
  EXPECT_EQ(parse_dtype("bf16"), DType::bf16);
  EXPECT_THROW((void)parse_dtype("float"), Error);
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    DType parsed{};
    ASSERT_TRUE(parse_safetensors_dtype(safetensors_dtype_name(d), parsed));
    EXPECT_EQ(parsed, d);
    EXPECT_EQ(parse_dtype(dtype_name(d)), d);
  }
}

// Generated straight in each float dtype, the values are the f64 ones rounded once, as
// converting the f64 tensor rounds them (bitwise, including awkward shapes).
TEST(Tensor, RandomInEveryDtypeIsTheF64ValuesRounded) {
  for (const Shape& shape : {Shape{1}, Shape{3, 1, 7}, Shape{2, 4099}}) {
    const Tensor normal = Tensor::randn(shape, 17, DType::f64);
    const Tensor uniform = Tensor::uniform(shape, 17, -3, 5, DType::f64);
    for (const DType dtype : {DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(dtype_name(dtype));
      EXPECT_EQ(Tensor::randn(shape, 17, dtype).to_vector<double>(), normal.to(dtype).to_vector<double>());
      EXPECT_EQ(Tensor::uniform(shape, 17, -3, 5, dtype).to_vector<double>(), uniform.to(dtype).to_vector<double>());
    }
    EXPECT_EQ(Tensor::randn(shape, 17, DType::i32).to_vector<std::int32_t>(),
              normal.to(DType::i32).to_vector<std::int32_t>());
  }
}

TEST(Tensor, RandomIsSeededAndDeviceIndependent) {
  const Tensor a = Tensor::randn({1000}, 42);
  const Tensor b = Tensor::randn({1000}, 42);
  const Tensor c = Tensor::randn({1000}, 43);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
  const auto v = Tensor::randn({100000}, 5, DType::f64).to_vector<double>();
  double mean = 0, square = 0;
  for (double x : v) {
    mean += x;
    square += x * x;
  }
  mean /= static_cast<double>(v.size());
  square /= static_cast<double>(v.size());
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(square, 1.0, 0.02);
  for (double x : Tensor::uniform({1000}, 1, -2, 3, DType::f64).to_vector<double>()) {
    EXPECT_GE(x, -2);
    EXPECT_LT(x, 3);
  }
}

}  // namespace
}  // namespace longnet
