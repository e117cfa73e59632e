// The weight matrices' zero fill deferred to their first writer (deferred_gradient_zero.hpp).
#include "longnet/nn/deferred_gradient_zero.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "longnet/core/error.hpp"

namespace longnet::nn {
namespace {

bool enabled_from_environment() {
  const char* value = std::getenv("LONGNET_DEFERRED_ZERO");
  return value != nullptr && std::strcmp(value, "1") == 0;
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{enabled_from_environment()};
  return flag;
}

thread_local DeferredGradientZero* open_scope = nullptr;

std::uintptr_t begin_of(const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data()); }

}  // namespace

bool deferred_gradient_zero_enabled() { return enabled_flag().load(); }
void set_deferred_gradient_zero(bool enabled) { enabled_flag().store(enabled); }

DeferredGradientZero::DeferredGradientZero(const std::vector<ParameterPtr>& parameters) {
  require(open_scope == nullptr, "DeferredGradientZero: another scope is open on this thread");
  std::vector<Tensor> now;
  for (const ParameterPtr& p : parameters) {
    const Tensor& g = p->grad;
    if (!g.defined() || g.numel() == 0) continue;
    const bool deferrable = g.dim() == 2 && g.is_contiguous();
    const std::uintptr_t begin = begin_of(g), end = begin + static_cast<std::uintptr_t>(g.nbytes());
    // A parameter listed twice, or overlapping another (a view), is filled now.
    const bool overlaps = std::any_of(deferred_.begin(), deferred_.end(),
                                      [&](const Deferred& d) { return d.begin < end && begin < d.end; });
    if (deferrable && !overlaps) {
      deferred_.push_back({begin, end, g});
    } else {
      now.push_back(g);
    }
  }
  std::sort(deferred_.begin(), deferred_.end(), [](const Deferred& a, const Deferred& b) { return a.begin < b.begin; });
  zero_tensors(now);
  open_scope = this;
  open_ = true;
}

DeferredGradientZero::~DeferredGradientZero() {
  if (!open_) return;
  try {
    close();
  } catch (...) {  // a failing device: its own error surfaces at the next call that checks
    open_scope = nullptr;
  }
}

DeferredGradientZero* DeferredGradientZero::active() { return open_scope; }

bool DeferredGradientZero::take(const Tensor& grad) {
  if (!grad.defined() || grad.numel() == 0) return false;
  const std::uintptr_t begin = begin_of(grad), end = begin + static_cast<std::uintptr_t>(grad.nbytes());
  // The deferred entries that tile [begin, end) exactly, back to back.
  auto first = std::find_if(deferred_.begin(), deferred_.end(), [&](const Deferred& d) { return d.begin == begin; });
  auto last = first;
  std::uintptr_t covered = begin;
  while (last != deferred_.end() && last->begin == covered && last->end <= end) covered = (last++)->end;
  if (grad.is_contiguous() && first != deferred_.end() && covered == end) {
    deferred_.erase(first, last);
    return true;
  }
  fill_overlapping(begin, end);
  return false;
}

void DeferredGradientZero::materialize(const Tensor& grad) {
  if (!grad.defined() || grad.numel() == 0) return;
  const std::uintptr_t begin = begin_of(grad);
  fill_overlapping(begin, begin + static_cast<std::uintptr_t>(grad.nbytes()));
}

bool DeferredGradientZero::deferred(const Tensor& grad) const {
  if (!grad.defined() || grad.numel() == 0) return false;
  const std::uintptr_t begin = begin_of(grad), end = begin + static_cast<std::uintptr_t>(grad.nbytes());
  return std::any_of(deferred_.begin(), deferred_.end(),
                     [&](const Deferred& d) { return d.begin < end && begin < d.end; });
}

void DeferredGradientZero::fill_overlapping(std::uintptr_t begin, std::uintptr_t end) {
  std::vector<Tensor> fill;
  std::vector<Deferred> kept;
  for (Deferred& d : deferred_) {
    if (d.begin < end && begin < d.end) {
      fill.push_back(d.grad);
    } else {
      kept.push_back(std::move(d));
    }
  }
  deferred_ = std::move(kept);
  zero_tensors(fill);
}

void DeferredGradientZero::close() {
  if (!open_) return;
  open_ = false;
  open_scope = nullptr;
  std::vector<Tensor> fill;
  for (Deferred& d : deferred_) fill.push_back(d.grad);
  deferred_.clear();
  zero_tensors(fill);
}

}  // namespace longnet::nn
