// A process-wide on/off switch whose default comes from an environment variable, read once
// (not on every use: some are asked on every layer's forward). The library's experimental
// and measured-choice switches (LONGNET_GRADIENT_STREAM, LONGNET_FUSED_PROJECTION, ...) are
// these, each with a setter for programs and tests.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace longnet {

class RuntimeSwitch {
 public:
  enum class Unset { off, on };
  // Unset::off: on only where the variable is "1". Unset::on: off only where it is "0".
  RuntimeSwitch(const char* variable, Unset when_unset) : flag_(from_environment(variable, when_unset)) {}

  bool enabled() const { return flag_.load(); }
  void set(bool enabled) { flag_.store(enabled); }

 private:
  static bool from_environment(const char* variable, Unset when_unset) {
    const char* value = std::getenv(variable);
    if (when_unset == Unset::on) return value == nullptr || std::string_view(value) != "0";
    return value != nullptr && std::string_view(value) == "1";
  }

  std::atomic<bool> flag_;
};

}  // namespace longnet
