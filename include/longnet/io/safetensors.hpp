// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of UTF-8 JSON mapping each tensor name to {dtype, shape,
// data_offsets: [begin, end)} relative to the data section (plus an optional
// "__metadata__" object of strings), then the data section: the tensors' bytes, row-major,
// little-endian, contiguous, covering it exactly with no overlaps or holes.
//
// Files are untrusted input: the reader checks every length, offset, dtype, shape product
// and the header size limit, and any violation is an Error naming the file and the
// problem. Large files are memory-mapped, not read. The writer replaces files atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "longnet/core/tensor.hpp"

namespace longnet {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  std::uint64_t begin = 0;  // byte offsets in the data section
  std::uint64_t end = 0;
};

class SafetensorsReader {
 public:
  // The largest header we accept (the reference implementation's limit).
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

  // Opens, maps and validates the file. Throws Error naming the file on any problem.
  explicit SafetensorsReader(const std::filesystem::path& path);
  // Validates an in-memory image of a file; `name` stands in for the path in messages.
  static SafetensorsReader from_bytes(std::vector<std::uint8_t> bytes, std::string name = "<memory>");

  const std::string& name() const { return name_; }
  // Entries in the order of their data (sorted by offset).
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  std::vector<std::string> tensor_names() const;
  bool contains(std::string_view tensor) const;
  // Throws Error naming the file, the tensor and the names present when it is missing.
  const SafetensorsEntry& entry(std::string_view tensor) const;
  // A new tensor holding a copy of the data, on `device`.
  Tensor load(std::string_view tensor, Device device = Device::cpu()) const;
  // A zero-copy CPU tensor over the mapped file when the data is suitably aligned (a copy
  // otherwise); it keeps the mapping alive.
  Tensor view(std::string_view tensor) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsReader() = default;
  void parse();

  std::string name_;
  std::shared_ptr<const void> mapping_;  // owns the bytes (mmap or vector)
  const std::uint8_t* bytes_ = nullptr;
  std::uint64_t size_ = 0;
  std::uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` (any device, dtype, strides; names unique, non-empty and not
// "__metadata__") and `metadata` atomically. Tensors are stored by decreasing element
// size so every tensor's data is aligned to its element size.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The bytes save_safetensors would write (for tests and in-memory use).
std::vector<std::uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                                const std::map<std::string, std::string>& metadata = {});

}  // namespace longnet
