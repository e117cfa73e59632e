// The calling thread's current CUDA stream per device.
#include "longnet/core/stream.hpp"

#include <map>
#include <utility>

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "core/status_cuda.hpp"
#endif

namespace longnet {
namespace {
thread_local std::map<int, void*> current_streams;
}

Stream current_stream(int device) {
  const auto found = current_streams.find(device);
  return {found == current_streams.end() ? nullptr : found->second, device};
}

void set_current_stream(Stream stream) { current_streams[stream.device] = stream.handle; }

DeviceGuard::DeviceGuard(Device device) {
#ifdef LONGNET_WITH_CUDA
  if (!device.is_cuda()) return;
  LONGNET_CHECK(cudaGetDevice(&previous_));
  if (previous_ == device.index) {
    previous_ = -1;
    return;
  }
  LONGNET_CHECK(cudaSetDevice(device.index));
#else
  (void)device;
#endif
}

DeviceGuard::~DeviceGuard() {
#ifdef LONGNET_WITH_CUDA
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
#endif
}

void synchronize(Stream stream) {
#ifdef LONGNET_WITH_CUDA
  LONGNET_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
#endif
}

void stream_wait(Stream waiting, Stream done) {
  if (waiting.handle == done.handle && waiting.device == done.device) return;
  StreamEvent::record(done).wait_on(waiting);  // the event is released once the wait completes
}

StreamEvent StreamEvent::record(Stream stream) {
  StreamEvent recorded;
#ifdef LONGNET_WITH_CUDA
  int previous = 0;
  LONGNET_CHECK(cudaGetDevice(&previous));
  LONGNET_CHECK(cudaSetDevice(stream.device));
  cudaEvent_t event = nullptr;
  LONGNET_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  recorded.event_ = event;
  LONGNET_CHECK(cudaEventRecord(event, static_cast<cudaStream_t>(stream.handle)));
  LONGNET_CHECK(cudaSetDevice(previous));
#else
  (void)stream;
#endif
  return recorded;
}

StreamEvent::~StreamEvent() {
#ifdef LONGNET_WITH_CUDA
  if (event_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

StreamEvent::StreamEvent(StreamEvent&& other) noexcept : event_(other.event_) { other.event_ = nullptr; }

StreamEvent& StreamEvent::operator=(StreamEvent&& other) noexcept {
  if (this != &other) {
    StreamEvent released(std::move(*this));
    event_ = other.event_;
    other.event_ = nullptr;
  }
  return *this;
}

void StreamEvent::wait() const {
#ifdef LONGNET_WITH_CUDA
  if (event_ != nullptr) LONGNET_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
#endif
}

bool StreamEvent::done() const {
#ifdef LONGNET_WITH_CUDA
  if (event_ == nullptr) return true;
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it
    return false;
  }
  LONGNET_CHECK(status);
#endif
  return true;
}

void StreamEvent::wait_on(Stream waiting) const {
#ifdef LONGNET_WITH_CUDA
  if (event_ == nullptr) return;
  int previous = 0;
  LONGNET_CHECK(cudaGetDevice(&previous));
  LONGNET_CHECK(cudaSetDevice(waiting.device));
  LONGNET_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(waiting.handle), static_cast<cudaEvent_t>(event_), 0));
  LONGNET_CHECK(cudaSetDevice(previous));
#else
  (void)waiting;
#endif
}

SideStream::SideStream(int device) : stream_{nullptr, device} {
#ifdef LONGNET_WITH_CUDA
  const DeviceGuard guard(Device::cuda(device));
  cudaStream_t handle = nullptr;
  LONGNET_CHECK(cudaStreamCreateWithFlags(&handle, cudaStreamNonBlocking));
  stream_.handle = handle;
#endif
}

SideStream::~SideStream() {
#ifdef LONGNET_WITH_CUDA
  if (stream_.handle != nullptr) {
    (void)cudaStreamSynchronize(static_cast<cudaStream_t>(stream_.handle));
    (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream_.handle));
  }
#endif
}

void synchronize_device(int device) {
#ifdef LONGNET_WITH_CUDA
  int previous = 0;
  LONGNET_CHECK(cudaGetDevice(&previous));
  LONGNET_CHECK(cudaSetDevice(device));
  LONGNET_CHECK(cudaDeviceSynchronize());
  LONGNET_CHECK(cudaSetDevice(previous));
#else
  (void)device;
#endif
}

}  // namespace longnet
