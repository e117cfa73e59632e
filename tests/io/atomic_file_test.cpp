// Atomic replacement: a failed write leaves the previous file intact and no temporaries.
#include "longnet/io/atomic_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

namespace fs = std::filesystem;

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(AtomicFile, ReplacesContent) {
  const fs::path dir = fs::temp_directory_path() / ("longnet_atomic_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path path = dir / "file.txt";
  write_text_atomically(path, "first");
  EXPECT_EQ(read_all(path), "first");
  write_text_atomically(path, "second");
  EXPECT_EQ(read_all(path), "second");
  fs::remove_all(dir);
}

TEST(AtomicFile, FailedWriteKeepsThePreviousFile) {
  const fs::path dir = fs::temp_directory_path() / ("longnet_atomic_fail_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path path = dir / "file.txt";
  write_text_atomically(path, "precious");
  EXPECT_THROW(write_file_atomically(path,
                                     [](std::ostream& out) {
                                       out << "half written";
                                       throw Error("writer failed midway");
                                     }),
               Error);
  EXPECT_EQ(read_all(path), "precious");
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1) << "temporary file left behind";
  fs::remove_all(dir);
}

TEST(AtomicFile, UnwritableDirectoryIsAnError) {
  EXPECT_THROW(write_text_atomically("/nonexistent/dir/file.txt", "x"), Error);
}

}  // namespace
}  // namespace longnet
