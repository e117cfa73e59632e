// Tensor copies and fills: host loops with dtype conversion, CUDA kernels for device
// tensors, and staging through contiguous buffers across devices.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype_dispatch.hpp"
#include "core/strided_copy.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "core/status_cuda.hpp"
#endif

namespace longnet {
namespace {

// ---- value conversion (host) ---------------------------------------------------------

template <class T>
constexpr bool is_half_v = std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>;

template <class Int>
Int saturate(double value) {
  if (std::isnan(value)) return 0;
  constexpr double lo = static_cast<double>(std::numeric_limits<Int>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<Int>::max());
  if (value <= lo) return std::numeric_limits<Int>::min();
  if (value >= hi) return std::numeric_limits<Int>::max();
  return static_cast<Int>(value);
}

template <class Dst, class Src>
Dst convert_value(Src value) {
  if constexpr (std::is_same_v<Dst, Src>) {
    return value;
  } else if constexpr (is_half_v<Src>) {
    return convert_value<Dst>(static_cast<float>(value));  // exact widening
  } else if constexpr (is_half_v<Dst>) {
    if constexpr (std::is_same_v<Src, float> || std::is_same_v<Src, double>)
      return Dst(value);
    else
      return Dst(static_cast<double>(value));
  } else if constexpr (std::is_integral_v<Dst>) {
    return saturate<Dst>(static_cast<double>(value));
  } else {
    return static_cast<Dst>(value);
  }
}

// ---- host strided copy ---------------------------------------------------------------

template <class Dst, class Src>
void host_copy_typed(const detail::StridedCopy& c) {
  auto* dst = static_cast<Dst*>(c.dst);
  const auto* src = static_cast<const Src*>(c.src);
  const int rank = c.rank;
  const std::int64_t inner = rank ? c.shape[rank - 1] : 1;
  const std::int64_t dst_inner_stride = rank ? c.dst_strides[rank - 1] : 1;
  const std::int64_t src_inner_stride = rank ? c.src_strides[rank - 1] : 1;
  std::int64_t outer = 1;
  for (int d = 0; d + 1 < rank; ++d) outer *= c.shape[d];
  parallel_for(outer, std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(inner, 1)),
               [&](std::int64_t begin, std::int64_t end) {
                 for (std::int64_t row = begin; row < end; ++row) {
                   std::int64_t dst_offset = 0, src_offset = 0, rest = row;
                   for (int d = rank - 2; d >= 0; --d) {
                     const std::int64_t index = rest % c.shape[d];
                     rest /= c.shape[d];
                     dst_offset += index * c.dst_strides[d];
                     src_offset += index * c.src_strides[d];
                   }
                   Dst* out = dst + dst_offset;
                   const Src* in = src + src_offset;
                   if (src == nullptr) {
                     const Dst value = convert_value<Dst>(c.fill_value);
                     for (std::int64_t i = 0; i < inner; ++i) out[i * dst_inner_stride] = value;
                   } else if (dst_inner_stride == 1 && src_inner_stride == 1) {
                     for (std::int64_t i = 0; i < inner; ++i) out[i] = convert_value<Dst>(in[i]);
                   } else {
                     for (std::int64_t i = 0; i < inner; ++i) {
                       out[i * dst_inner_stride] = convert_value<Dst>(in[i * src_inner_stride]);
                     }
                   }
                 }
               });
}

void host_copy(const detail::StridedCopy& c) {
  detail::dispatch_dtype(c.dst_dtype, [&](auto dst_tag) {
    using Dst = decltype(dst_tag);
    if (c.src == nullptr) {
      host_copy_typed<Dst, double>(c);  // fill: Src is only a placeholder
      return;
    }
    detail::dispatch_dtype(c.src_dtype, [&](auto src_tag) { host_copy_typed<Dst, decltype(src_tag)>(c); });
  });
}

// Merges adjacent dimensions that are laid out contiguously relative to each other in
// both tensors, so most copies become one long inner loop; drops size-1 dimensions.
detail::StridedCopy describe(const Tensor& dst, const Tensor* src) {
  detail::StridedCopy c;
  c.dst = dst.data();
  c.dst_dtype = dst.dtype();
  if (src) {
    c.src = src->data();
    c.src_dtype = src->dtype();
  }
  std::vector<std::int64_t> shape, ds, ss;
  for (int d = 0; d < dst.dim(); ++d) {
    const auto ud = static_cast<std::size_t>(d);
    if (dst.shape()[ud] == 1) continue;
    const std::int64_t sstride = src ? src->strides()[ud] : 0;
    if (!shape.empty() && ds.back() == dst.strides()[ud] * dst.shape()[ud] && ss.back() == sstride * dst.shape()[ud]) {
      shape.back() *= dst.shape()[ud];
      ds.back() = dst.strides()[ud];
      ss.back() = sstride;
    } else {
      shape.push_back(dst.shape()[ud]);
      ds.push_back(dst.strides()[ud]);
      ss.push_back(sstride);
    }
  }
  require(static_cast<int>(shape.size()) <= detail::kMaxCopyRank, "tensor copy: rank ", shape.size(),
          " after merging dimensions exceeds ", detail::kMaxCopyRank);
  c.rank = static_cast<int>(shape.size());
  for (int d = 0; d < c.rank; ++d) {
    const auto ud = static_cast<std::size_t>(d);
    c.shape[d] = shape[ud];
    c.dst_strides[d] = ds[ud];
    c.src_strides[d] = ss[ud];
  }
  return c;
}

#ifdef LONGNET_WITH_CUDA
cudaStream_t stream_of(Device device) { return static_cast<cudaStream_t>(current_stream(device.index).handle); }

void set_device(Device device) { LONGNET_CHECK(cudaSetDevice(device.index)); }

// Page-locked (cudaMallocHost, cudaHostRegister) host memory, which copies read asynchronously.
bool is_pinned(const void* host) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, host) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;  // unknown: treat as pinned, i.e. wait
  }
  return attributes.type == cudaMemoryTypeHost;
}
#endif

// Copies raw bytes between a contiguous host/device buffer and another.
void copy_raw(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef LONGNET_WITH_CUDA
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    LONGNET_CHECK(cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, bytes));
    return;
  }
  const Device gpu = dst_device.is_cuda() ? dst_device : src_device;
  set_device(gpu);
  const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                              : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
  LONGNET_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream_of(gpu)));
  // The copy is done with the host memory when this returns: a device-to-host copy waits
  // for the stream's work. From pageable host memory cudaMemcpyAsync has staged (or
  // copied) the source before it returns, so an upload need not wait for the device: a
  // wait there would stall the host until all work queued before it ran (an upload in
  // the middle of a step, the loss's targets, left the device idle while the host then
  // queued the rest). Pinned host memory is read by the device later: wait for it.
  if (kind == cudaMemcpyDeviceToHost || (kind == cudaMemcpyHostToDevice && is_pinned(src))) {
    LONGNET_CHECK(cudaStreamSynchronize(stream_of(gpu)));
  }
#else
  throw Error("tensor copy: a CUDA tensor exists in a build without CUDA");
#endif
}

void run_copy(const Tensor& dst, const detail::StridedCopy& c) {
  if (dst.device().is_cpu()) {
    host_copy(c);
    return;
  }
#ifdef LONGNET_WITH_CUDA
  set_device(dst.device());
  detail::cuda_strided_copy(c, current_stream(dst.device().index).handle);
#else
  throw Error("tensor copy: a CUDA tensor exists in a build without CUDA");
#endif
}

bool may_overlap(const Tensor& a, const Tensor& b) {
  return a.storage() == b.storage() || (a.device() == b.device() && a.storage()->data() == b.storage()->data());
}

}  // namespace

void Tensor::copy_from(const Tensor& src_in) {
  require(defined() && src_in.defined(), "Tensor::copy_from: undefined tensor");
  require(shape_ == src_in.shape(), "Tensor::copy_from: source shape ", shape_to_string(src_in.shape()),
          " differs from destination shape ", shape_to_string(shape_));
  if (numel() == 0) return;
  const Tensor src = may_overlap(*this, src_in) ? src_in.clone() : src_in;

  if (device_ == src.device()) {
    if (dtype_ == src.dtype() && is_contiguous() && src.is_contiguous()) {
      copy_raw(data(), device_, src.data(), src.device(), nbytes());
      return;
    }
    run_copy(*this, describe(*this, &src));
    return;
  }
  // Across devices: convert and compact on the source's device, move the bytes, and
  // scatter on the destination's device if the destination is strided.
  const Tensor staged = src.to(src.device(), dtype_).contiguous();
  if (is_contiguous()) {
    copy_raw(data(), device_, staged.data(), staged.device(), nbytes());
    return;
  }
  Tensor landed = empty(shape_, dtype_, device_);
  copy_raw(landed.data(), device_, staged.data(), staged.device(), nbytes());
  copy_from(landed);
}

void Tensor::fill(double value) {
  require(defined(), "Tensor::fill: undefined tensor");
  if (numel() == 0) return;
  detail::StridedCopy c = describe(*this, nullptr);
  c.fill_value = value;
  run_copy(*this, c);
}

void Tensor::zero() {
  if (is_contiguous() && defined()) {
    if (device_.is_cpu()) {
      std::memset(data(), 0, nbytes());
      return;
    }
#ifdef LONGNET_WITH_CUDA
    set_device(device_);
    LONGNET_CHECK(cudaMemsetAsync(data(), 0, nbytes(), stream_of(device_)));
    return;
#endif
  }
  fill(0.0);
}

void zero_tensors(std::span<Tensor> tensors) {
#ifdef LONGNET_WITH_CUDA
  // Contiguous CUDA tensors, grouped by device, as byte ranges for the batched kernel.
  std::vector<std::pair<int, detail::ZeroRange>> ranges;
  for (Tensor& t : tensors) {
    if (t.defined() && t.device().is_cuda() && t.is_contiguous() && t.numel() > 0) {
      ranges.push_back({t.device().index, {t.data(), static_cast<std::uint64_t>(t.nbytes())}});
    } else if (t.defined()) {
      t.zero();
    }
  }
  std::stable_sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t first = 0; first < ranges.size();) {
    const int device = ranges[first].first;
    std::vector<detail::ZeroRange> mine;
    for (; first < ranges.size() && ranges[first].first == device; ++first) mine.push_back(ranges[first].second);
    set_device(Device::cuda(device));
    detail::cuda_zero_ranges(mine.data(), mine.size(), stream_of(Device::cuda(device)));
  }
#else
  for (Tensor& t : tensors)
    if (t.defined()) t.zero();
#endif
}

void Tensor::copy_bytes_from_host(Tensor& dst, const void* src) {
  copy_raw(dst.data(), dst.device(), src, Device::cpu(), dst.nbytes());
}

}  // namespace longnet
