// Weight gradients on a second CUDA stream (weight_gradient_overlap.hpp).
#include "longnet/nn/weight_gradient_overlap.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace longnet::nn {
namespace {

bool enabled_from_environment() {
  const char* value = std::getenv("LONGNET_WEIGHT_GRADIENT_STREAM");
  return value != nullptr && std::strcmp(value, "0") != 0;
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{enabled_from_environment()};
  return flag;
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

thread_local std::map<int, WeightGradientOverlap*> innermost;

}  // namespace

bool weight_gradient_overlap_enabled() { return enabled_flag().load(); }
void set_weight_gradient_overlap(bool enabled) { enabled_flag().store(enabled); }

WeightGradientOverlap::WeightGradientOverlap(Device device) : device_(device) {
  active_ = device.is_cuda() && weight_gradient_overlap_enabled();  // (a CUDA device means a CUDA build)
  if (!active_) return;
  side_ = side_stream(device.index);
  WeightGradientOverlap*& slot = innermost[device.index];
  outer_ = slot;
  slot = this;
}

WeightGradientOverlap::~WeightGradientOverlap() {
  if (!active_) return;
  try {
    join();
  } catch (...) {  // a failing device: its own error surfaces at the next call that checks
  }
  innermost[device_.index] = outer_;
}

WeightGradientOverlap* WeightGradientOverlap::active(Device device) {
  if (!device.is_cuda()) return nullptr;
  const auto found = innermost.find(device.index);
  return found == innermost.end() ? nullptr : found->second;
}

void WeightGradientOverlap::run(const std::function<void()>& work, std::vector<Tensor> keep) {
  if (!active_) return work();
  if (pending_.size() >= kMaxPending) retire_oldest();
  const Stream main = current_stream(device_.index);
  StreamEvent::record(main).wait_on(side_);
  {
    const StreamGuard on_side(side_);
    work();
  }
  pending_.push_back({StreamEvent::record(side_), std::move(keep)});
}

void WeightGradientOverlap::retire_oldest() {
  // The wait first: the kept tensors are then freed on the current stream behind it.
  pending_.front().done.wait_on(current_stream(device_.index));
  pending_.pop_front();
}

void WeightGradientOverlap::join() {
  while (!pending_.empty()) retire_oldest();
}

}  // namespace longnet::nn
