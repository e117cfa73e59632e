// Parameter gradients on a second CUDA stream (gradient_stream.hpp).
#include "longnet/core/gradient_stream.hpp"

#include <map>
#include <mutex>

#include "longnet/core/runtime_switch.hpp"

namespace longnet {
namespace {

RuntimeSwitch& gradient_stream_switch() {
  static RuntimeSwitch on{"LONGNET_GRADIENT_STREAM", RuntimeSwitch::Unset::on};
  return on;
}

// One side stream per device for the program's life (a stream per backward would cost its
// creation every step).
Stream side_stream(int device) {
  static std::mutex mutex;
  static auto* streams = new std::map<int, SideStream*>();  // never destroyed: used until exit
  const std::lock_guard<std::mutex> lock(mutex);
  SideStream*& s = (*streams)[device];
  if (s == nullptr) s = new SideStream(device);
  return s->stream();
}

thread_local std::map<int, GradientStream*> open_scopes;  // the active scope per device

}  // namespace

bool gradient_stream_enabled() { return gradient_stream_switch().enabled(); }
void set_gradient_stream(bool enabled) { gradient_stream_switch().set(enabled); }

GradientStream::GradientStream(Device device) : device_(device) {
  if (!device.is_cuda() || !gradient_stream_enabled()) return;  // (a CUDA device means a CUDA build)
  GradientStream*& open = open_scopes[device.index];
  if (open != nullptr) return;  // nested: the open scope takes this one's work
  active_ = true;
  side_ = side_stream(device.index);
  open = this;
}

GradientStream::~GradientStream() {
  if (!active_) return;
  try {
    join();
  } catch (...) {  // a failing device: its own error surfaces at the next call that checks
  }
  open_scopes[device_.index] = nullptr;
}

GradientStream* GradientStream::active(Device device) {
  if (!device.is_cuda()) return nullptr;
  const auto found = open_scopes.find(device.index);
  return found == open_scopes.end() ? nullptr : found->second;
}

void GradientStream::run(const std::function<void()>& work, std::vector<Tensor> keep) {
  if (!active_) return work();
  if (pending_.size() >= kMaxPending) retire_oldest();
  stream_wait(side_, current_stream(device_.index));
  {
    const StreamGuard on_side(side_);
    work();
  }
  pending_.push_back({StreamEvent::record(side_), std::move(keep)});
}

StreamEvent GradientStream::run_ahead(const std::function<void()>& work, std::vector<Tensor> keep) {
  if (!active_) {
    work();
    return {};
  }
  run(work, std::move(keep));
  return StreamEvent::record(side_);
}

void GradientStream::retire_oldest() {
  // The wait first: the kept tensors are then freed on the current stream behind it.
  pending_.front().done.wait_on(current_stream(device_.index));
  pending_.pop_front();
}

void GradientStream::join() {
  while (!pending_.empty()) retire_oldest();
}

}  // namespace longnet
