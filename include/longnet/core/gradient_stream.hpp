// Parameter gradients on a second CUDA stream. In a transformer's backward each Linear's
// input gradient (dx = dy W) is on the critical path and its weight gradient (dW += x^T dy)
// is not: nothing reads a parameter's gradient until the optimizer. While a GradientStream
// is alive on the calling thread for a CUDA device, work that only writes parameter
// gradients goes onto a side stream: Linear::backward's weight and bias gradients (dx's GEMM
// stays on the current stream), LayerNorm backward's column totals. The side stream then
// fills the current stream's memory-bound kernels, tails and launch gaps. The results are
// the same bits: the same kernels run, each gradient is written by one stream only.
//
// Ordering: the side stream waits for the current stream's work up to each run() (its
// inputs are written). The tensors the side work reads are kept alive until the current
// stream has waited for that work, so the stream-ordered pool (frees on the current
// stream) cannot hand their memory out while it is still read. At most kMaxPending runs are
// in flight; join() (and the destructor) makes the current stream wait for all of them,
// before anything reads the gradients. A scope opened while another is open (same thread
// and device) is part of it: the open one takes its work and joins it at its own end, so a
// caller can let its own later work (LongNetLM: the embedding's backward) run beside the
// weight gradients of a scope it calls into (nn::stack_backward's).
//
// The switch: set_gradient_stream(), default from LONGNET_GRADIENT_STREAM (0 off; unset or
// anything else on).
#pragma once

#include <deque>
#include <functional>
#include <vector>

#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet {

bool gradient_stream_enabled();
void set_gradient_stream(bool enabled);

class GradientStream {
 public:
  static constexpr std::size_t kMaxPending = 8;

  // Active only for a CUDA device with the switch on and no scope open for it on this
  // thread; otherwise a no-op scope (nested: its work goes to the open one).
  explicit GradientStream(Device device);
  ~GradientStream();
  GradientStream(const GradientStream&) = delete;
  GradientStream& operator=(const GradientStream&) = delete;

  // The active GradientStream of this thread for `device` (the outermost open one), or null.
  static GradientStream* active(Device device);

  // Runs `work` (kernels on the current stream, which is the side stream inside) after the
  // work issued so far on the current stream; `keep` stays alive until the current stream
  // has waited for it. Inactive: runs `work` at once.
  void run(const std::function<void()>& work, std::vector<Tensor> keep);
  // Work whose result the current stream reads later (a zero fill ahead of the kernels that
  // accumulate into it): issued as run() does, so it overlaps the current stream's work
  // until then; the current stream waits on the returned event before it reads the result.
  // (join() waits for it too, so `keep` is safe if the reader never comes.) Inactive: runs
  // `work` at once and returns an empty event, whose wait does nothing.
  StreamEvent run_ahead(const std::function<void()>& work, std::vector<Tensor> keep);
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
  std::deque<Pending> pending_;
};

}  // namespace longnet
