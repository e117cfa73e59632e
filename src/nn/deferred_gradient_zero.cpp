// The weight matrices' zero fill deferred to their first writer (deferred_gradient_zero.hpp).
#include "longnet/nn/deferred_gradient_zero.hpp"

#include <algorithm>

#include "longnet/core/error.hpp"
#include "longnet/core/runtime_switch.hpp"

namespace longnet::nn {
namespace {

RuntimeSwitch& deferred_zero_switch() {
  static RuntimeSwitch on{"LONGNET_DEFERRED_ZERO", RuntimeSwitch::Unset::off};
  return on;
}

thread_local DeferredGradientZero* open_scope = nullptr;

std::uintptr_t begin_of(const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data()); }

}  // namespace

bool deferred_gradient_zero_enabled() { return deferred_zero_switch().enabled(); }
void set_deferred_gradient_zero(bool enabled) { deferred_zero_switch().set(enabled); }

DeferredGradientZero::DeferredGradientZero(const std::vector<ParameterPtr>& parameters) {
  require(open_scope == nullptr, "DeferredGradientZero: another scope is open on this thread");
  std::vector<Tensor> now;
  std::vector<Deferred> matrices;
  for (const ParameterPtr& p : parameters) {
    const Tensor& g = p->grad;
    if (!g.defined() || g.numel() == 0) continue;
    if (g.dim() == 2 && g.is_contiguous()) {
      const std::uintptr_t begin = begin_of(g);
      matrices.push_back({begin, begin + static_cast<std::uintptr_t>(g.nbytes()), g});
    } else {
      now.push_back(g);
    }
  }
  // Sorted by address; one overlapping the one before (listed twice, or a view) is filled now.
  std::sort(matrices.begin(), matrices.end(), [](const Deferred& a, const Deferred& b) { return a.begin < b.begin; });
  for (Deferred& d : matrices) {
    if (!deferred_.empty() && d.begin < deferred_.back().end) {
      now.push_back(d.grad);
    } else {
      deferred_.push_back(std::move(d));
    }
  }
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
  auto first = std::lower_bound(deferred_.begin(), deferred_.end(), begin,
                                [](const Deferred& d, std::uintptr_t at) { return d.begin < at; });
  if (first != deferred_.end() && first->begin != begin) first = deferred_.end();
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
