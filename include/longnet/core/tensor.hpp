// Tensor: an n-dimensional array of one dtype on one device, either owning its storage
// (allocated from the device's memory pool) or a view into another tensor's storage or
// into memory someone else owns. Shapes and strides are in elements; strides may be any
// non-negative values (views by slicing, selecting, permuting), so kernels receive
// strided inputs as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "longnet/core/device.hpp"
#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/half.hpp"

namespace longnet {

using Shape = std::vector<std::int64_t>;
using Strides = std::vector<std::int64_t>;

// Storage: a block of device memory and who frees it.
class Storage {
 public:
  // Owning storage from the device's pool.
  Storage(std::size_t bytes, Device device);
  // Non-owning storage over external memory; `keep_alive` (may be empty) is held as long
  // as the storage lives (for example a memory-mapped file).
  Storage(void* data, std::size_t bytes, Device device, std::shared_ptr<const void> keep_alive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool owns_memory() const { return owned_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_;
  bool owned_ = false;
  std::shared_ptr<const void> keep_alive_;
};

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<BFloat16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<Float16> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<std::int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<std::int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<std::uint8_t> {
  static constexpr DType value = DType::u8;
};

// Row-major (contiguous) strides of a shape.
Strides contiguous_strides(const Shape& shape);
// Number of elements of a shape (1 for rank 0); throws Error on negative sizes or overflow.
std::int64_t shape_numel(const Shape& shape);
std::string shape_to_string(const Shape& shape);  // "(2, 3, 4)"

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // New owning tensors (contiguous). empty() leaves the memory uninitialised.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  // A view of memory owned by someone else (never freed by the tensor). `strides` empty
  // means contiguous.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                          const Strides& strides = {});
  // A tensor over existing storage (strides empty means contiguous from `offset`).
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             const Strides& strides = {}, std::int64_t offset = 0);
  // A CPU tensor holding a copy of `values` (size must equal the shape's numel).
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
    Tensor out = empty(shape, dtype_of<T>::value);
    require(static_cast<std::int64_t>(values.size()) == out.numel(), "Tensor::from_vector: ", values.size(),
            " values for shape ", shape_to_string(shape));
    copy_bytes_from_host(out, values.data());
    return out;
  }
  // Standard-normal (or uniform [lo, hi)) values from a counter-based generator: the same
  // seed gives the same values on every device and every run.
  static Tensor randn(const Shape& shape, std::uint64_t seed, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor uniform(const Shape& shape, std::uint64_t seed, double lo, double hi, DType dtype = DType::f32,
                        Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  std::int64_t size(int dim) const;    // negative dims count from the end
  std::int64_t stride(int dim) const;  // likewise
  int dim() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const;
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::size_t element_size() const { return dtype_size(dtype_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  std::int64_t storage_offset() const { return offset_; }  // in elements
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element (nullptr for an undefined tensor).
  void* data() const;
  // Typed pointer; throws Error when T does not match dtype().
  template <class T>
  T* data() const {
    require(dtype_ == dtype_of<T>::value, "Tensor::data<T>(): tensor has dtype ", dtype_name(dtype_), ", not ",
            dtype_name(dtype_of<T>::value));
    return static_cast<T*>(data());
  }

  // Views (share storage).
  Tensor slice(int dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) const;
  Tensor select(int dim, std::int64_t index) const;  // removes `dim`
  Tensor permute(const std::vector<int>& order) const;
  Tensor transpose(int dim0, int dim1) const;
  Tensor unsqueeze(int dim) const;
  // Same elements with a new shape; requires a contiguous tensor. One size may be -1.
  Tensor view(const Shape& shape) const;
  Tensor as_strided(const Shape& shape, const Strides& strides, std::int64_t offset) const;

  // Copies.
  Tensor reshape(const Shape& shape) const;  // a view when contiguous, else a copy
  Tensor contiguous() const;                 // itself when already contiguous
  Tensor clone() const;                      // always a new contiguous tensor
  Tensor to(Device device) const;            // itself when already there
  Tensor to(DType dtype) const;              // itself when already that dtype
  Tensor to(Device device, DType dtype) const;
  // Copies src into this tensor elementwise: equal shapes; any dtypes, devices, strides.
  void copy_from(const Tensor& src);
  void fill(double value);
  void zero();

  // Contiguous host copy of the elements converted to T (float or double).
  template <class T>
  std::vector<T> to_vector() const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int32_t> ||
                  std::is_same_v<T, std::int64_t>);
    Tensor host = to(Device::cpu(), dtype_of<T>::value).contiguous();
    const T* p = host.data<T>();
    return std::vector<T>(p, p + host.numel());
  }
  // The single element of a one-element tensor as double.
  double item() const;

  std::string description() const;  // "Tensor(f32, cpu, (2, 3))"

 private:
  static void copy_bytes_from_host(Tensor& dst, const void* src);

  std::shared_ptr<Storage> storage_;
  std::int64_t offset_ = 0;
  Shape shape_;
  Strides strides_;
  DType dtype_ = DType::f32;
  Device device_;
};

// Zeroes every defined tensor, as zero() on each would. Contiguous CUDA tensors go to their
// device in one batched launch per 64 tensors instead of a memset each (a model's gradients
// are hundreds of small tensors a step, each memset a launch of its own).
void zero_tensors(std::span<Tensor> tensors);

}  // namespace longnet
