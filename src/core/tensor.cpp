// Tensor: storage ownership, shape bookkeeping and views. Copies live in tensor_copy.cpp.
#include "longnet/core/tensor.hpp"

#include <algorithm>
#include <limits>
#include <numeric>

#include "longnet/core/memory_pool.hpp"

namespace longnet {

// ---- Storage -------------------------------------------------------------------------

Storage::Storage(std::size_t bytes, Device device)
    : data_(memory_pool(device).allocate(bytes)), bytes_(bytes), device_(device), owned_(true) {}

Storage::Storage(void* data, std::size_t bytes, Device device, std::shared_ptr<const void> keep_alive)
    : data_(data), bytes_(bytes), device_(device), owned_(false), keep_alive_(std::move(keep_alive)) {}

Storage::~Storage() {
  if (owned_) memory_pool(device_).deallocate(data_, bytes_);
}

// ---- shapes --------------------------------------------------------------------------

Strides contiguous_strides(const Shape& shape) {
  Strides strides(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<std::int64_t>(shape[i], 1);
  }
  return strides;
}

std::int64_t shape_numel(const Shape& shape) {
  for (std::size_t i = 0; i < shape.size(); ++i) {
    require(shape[i] >= 0, "shape ", shape_to_string(shape), ": size of dimension ", i, " is negative");
  }
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  std::int64_t count = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != 0 && count > std::numeric_limits<std::int64_t>::max() / shape[i]) {
      throw Error(str("shape ", shape_to_string(shape), ": number of elements overflows 64 bits"));
    }
    count *= shape[i];
  }
  return count;
}

std::string shape_to_string(const Shape& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

namespace {

int normalize_dim(int dim, int rank, const char* what) {
  const int d = dim < 0 ? dim + rank : dim;
  require(d >= 0 && d < rank, what, ": dim = ", dim, " is out of range for a tensor of rank ", rank);
  return d;
}

// Elements spanned from the first element to the last (0 for an empty tensor).
std::int64_t span_elements(const Shape& shape, const Strides& strides) {
  std::int64_t last = 0;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return 0;
    last += (shape[i] - 1) * strides[i];
  }
  return last + 1;
}

}  // namespace

// ---- construction --------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  require_device_available(device);
  const std::int64_t count = shape_numel(shape);
  const auto bytes = static_cast<std::size_t>(count) * dtype_size(dtype);
  require(count == 0 || bytes / static_cast<std::size_t>(count) == dtype_size(dtype), "shape ", shape_to_string(shape),
          ": size in bytes overflows");
  Tensor t;
  t.storage_ = std::make_shared<Storage>(bytes, device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device, const Strides& strides) {
  require(strides.empty() || strides.size() == shape.size(), "Tensor::from_blob: ", strides.size(),
          " strides for shape ", shape_to_string(shape));
  for (std::int64_t s : strides) require(s >= 0, "Tensor::from_blob: stride ", s, " is negative");
  const std::int64_t count = shape_numel(shape);
  require(data != nullptr || count == 0, "Tensor::from_blob: data is null");
  Tensor t;
  t.shape_ = shape;
  t.strides_ = strides.empty() ? contiguous_strides(shape) : strides;
  t.dtype_ = dtype;
  t.device_ = device;
  const auto bytes = static_cast<std::size_t>(span_elements(t.shape_, t.strides_)) * dtype_size(dtype);
  t.storage_ = std::make_shared<Storage>(data, bytes, device, nullptr);
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, const Strides& strides,
                            std::int64_t offset) {
  require(storage != nullptr, "Tensor::from_storage: storage is null");
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = Shape{};
  t.strides_ = Strides{};
  t.dtype_ = dtype;
  t.device_ = t.storage_->device();
  return t.as_strided(shape, strides.empty() ? contiguous_strides(shape) : strides, offset);
}

// ---- properties ----------------------------------------------------------------------

std::int64_t Tensor::size(int dim) const {
  return shape_[static_cast<std::size_t>(normalize_dim(dim, this->dim(), "Tensor::size"))];
}
std::int64_t Tensor::stride(int dim) const {
  return strides_[static_cast<std::size_t>(normalize_dim(dim, this->dim(), "Tensor::stride"))];
}
// Every shape was checked by shape_numel when its tensor or view was made, so the product
// needs no overflow checks here: numel() sits in loop conditions, and the checked version
// (divisions per dimension) made a 32K-token validation loop take ~1.8 ms.
std::int64_t Tensor::numel() const {
  std::int64_t count = 1;
  for (const std::int64_t size : shape_) count *= size;
  return count;
}

bool Tensor::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (shape_[i] == 0) return true;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<std::int64_t>(element_size());
}

double Tensor::item() const {
  require(defined() && numel() == 1, "Tensor::item(): tensor has ", defined() ? numel() : 0,
          " elements, must have exactly 1");
  return to_vector<double>()[0];
}

std::string Tensor::description() const {
  if (!defined()) return "Tensor(undefined)";
  return str("Tensor(", dtype_name(dtype_), ", ", to_string(device_), ", ", shape_to_string(shape_), ")");
}

// ---- views ---------------------------------------------------------------------------

Tensor Tensor::slice(int dim, std::int64_t start, std::int64_t end, std::int64_t step) const {
  const int d = normalize_dim(dim, this->dim(), "Tensor::slice");
  const auto ud = static_cast<std::size_t>(d);
  require(step >= 1, "Tensor::slice: step = ", step, ": must be >= 1");
  require(0 <= start && start <= end && end <= shape_[ud], "Tensor::slice: [", start, ", ", end,
          ") is not a range inside [0, ", shape_[ud], ") of dimension ", d);
  Tensor t = *this;
  t.offset_ += start * strides_[ud];
  t.shape_[ud] = (end - start + step - 1) / step;
  t.strides_[ud] *= step;
  return t;
}

Tensor Tensor::select(int dim, std::int64_t index) const {
  const int d = normalize_dim(dim, this->dim(), "Tensor::select");
  const auto ud = static_cast<std::size_t>(d);
  require(0 <= index && index < shape_[ud], "Tensor::select: index = ", index, " is out of range for dimension ", d,
          " of size ", shape_[ud]);
  Tensor t = *this;
  t.offset_ += index * strides_[ud];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::permute(const std::vector<int>& order) const {
  require(static_cast<int>(order.size()) == dim(), "Tensor::permute: ", order.size(),
          " dims given for a tensor of rank ", dim());
  std::vector<bool> seen(order.size(), false);
  Tensor t = *this;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto d = static_cast<std::size_t>(normalize_dim(order[i], dim(), "Tensor::permute"));
    require(!seen[d], "Tensor::permute: dim ", order[i], " appears twice");
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::transpose(int dim0, int dim1) const {
  std::vector<int> order(static_cast<std::size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<std::size_t>(normalize_dim(dim0, dim(), "Tensor::transpose"))],
            order[static_cast<std::size_t>(normalize_dim(dim1, dim(), "Tensor::transpose"))]);
  return permute(order);
}

Tensor Tensor::unsqueeze(int dim) const {
  const int d = dim < 0 ? dim + this->dim() + 1 : dim;
  require(d >= 0 && d <= this->dim(), "Tensor::unsqueeze: dim = ", dim, " is out of range for rank ", this->dim());
  Tensor t = *this;
  const auto ud = static_cast<std::size_t>(d);
  const std::int64_t stride = ud < shape_.size() ? strides_[ud] * shape_[ud] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  require(is_contiguous(), "Tensor::view: tensor ", description(), " is not contiguous (use reshape)");
  Shape resolved = shape;
  int inferred = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      require(inferred < 0, "Tensor::view: more than one -1 in ", shape_to_string(shape));
      inferred = static_cast<int>(i);
    } else {
      require(resolved[i] >= 0, "Tensor::view: negative size in ", shape_to_string(shape));
      known *= resolved[i];
    }
  }
  if (inferred >= 0) {
    require(known > 0 && numel() % known == 0, "Tensor::view: cannot infer -1 in ", shape_to_string(shape), " for ",
            numel(), " elements");
    resolved[static_cast<std::size_t>(inferred)] = numel() / known;
  }
  require(shape_numel(resolved) == numel(), "Tensor::view: shape ", shape_to_string(resolved), " has ",
          shape_numel(resolved), " elements, tensor has ", numel());
  Tensor t = *this;
  t.shape_ = resolved;
  t.strides_ = contiguous_strides(resolved);
  return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Strides& strides, std::int64_t offset) const {
  require(defined(), "Tensor::as_strided: tensor is undefined");
  require(shape.size() == strides.size(), "Tensor::as_strided: ", strides.size(), " strides for shape ",
          shape_to_string(shape));
  for (std::int64_t s : strides) require(s >= 0, "Tensor::as_strided: stride ", s, " is negative");
  require(offset >= 0, "Tensor::as_strided: offset ", offset, " is negative");
  (void)shape_numel(shape);  // negative sizes and overflow, as for any other shape
  const std::int64_t capacity = static_cast<std::int64_t>(storage_->bytes() / element_size());
  const std::int64_t span = span_elements(shape, strides);
  require(span == 0 || offset + span <= capacity, "Tensor::as_strided: view of ", span, " elements at offset ", offset,
          " exceeds the storage of ", capacity, " elements");
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const { return is_contiguous() ? view(shape) : contiguous().view(shape); }

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const { return to(device, dtype_); }
Tensor Tensor::to(DType dtype) const { return to(device_, dtype); }
Tensor Tensor::to(Device device, DType dtype) const {
  if (device == device_ && dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device);
  t.copy_from(*this);
  return t;
}

}  // namespace longnet
