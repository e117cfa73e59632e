// safetensors reader: maps the file and validates the header completely before any
// tensor is handed out (see the header comment of longnet/io/safetensors.hpp).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stack>

#include "longnet/io/safetensors.hpp"

namespace longnet {
namespace {

using json = nlohmann::json;

class FileMapping {
 public:
  explicit FileMapping(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    require(fd_ >= 0, path.string(), ": cannot open (", std::strerror(errno), ")");
    struct stat status {};
    if (::fstat(fd_, &status) != 0 || !S_ISREG(status.st_mode)) {
      ::close(fd_);
      throw Error(str(path.string(), ": not a regular file"));
    }
    size_ = static_cast<std::uint64_t>(status.st_size);
    if (size_ > 0) {
      void* address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (address == MAP_FAILED) {
        ::close(fd_);
        throw Error(str(path.string(), ": cannot map the file (", std::strerror(errno), ")"));
      }
      data_ = static_cast<const std::uint8_t*>(address);
    }
  }
  ~FileMapping() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
};

std::uint64_t read_u64_le(const std::uint8_t* p) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

// A JSON value that must be a non-negative integer.
std::uint64_t as_unsigned(const json& value, const std::string& what) {
  require(value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0), what,
          " must be a non-negative integer, got ", value.dump());
  return value.get<std::uint64_t>();
}

}  // namespace

SafetensorsReader::SafetensorsReader(const std::filesystem::path& path) {
  name_ = path.string();
  auto mapping = std::make_shared<FileMapping>(path);
  bytes_ = mapping->data();
  size_ = mapping->size();
  mapping_ = mapping;
  parse();
}

SafetensorsReader SafetensorsReader::from_bytes(std::vector<std::uint8_t> bytes, std::string name) {
  SafetensorsReader reader;
  reader.name_ = std::move(name);
  auto owned = std::make_shared<std::vector<std::uint8_t>>(std::move(bytes));
  reader.bytes_ = owned->data();
  reader.size_ = owned->size();
  reader.mapping_ = owned;
  reader.parse();
  return reader;
}

void SafetensorsReader::parse() {
  const std::string& file = name_;
  require(size_ >= 8, file, ": truncated header: the file has ", size_, " bytes, fewer than the 8-byte header length");
  const std::uint64_t header_length = read_u64_le(bytes_);
  require(header_length <= kMaxHeaderBytes, file, ": header length ", header_length, " exceeds the limit of ",
          kMaxHeaderBytes, " bytes");
  require(header_length <= size_ - 8, file, ": header length ", header_length, " extends beyond the end of the file (",
          size_, " bytes)");
  require(header_length >= 2 && bytes_[8] == '{', file, ": header does not start with a JSON object");
  data_start_ = 8 + header_length;
  const std::uint64_t data_length = size_ - data_start_;

  // Parse, rejecting duplicate keys (which plain JSON parsers silently merge).
  std::stack<std::set<std::string>> open_objects;
  std::string duplicate;
  json header;
  try {
    header = json::parse(bytes_ + 8, bytes_ + data_start_, [&](int, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::object_start) open_objects.emplace();
      if (event == json::parse_event_t::object_end) open_objects.pop();
      if (event == json::parse_event_t::key && !open_objects.top().insert(parsed.get<std::string>()).second &&
          duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
      return true;
    });
  } catch (const json::exception& error) {
    throw Error(str(file, ": header is not valid JSON (", error.what(), ")"));
  }
  require(duplicate.empty(), file, ": header has the key '", duplicate, "' more than once");
  require(header.is_object(), file, ": header is not a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      require(value.is_object(), file, ": __metadata__ must be an object of strings");
      for (const auto& [meta_key, meta_value] : value.items()) {
        require(meta_value.is_string(), file, ": __metadata__['", meta_key, "'] must be a string, got ",
                meta_value.dump());
        metadata_[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    const std::string where = str(file, ": tensor '", key, "'");
    require(value.is_object(), where, " must be an object with dtype, shape and data_offsets");
    for (const auto& [field, ignored] : value.items()) {
      (void)ignored;
      require(field == "dtype" || field == "shape" || field == "data_offsets", where, " has unknown field '", field,
              "'");
    }
    require(value.contains("dtype") && value.contains("shape") && value.contains("data_offsets"), where,
            " must have dtype, shape and data_offsets");

    SafetensorsEntry entry;
    entry.name = key;
    const json& dtype = value["dtype"];
    require(dtype.is_string(), where, ": dtype must be a string, got ", dtype.dump());
    require(parse_safetensors_dtype(dtype.get<std::string>(), entry.dtype), where, ": unknown dtype '",
            dtype.get<std::string>(), "' (supported: F32, F64, BF16, F16, I32, I64, U8)");

    const json& shape = value["shape"];
    require(shape.is_array(), where, ": shape must be an array, got ", shape.dump());
    std::uint64_t element_count = 1;
    bool overflow = false;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      const std::uint64_t extent = as_unsigned(shape[i], str(where, ": shape[", i, "]"));
      require(extent <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), where, ": shape[", i,
              "] = ", extent, " is too large");
      entry.shape.push_back(static_cast<std::int64_t>(extent));
      if (extent != 0 && element_count > std::numeric_limits<std::uint64_t>::max() / extent) overflow = true;
      element_count *= extent;
    }
    const std::uint64_t element_size = dtype_size(entry.dtype);
    if (element_count > std::numeric_limits<std::uint64_t>::max() / element_size) overflow = true;
    require(!overflow || std::find(entry.shape.begin(), entry.shape.end(), 0) != entry.shape.end(), where, ": shape ",
            shape.dump(), " has more bytes than 2^64");
    if (overflow) element_count = 0;  // a zero extent makes the product 0
    const std::uint64_t expected_bytes = element_count * element_size;

    const json& offsets = value["data_offsets"];
    require(offsets.is_array() && offsets.size() == 2, where, ": data_offsets must be [begin, end], got ",
            offsets.dump());
    entry.begin = as_unsigned(offsets[0], where + ": data_offsets[0]");
    entry.end = as_unsigned(offsets[1], where + ": data_offsets[1]");
    require(entry.begin <= entry.end, where, ": data_offsets [", entry.begin, ", ", entry.end, "] has begin after end");
    require(entry.end <= data_length, where, ": data_offsets [", entry.begin, ", ", entry.end,
            "] are out of range: the data section has ", data_length, " bytes");
    require(entry.end - entry.begin == expected_bytes, where, ": size mismatch: shape ", shape.dump(), " of ",
            dtype.get<std::string>(), " needs ", expected_bytes, " bytes, data_offsets give ", entry.end - entry.begin);
    entries_.push_back(std::move(entry));
  }

  // The tensors must tile the data section exactly: no overlaps, no holes.
  std::sort(entries_.begin(), entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const auto& entry : entries_) {
    if (entry.begin < covered) {
      throw Error(str(file, ": tensors '", previous->name, "' and '", entry.name, "' have overlapping data_offsets"));
    }
    require(entry.begin == covered, file, ": hole in the data section: bytes [", covered, ", ", entry.begin,
            ") belong to no tensor (before '", entry.name, "')");
    covered = entry.end;
    previous = &entry;
  }
  require(covered == data_length, file, ": the data section has ", data_length, " bytes but the tensors cover ",
          covered, " (trailing bytes or a truncated file)");
}

std::vector<std::string> SafetensorsReader::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& e : entries_) names.push_back(e.name);
  return names;
}

bool SafetensorsReader::contains(std::string_view tensor) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const auto& e) { return e.name == tensor; });
}

const SafetensorsEntry& SafetensorsReader::entry(std::string_view tensor) const {
  for (const auto& e : entries_) {
    if (e.name == tensor) return e;
  }
  std::string present;
  for (const auto& e : entries_) present += (present.empty() ? "" : ", ") + e.name;
  throw Error(str(name_, ": no tensor named '", tensor, "' (the file has: ", present.empty() ? "none" : present, ")"));
}

Tensor SafetensorsReader::view(std::string_view tensor) const {
  const SafetensorsEntry& e = entry(tensor);
  auto* start = const_cast<std::uint8_t*>(bytes_ + data_start_ + e.begin);
  if (reinterpret_cast<std::uintptr_t>(start) % dtype_size(e.dtype) != 0) return load(tensor);
  // The storage holds the mapping, so the view stays valid after the reader is gone.
  auto storage = std::make_shared<Storage>(start, e.end - e.begin, Device::cpu(), mapping_);
  return Tensor::from_storage(std::move(storage), e.shape, e.dtype);
}

Tensor SafetensorsReader::load(std::string_view tensor, Device device) const {
  const SafetensorsEntry& e = entry(tensor);
  Tensor host = Tensor::empty(e.shape, e.dtype);
  if (e.end > e.begin) std::memcpy(host.data(), bytes_ + data_start_ + e.begin, e.end - e.begin);
  return host.to(device);
}

}  // namespace longnet
