// Temp file + fsync + rename + directory fsync.
#include "longnet/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

std::filesystem::path temporary_name(const std::filesystem::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.string() + str(".tmp.", ::getpid(), ".", counter.fetch_add(1));
}

void sync_path(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;  // best effort: some file systems do not allow opening directories
  (void)::fsync(fd);
  (void)::close(fd);
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path temp = temporary_name(path);
  try {
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      require(out.is_open(), path.string(), ": cannot open '", temp.string(), "' for writing (", std::strerror(errno),
              ")");
      write(out);
      out.flush();
      require(out.good(), path.string(), ": writing failed (disk full or I/O error)");
    }
    sync_path(temp, O_RDONLY);
    std::error_code error;
    std::filesystem::rename(temp, path, error);
    require(!error, path.string(), ": cannot replace the file (", error.message(), ")");
    const auto parent = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    sync_path(parent, O_RDONLY | O_DIRECTORY);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
}

void write_text_atomically(const std::filesystem::path& path, std::string_view content) {
  write_file_atomically(
      path, [&](std::ostream& out) { out.write(content.data(), static_cast<std::streamsize>(content.size())); });
}

}  // namespace longnet
