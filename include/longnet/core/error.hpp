// longnet::Error — the one exception type of the library — and the helpers that build
// its messages. Every public entry point validates its input and throws Error naming the
// argument, the value and the rule (DESIGN section 6); nothing calls exit() or abort().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace longnet {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Concatenates any streamable values into one string: str("r = ", r, ": must be >= 1").
template <class... Args>
std::string str(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

// Throws Error(str(args...)) unless `condition` holds.
template <class... Args>
void require(bool condition, Args&&... args) {
  if (!condition) throw Error(str(std::forward<Args>(args)...));
}

namespace detail {
// Status checks for third-party calls. Each library's overload of `check_status` lives
// next to the code that uses the library (CUDA, cuBLAS, NCCL, MPI: see
// src/core/status.hpp), so no third-party type appears in a public header.
[[noreturn]] void throw_status_error(const char* library, long code, const std::string& what, const char* call,
                                     const char* file, int line);
}  // namespace detail

}  // namespace longnet

// LONGNET_CHECK(call): evaluates a CUDA, cuBLAS, NCCL or MPI call and throws
// longnet::Error naming the call, the library's message, the file and the line when its
// status is not success. MPI calls are wrapped as LONGNET_CHECK(longnet::detail::MpiCall{...}).
#define LONGNET_CHECK(call) ::longnet::detail::check_status((call), #call, __FILE__, __LINE__)
