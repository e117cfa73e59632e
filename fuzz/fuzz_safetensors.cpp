// libFuzzer target: the safetensors reader must reject or accept any byte string without
// crashing, leaking or reading out of bounds, and every tensor it accepts must load.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "longnet/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto reader = longnet::SafetensorsReader::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    for (const auto& entry : reader.entries()) {
      const longnet::Tensor t = reader.load(entry.name);
      if (t.nbytes() != entry.end - entry.begin) __builtin_trap();
      (void)reader.view(entry.name);
    }
  } catch (const longnet::Error&) {
  }
  return 0;
}
