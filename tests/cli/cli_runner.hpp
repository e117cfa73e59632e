// Runs the `longnet` program from tests: the command line, its exit status and everything
// it printed (stdout and stderr together), in a scratch folder of its own per test.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "longnet/core/error.hpp"

namespace longnet::testing {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr interleaved
};

inline std::string shell_quote(const std::string& argument) {
  std::string quoted;
  quoted.push_back('\'');
  for (char c : argument) {
    if (c == '\'') {
      quoted.append("'\\''");
    } else {
      quoted.push_back(c);
    }
  }
  quoted.push_back('\'');
  return quoted;
}

// Runs LONGNET_CLI (the program's path, defined by CMake) with `arguments`.
inline CliResult run_longnet(const std::vector<std::string>& arguments) {
  std::string command = shell_quote(LONGNET_CLI);
  for (const auto& argument : arguments) command.append(" ").append(shell_quote(argument));
  command.append(" 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  require(pipe != nullptr, "popen failed for ", command);
  CliResult result;
  std::array<char, 4096> buffer{};
  std::size_t read = 0;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), read);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// A fresh folder under the system's temporary folder, removed when the object dies.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / str("longnet_cli_", name, "_", ::getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  std::string operator/(const std::string& file) const { return (path_ / file).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace longnet::testing
