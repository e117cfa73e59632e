// Weight gradients on a second CUDA stream. In a transformer's backward each Linear's
// input gradient (dx = dy W) is on the critical path and its weight gradient (dW += dy^T
// x) is not: nothing reads dW until the optimizer. While a WeightGradientOverlap is alive
// on the calling thread for a CUDA device, Linear::backward issues dx's GEMM on the current
// stream and dW's (with its bias) on a side stream, which fills the current stream's
// memory-bound kernels, tails and launch gaps. The results are the same bits: the same
// kernels run, each gradient is written by one stream only.
//
// Ordering: the side stream waits for the current stream's work up to each Linear's
// backward (dy is written). The tensors the side stream reads (dy, x) and its scratch are
// kept alive until the current stream has waited for that work, so the stream-ordered pool
// (frees on the current stream) cannot hand their memory out while it is still read. At
// most kMaxPending Linears' work is in flight; join() (and the destructor) makes the current
// stream wait for all of it, before anything reads the gradients.
//
// The switch: set_weight_gradient_overlap(), default from LONGNET_WEIGHT_GRADIENT_STREAM
// (0 off, 1 on; unset: off).
#pragma once

#include <deque>
#include <functional>
#include <vector>

#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet::nn {

bool weight_gradient_overlap_enabled();
void set_weight_gradient_overlap(bool enabled);

class WeightGradientOverlap {
 public:
  static constexpr std::size_t kMaxPending = 4;

  // Active only for a CUDA device with the switch on; otherwise a no-op scope.
  explicit WeightGradientOverlap(Device device);
  ~WeightGradientOverlap();
  WeightGradientOverlap(const WeightGradientOverlap&) = delete;
  WeightGradientOverlap& operator=(const WeightGradientOverlap&) = delete;

  // The innermost active overlap of this thread for `device`, or null.
  static WeightGradientOverlap* active(Device device);

  // Runs `work` (kernels on the current stream, which is the side stream inside) after the
  // work issued so far on the current stream; `keep` stays alive until the current stream
  // has waited for it.
  void run(const std::function<void()>& work, std::vector<Tensor> keep);
  // The current stream waits for all the side stream's work; the kept tensors are released.
  void join();

 private:
  struct Pending {
    StreamEvent done;
    std::vector<Tensor> keep;
  };
  void retire_oldest();

  Device device_;
  bool active_ = false;
  Stream side_;
  WeightGradientOverlap* outer_ = nullptr;
  std::deque<Pending> pending_;
};

}  // namespace longnet::nn
