// safetensors writer: header JSON padded with spaces to a multiple of 8 bytes, tensors
// ordered by decreasing element size (so each stays aligned), atomic replacement.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "longnet/io/atomic_file.hpp"
#include "longnet/io/safetensors.hpp"

namespace longnet {
namespace {

using json = nlohmann::ordered_json;

struct Layout {
  std::string header;              // padded JSON
  std::vector<std::size_t> order;  // indices into the tensors, in data order
  std::vector<Tensor> host;        // contiguous CPU copies, by original index
};

Layout plan(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  Layout layout;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    require(!name.empty(), "save_safetensors: a tensor name is empty");
    require(name != "__metadata__", "save_safetensors: '__metadata__' is reserved and cannot name a tensor");
    require(names.insert(name).second, "save_safetensors: tensor name '", name, "' appears twice");
    require(tensor.defined(), "save_safetensors: tensor '", name, "' is undefined");
    layout.host.push_back(tensor.to(Device::cpu()).contiguous());
  }
  layout.order.resize(tensors.size());
  std::iota(layout.order.begin(), layout.order.end(), 0);
  std::stable_sort(layout.order.begin(), layout.order.end(), [&](std::size_t a, std::size_t b) {
    return layout.host[a].element_size() > layout.host[b].element_size();
  });

  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  std::uint64_t offset = 0;
  for (std::size_t index : layout.order) {
    const Tensor& t = layout.host[index];
    json shape = json::array();
    for (std::int64_t extent : t.shape()) shape.push_back(extent);
    const std::uint64_t bytes = t.nbytes();
    header[tensors[index].first] = {{"dtype", std::string(safetensors_dtype_name(t.dtype()))},
                                    {"shape", shape},
                                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  layout.header = header.dump();
  layout.header.append((8 - layout.header.size() % 8) % 8, ' ');
  return layout;
}

void write_u64_le(std::uint64_t value, std::uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

}  // namespace

std::vector<std::uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                                const std::map<std::string, std::string>& metadata) {
  const Layout layout = plan(tensors, metadata);
  std::size_t total = 8 + layout.header.size();
  for (const auto& t : layout.host) total += t.nbytes();
  std::vector<std::uint8_t> bytes(total);
  write_u64_le(layout.header.size(), bytes.data());
  std::memcpy(bytes.data() + 8, layout.header.data(), layout.header.size());
  std::size_t offset = 8 + layout.header.size();
  for (std::size_t index : layout.order) {
    const Tensor& t = layout.host[index];
    if (t.nbytes()) std::memcpy(bytes.data() + offset, t.data(), t.nbytes());
    offset += t.nbytes();
  }
  return bytes;
}

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const Layout layout = plan(tensors, metadata);
  write_file_atomically(path, [&](std::ostream& out) {
    std::uint8_t length[8];
    write_u64_le(layout.header.size(), length);
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(layout.header.data(), static_cast<std::streamsize>(layout.header.size()));
    for (std::size_t index : layout.order) {
      const Tensor& t = layout.host[index];
      out.write(static_cast<const char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
    }
  });
}

}  // namespace longnet
