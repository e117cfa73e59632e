// CUDA streams without CUDA types: a Stream is an opaque handle (a cudaStream_t inside).
// Library work on a CUDA device is issued on the calling thread's current stream for that
// device (default: the legacy default stream, which orders with all other work).
#pragma once

#include "longnet/core/device.hpp"

namespace longnet {

struct Stream {
  void* handle = nullptr;  // cudaStream_t; nullptr is the legacy default stream
  int device = 0;
};

Stream current_stream(int device);
void set_current_stream(Stream stream);
// Blocks until all work on the stream has finished (no-op without CUDA).
void synchronize(Stream stream);
// Blocks until all work on the device has finished.
void synchronize_device(int device);

// Makes `waiting` wait (on the device, the host does not block) for all work issued so
// far on `done`: an event recorded on `done` and waited for on `waiting` (no-op without
// CUDA or when both are the same stream).
void stream_wait(Stream waiting, Stream done);

// An event recorded on a stream: the work issued on it so far. Other streams wait for
// that work later (wait_on), after more has been issued on both; move-only, released
// with the object (a pending wait still completes). Without CUDA: an empty object.
class StreamEvent {
 public:
  StreamEvent() = default;
  static StreamEvent record(Stream stream);
  ~StreamEvent();
  StreamEvent(StreamEvent&& other) noexcept;
  StreamEvent& operator=(StreamEvent&& other) noexcept;
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;
  // Makes `waiting` wait (on the device) for the recorded work.
  void wait_on(Stream waiting) const;
  // Blocks the host until the recorded work has finished (no-op for an empty event).
  void wait() const;
  // Whether the recorded work has finished, without waiting (true for an empty event).
  bool done() const;

 private:
  void* event_ = nullptr;  // cudaEvent_t
};

// A stream of its own on `device` for work that overlaps the current stream (such as
// communication during a kernel): non-blocking, so it is ordered with other streams only
// by stream_wait. Destroyed with the object (after the work on it has finished).
class SideStream {
 public:
  explicit SideStream(int device);
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  Stream stream() const { return stream_; }

 private:
  Stream stream_;
};

// Makes `device` the calling thread's current CUDA device for the lifetime of a scope
// (no-op for the CPU or without CUDA).
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  [[maybe_unused]] int previous_ = -1;  // the device to restore (builds without CUDA never set it)
};

// Sets the current stream for the lifetime of a scope.
class StreamGuard {
 public:
  explicit StreamGuard(Stream stream) : previous_(current_stream(stream.device)) { set_current_stream(stream); }
  ~StreamGuard() { set_current_stream(previous_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

}  // namespace longnet
