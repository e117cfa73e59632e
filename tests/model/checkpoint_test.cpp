// Checkpoints: round trip (same parameters bit for bit, same logits, PyTorch-style names
// and (out, in) weights, metadata); truncated, corrupted or inconsistent files give an
// Error naming the file; a diverged model is never written over the last good checkpoint.
#include "longnet/model/checkpoint.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "longnet/model/trainer.hpp"
#include "model/model_test_support.hpp"

namespace longnet::testing {
namespace {

using namespace longnet::model;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("longnet_checkpoint_test_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = dir_ / "model.safetensors";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string read(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void write(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::filesystem::path dir_, path_;
};

LongNetLMConfig f32_config() {
  LongNetLMConfig c = tiny_lm_config(DType::f32);
  c.dropout = 0.1;
  return c;
}

TEST_F(CheckpointTest, RoundTripKeepsEveryBitAndUsesPyTorchNames) {
  LongNetLM model(f32_config(), Device::cpu(), 4);
  const FixedBatches data({random_tokens(2, 9, 11, 1), random_tokens(2, 9, 11, 2), Tensor()});
  TrainingConfig config;
  config.steps = 5;
  Trainer trainer(model, data, config);
  trainer.step();
  trainer.step();
  trainer.save_checkpoint(path_);
  ASSERT_TRUE(std::filesystem::exists(optimizer_state_path(path_)));
  EXPECT_EQ(optimizer_state_path(path_).filename(), "model.optimizer.safetensors");

  const CheckpointInfo info = read_checkpoint_info(path_);
  EXPECT_EQ(info.architecture, "longnet_lm");
  EXPECT_EQ(info.step, 2);
  EXPECT_EQ(info.config_json, model.config_json());
  EXPECT_EQ(info.metadata.at("format"), "longnet-checkpoint");
  EXPECT_EQ(info.metadata.at("format_version"), "1");

  const SafetensorsReader reader(path_);
  EXPECT_EQ(reader.entry("layers.0.attn.q_proj.weight").shape, (Shape{8, 8}));
  EXPECT_EQ(reader.entry("layers.1.attn.k_proj.weight").shape, (Shape{4, 8}));  // (out = Hk * D, in)
  EXPECT_EQ(reader.entry("layers.0.ffn.fc1.weight").shape, (Shape{12, 8}));
  EXPECT_TRUE(reader.contains("layers.0.attn.inner_attn_ln.weight"));
  EXPECT_TRUE(reader.contains("layers.0.ffn.ffn_layernorm.bias"));
  EXPECT_TRUE(reader.contains("embed_tokens.weight"));
  EXPECT_TRUE(reader.contains("lm_head.weight"));
  EXPECT_TRUE(reader.contains("layer_norm.weight"));

  const auto loaded = load_longnet_lm(path_);
  const auto a = model.parameters(), b = loaded->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]->name, b[i]->name);
    EXPECT_EQ(a[i]->value.to_vector<float>(), b[i]->value.to_vector<float>()) << a[i]->name;
  }
  const Tensor tokens = random_tokens(1, 9, 11, 5);
  EXPECT_EQ(model.forward(tokens, {}).to_vector<float>(), loaded->forward(tokens, {}).to_vector<float>());
  EXPECT_THROW(load_longnet(path_), Error);  // not an encoder-decoder checkpoint
}

TEST_F(CheckpointTest, EncoderDecoderRoundTrip) {
  LongNetConfig config;
  static_cast<LongNetLMConfig&>(config) = f32_config();
  config.encoder_layers = 1;
  LongNet model(config, Device::cpu(), 2);
  save_checkpoint(path_, model, nullptr, 0);
  const auto loaded = load_longnet(path_);
  const Tensor source = random_tokens(1, 9, 11, 5), inputs = random_tokens(1, 9, 11, 6);
  EXPECT_EQ(model.forward(source, inputs, {}).to_vector<float>(),
            loaded->forward(source, inputs, {}).to_vector<float>());
}

TEST_F(CheckpointTest, TruncatedOrCorruptFilesGiveErrorsNamingTheFile) {
  LongNetLM model(f32_config(), Device::cpu(), 4);
  save_checkpoint(path_, model, nullptr, 3);
  const std::string good = read(path_);
  const auto bad = dir_ / "bad.safetensors";
  // Truncations anywhere: in the length, the header, the data.
  for (std::size_t size : {std::size_t{0}, std::size_t{5}, std::size_t{40}, good.size() / 2, good.size() - 1}) {
    write(bad, good.substr(0, size));
    const std::string message = error_of([&] { load_longnet_lm(bad); });
    EXPECT_NE(message.find(bad.string()), std::string::npos) << "size " << size << ": " << message;
  }
  // A corrupted header byte.
  std::string corrupt = good;
  corrupt[12] = '\x01';
  write(bad, corrupt);
  EXPECT_NE(error_of([&] { load_longnet_lm(bad); }).find(bad.string()), std::string::npos);

  // Valid safetensors with wrong content.
  auto expect_error = [&](const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                          const std::string& fragment) {
    save_safetensors(bad, tensors, metadata);
    const std::string message = error_of([&] { load_longnet_lm(bad); });
    EXPECT_NE(message.find(bad.string()), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  };
  NamedTensors tensors;
  for (const auto& p : model.parameters()) tensors.emplace_back(p->name, p->value);
  const std::map<std::string, std::string> metadata = SafetensorsReader(path_).metadata();
  auto with = [&](const std::string& key, const std::string& value) {
    auto m = metadata;
    m[key] = value;
    return m;
  };
  expect_error(tensors, {}, "format");
  expect_error(tensors, with("format_version", "2"), "format_version 2");
  expect_error(tensors, with("step", "-1"), "step");
  expect_error(tensors, with("config", "{\"architecture\": \"longnet_lm\", \"heads\": 3}"), "heads = 3");
  expect_error(tensors, with("config", "not json"), "not valid JSON");
  NamedTensors missing(tensors.begin() + 1, tensors.end());
  expect_error(missing, metadata, "lacks parameter 'embed_tokens.weight'");
  NamedTensors reshaped = tensors;
  reshaped[1].second = Tensor::zeros({3}, DType::f32);
  expect_error(reshaped, metadata, "has shape (3");
  NamedTensors extra = tensors;
  extra.emplace_back("stray", Tensor::zeros({1}, DType::f32));
  expect_error(extra, metadata, "tensors but the model has");
}

TEST_F(CheckpointTest, DivergedModelNeverReplacesTheLastGoodCheckpoint) {
  LongNetLM model(f32_config(), Device::cpu(), 4);
  save_checkpoint(path_, model, nullptr, 1);
  const std::string good = read(path_);
  model.parameters()[3]->value.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  const std::string message = error_of([&] { save_checkpoint(path_, model, nullptr, 2); });
  EXPECT_NE(message.find("non-finite"), std::string::npos) << message;
  EXPECT_EQ(read(path_), good);
  EXPECT_EQ(read_checkpoint_info(path_).step, 1);
  EXPECT_NO_THROW(load_longnet_lm(path_));
}

TEST_F(CheckpointTest, OptimizerStateFromAnotherStepIsRejected) {
  LongNetLM model(f32_config(), Device::cpu(), 4);
  const FixedBatches data({random_tokens(2, 9, 11, 1), random_tokens(2, 9, 11, 2), Tensor()});
  TrainingConfig config;
  config.steps = 5;
  Trainer trainer(model, data, config);
  trainer.step();
  trainer.save_checkpoint(path_);
  const std::string old_optimizer = read(optimizer_state_path(path_));
  trainer.step();
  trainer.save_checkpoint(path_);
  write(optimizer_state_path(path_), old_optimizer);  // as if the second save stopped between its two files
  LongNetLM other(f32_config(), Device::cpu(), 4);
  Trainer resumed(other, data, config);
  const std::string message = error_of([&] { resumed.resume(path_); });
  EXPECT_NE(message.find("from step 1"), std::string::npos) << message;
  std::filesystem::remove(optimizer_state_path(path_));
  EXPECT_NE(error_of([&] { resumed.resume(path_); }).find("optimizer"), std::string::npos);
}

}  // namespace
}  // namespace longnet::testing
