// The shared token loss (token_loss.hpp).
#include "longnet/model/token_loss.hpp"

namespace longnet::model {

PendingLoss TokenLoss::forward(const Tensor& logits, const Tensor& targets) {
  require(targets.defined() && (targets.dtype() == DType::i32 || targets.dtype() == DType::i64), "targets must be ",
          "an int32 or int64 tensor");
  require(
      targets.dim() == 2 && logits.dim() == 3 && targets.size(0) == logits.size(0) && targets.size(1) == logits.size(1),
      "targets have shape ", shape_to_string(targets.shape()), ": must be (batch, seq_len) = (", logits.size(0), ", ",
      logits.size(1), ")");
  // int64 ids are checked before narrowing to int32 (the copy would saturate one beyond
  // it); cross_entropy_forward checks and counts the narrowed ids on this host copy.
  if (targets.dtype() == DType::i64) {
    const Tensor wide = targets.to(Device::cpu()).contiguous();
    const std::int64_t* ids = wide.data<std::int64_t>();
    for (std::int64_t i = 0; i < wide.numel(); ++i) {
      require(ids[i] == kIgnoreIndex || (ids[i] >= 0 && ids[i] < logits.size(2)), "targets[", i, "] = ", ids[i],
              ": must be in [0, ", logits.size(2), ") or ", kIgnoreIndex, " (ignored)");
    }
  }
  shape_ = logits.shape();
  logits_ = nn::as_rows(logits, logits.size(2));
  const Tensor narrow_targets = targets.to(Device::cpu(), DType::i32).contiguous().view({-1});
  targets_ = narrow_targets.to(logits.device());
  result_ = nn::cross_entropy_forward(logits_, targets_, narrow_targets, kIgnoreIndex);
  return {result_.loss_sum, result_.count};
}

Tensor TokenLoss::backward(double loss_scale) const {
  require(logits_.defined(), "backward called before forward_loss");
  const double scale = result_.count > 0 ? loss_scale / static_cast<double>(result_.count) : 0.0;
  return nn::cross_entropy_backward(logits_, targets_, result_, kIgnoreIndex, scale).view(shape_);
}

}  // namespace longnet::model
