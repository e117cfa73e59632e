// Bad input to the attention API: each gives an Error whose message names the argument,
// the value and the rule (DESIGN 6).
#include <gtest/gtest.h>

#include "longnet/attention/dilated_attention.hpp"

namespace longnet {
namespace {

void expect_error(const std::function<void()>& call, const std::string& fragment) {
  try {
    call();
    FAIL() << "expected an Error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

DilatedAttentionConfig good() {
  DilatedAttentionConfig c;
  c.segment_lengths = {8, 16};
  c.dilation_rates = {1, 2};
  return c;
}

TEST(AttentionErrors, ConfigValidation) {
  DilatedAttentionConfig c = good();
  c.segment_lengths.clear();
  expect_error([&] { c.validate(); }, "segment_lengths is empty");
  c = good();
  c.dilation_rates = {1};
  expect_error([&] { c.validate(); }, "same length");
  c = good();
  c.dilation_rates = {1, 0};
  expect_error([&] { c.validate(); }, "dilation_rates[1] = 0: must be >= 1");
  c = good();
  c.dilation_rates = {9, 2};
  expect_error([&] { c.validate(); }, "dilation_rates[0] = 9: must be <= segment_lengths[0] = 8");
  c = good();
  c.segment_lengths = {0, 16};
  expect_error([&] { c.validate(); }, "segment_lengths[0] = 0");
  c = good();
  c.scale = std::numeric_limits<double>::infinity();
  expect_error([&] { c.validate(); }, "scale = inf");
  expect_error([] { (void)parse_dilated_mode("dense"); }, "must be longnet or head_groups");
}

TEST(AttentionErrors, TensorValidation) {
  const DilatedAttentionConfig c = good();
  const Tensor q = Tensor::randn({1, 32, 4, 8}, 1);
  const Tensor k = Tensor::randn({1, 32, 2, 8}, 2);
  const Tensor v = Tensor::randn({1, 32, 2, 8}, 3);
  expect_error([&] { dilated_attention_forward(c, q, k, Tensor::randn({1, 32, 2, 7}, 3)); }, "must be equal");
  expect_error(
      [&] {
        dilated_attention_forward(c, q, Tensor::randn({1, 31, 2, 8}, 1), Tensor::randn({1, 31, 2, 8}, 1));
      },
      "seq_len");
  expect_error(
      [&] {
        dilated_attention_forward(c, q, Tensor::randn({1, 32, 3, 8}, 1), Tensor::randn({1, 32, 3, 8}, 1));
      },
      "multiple of the number of key/value heads");
  expect_error([&] { dilated_attention_forward(c, q, k.to(DType::f64), v.to(DType::f64)); }, "dtype mismatch");
  expect_error([&] { dilated_attention_forward(c, q.to(DType::i32), k, v); }, "must be f32, f64, bf16 or f16");
  expect_error([&] { dilated_attention_forward(c, q.select(0, 0), k, v); },
               "must be (batch, seq_len, heads, head_dim)");
  expect_error([&] { dilated_attention_forward(c, Tensor(), k, v); }, "q is undefined");
  expect_error([&] { dilated_attention_forward(c, q.slice(1, 0, 0), k.slice(1, 0, 0), v.slice(1, 0, 0)); },
               "seq_len = 0");
  DilatedAttentionConfig groups = good();
  groups.mode = DilatedMode::head_groups;
  groups.segment_lengths = {8, 16, 32, 64, 128};
  groups.dilation_rates = {1, 1, 1, 1, 1};
  expect_error([&] { dilated_attention_forward(groups, q, k, v); }, "needs at least 5 heads");
  expect_error([&] { dilated_attention_forward(c, q, k, v, Backend::cuda); }, "backend = cuda");
  const AttentionOutput fwd = dilated_attention_forward(c, q, k, v);
  expect_error([&] { dilated_attention_backward(c, q, k, v, fwd, Tensor::randn({1, 32, 4, 7}, 1)); }, "dout has shape");
  expect_error([&] { dilated_attention_backward(c, q, k, v, fwd, q.to(DType::f64)); }, "must match q");
  expect_error([&] { dilated_attention_backward(c, q, k, v, AttentionOutput{}, q); }, "forward output");
}

TEST(AttentionErrors, CudaDeviceMismatch) {
  if (cuda_device_count() == 0) {
    expect_error([] { (void)Tensor::randn({1, 8, 1, 4}, 1, DType::f32, Device::cuda(0)); }, "cuda:0");
    GTEST_SKIP() << "no CUDA device for the mixed-device case";
  }
  const DilatedAttentionConfig c = good();
  const Tensor q = Tensor::randn({1, 32, 4, 8}, 1);
  const Tensor k = Tensor::randn({1, 32, 2, 8}, 2, DType::f32, Device::cuda(0));
  expect_error([&] { dilated_attention_forward(c, q, k, k); }, "device mismatch");
}

}  // namespace
}  // namespace longnet
