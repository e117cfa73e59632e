// safetensors: round trips for every dtype and odd shapes, files written by the official
// Python package, and every malformed file of the corpus rejected with an error that
// names the file and the problem.
#include "longnet/io/safetensors.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace longnet {
namespace {

namespace fs = std::filesystem;

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("longnet_io_test_" + std::to_string(::getpid()) + "_" + name);
}

void expect_same(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype());
  ASSERT_EQ(a.shape(), b.shape());
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  ASSERT_EQ(ca.nbytes(), cb.nbytes());
  if (ca.nbytes()) {
    EXPECT_EQ(std::memcmp(ca.data(), cb.data(), ca.nbytes()), 0);
  }
}

TEST(Safetensors, RoundTripEveryDTypeRankZeroAndZeroSize) {
  NamedTensors tensors;
  const DType all[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};
  for (DType d : all) {
    tensors.emplace_back(std::string("t_") + std::string(dtype_name(d)),
                         Tensor::uniform({3, 5}, 9, -50, 50, DType::f64).to(d));
    tensors.emplace_back(std::string("scalar_") + std::string(dtype_name(d)), Tensor::full({}, 7, d));
    tensors.emplace_back(std::string("empty_") + std::string(dtype_name(d)), Tensor::zeros({2, 0, 3}, d));
  }
  tensors.emplace_back("strided", Tensor::randn({4, 6}, 1).transpose(0, 1).slice(0, 1, 6, 2));
  const fs::path path = temp_path("roundtrip.safetensors");
  save_safetensors(path, tensors, {{"step", "12"}, {"config", "{\"d\": 1}"}});

  const SafetensorsReader reader(path);
  EXPECT_EQ(reader.entries().size(), tensors.size());
  EXPECT_EQ(reader.metadata().at("step"), "12");
  EXPECT_EQ(reader.metadata().at("config"), "{\"d\": 1}");
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    expect_same(reader.load(name), tensor);
    expect_same(reader.view(name), tensor);
  }
  // Views are zero-copy and aligned (the writer orders by element size).
  const Tensor v = reader.view("t_f64");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data()) % 8, 0u);
  EXPECT_FALSE(v.storage()->owns_memory());
  fs::remove(path);
}

TEST(Safetensors, ViewOutlivesTheReader) {
  const fs::path path = temp_path("outlive.safetensors");
  save_safetensors(path, {{"x", Tensor::randn({100}, 3)}});
  Tensor view;
  {
    const SafetensorsReader reader(path);
    view = reader.view("x");
  }
  expect_same(view, Tensor::randn({100}, 3));
  fs::remove(path);
}

TEST(Safetensors, ReadsFilesWrittenByThePythonPackage) {
  const SafetensorsReader reader(fs::path(LONGNET_REFERENCE_DIR) / "python_written.safetensors");
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  std::vector<double> ramp(24);
  for (int i = 0; i < 24; ++i) ramp[static_cast<std::size_t>(i)] = i / 8.0 - 1.0;
  EXPECT_EQ(reader.load("f64").shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(reader.load("f64").to_vector<double>(), ramp);
  EXPECT_EQ(reader.load("f32").to_vector<double>(), ramp);
  EXPECT_EQ(reader.load("f16").to_vector<double>(), ramp);
  EXPECT_EQ(reader.load("i32").to_vector<std::int32_t>(), (std::vector<std::int32_t>{-2, -1, 0, 1, 2, 3}));
  EXPECT_EQ(reader.load("i64").to_vector<std::int64_t>()[4], 4'000'000'028);
  EXPECT_EQ(reader.load("u8").to_vector<std::int32_t>()[6], 180);
  EXPECT_EQ(reader.load("scalar").item(), 2.5);
  EXPECT_EQ(reader.load("empty").shape(), (Shape{3, 0}));
}

TEST(Safetensors, WriterOutputIsWellFormed) {
  const auto bytes =
      serialize_safetensors({{"a", Tensor::zeros({3}, DType::u8)}, {"b", Tensor::zeros({2}, DType::f64)}});
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[static_cast<std::size_t>(i)];
  EXPECT_EQ(header_length % 8, 0u);  // padded so the data section is 8-byte aligned
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_length));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({0, 16}));  // larger elements first
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({16, 19}));
  EXPECT_EQ(bytes.size(), 8 + header_length + 19);
  EXPECT_NO_THROW(SafetensorsReader::from_bytes(bytes));
}

TEST(Safetensors, WriterRejectsBadNames) {
  const Tensor t = Tensor::zeros({1}, DType::f32);
  EXPECT_THROW(serialize_safetensors({{"", t}}), Error);
  EXPECT_THROW(serialize_safetensors({{"__metadata__", t}}), Error);
  EXPECT_THROW(serialize_safetensors({{"a", t}, {"a", t}}), Error);
  EXPECT_THROW(serialize_safetensors({{"a", Tensor()}}), Error);
}

TEST(Safetensors, MissingTensorNamesTheFileAndWhatItHas) {
  const auto reader =
      SafetensorsReader::from_bytes(serialize_safetensors({{"q", Tensor::zeros({1}, DType::f32)}}), "in.safetensors");
  try {
    (void)reader.load("k");
    FAIL() << "expected Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("in.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("'k'"), std::string::npos) << message;
    EXPECT_NE(message.find("q"), std::string::npos) << message;
  }
}

TEST(Safetensors, MissingFileIsAnError) { EXPECT_THROW(SafetensorsReader("/nonexistent/dir/x.safetensors"), Error); }

TEST(Safetensors, EveryMalformedFileIsRejectedWithItsReason) {
  std::ifstream manifest_file(fs::path(LONGNET_MALFORMED_DIR) / "manifest.json");
  ASSERT_TRUE(manifest_file.is_open());
  const auto manifest = nlohmann::json::parse(manifest_file);
  ASSERT_GE(manifest.size(), 20u);
  for (const auto& item : manifest) {
    const std::string file = item["file"];
    const std::string expect = item["expect"];
    const fs::path path = fs::path(LONGNET_MALFORMED_DIR) / file;
    SCOPED_TRACE(file);
    try {
      const SafetensorsReader reader(path);
      FAIL() << file << " was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << "message does not name the file: " << message;
      EXPECT_NE(message.find(expect), std::string::npos) << "expected '" << expect << "' in: " << message;
    }
  }
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  const auto bytes = serialize_safetensors({{"x", Tensor::randn({5, 3}, 2)}, {"y", Tensor::zeros({4}, DType::i64)}});
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    std::vector<std::uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    EXPECT_THROW(SafetensorsReader::from_bytes(prefix, "cut"), Error) << "cut at " << cut;
  }
}

}  // namespace
}  // namespace longnet
