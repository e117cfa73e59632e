// The pending loss of the language-model interface (language_model.hpp).
#include "longnet/model/language_model.hpp"

#include <utility>

namespace longnet::model {

PendingLoss::PendingLoss(Tensor loss_sum, std::int64_t tokens) : tokens_(tokens) {
  require(loss_sum.defined() && loss_sum.dtype() == DType::f64 && loss_sum.numel() == 1,
          "PendingLoss: the loss sum must be an f64 tensor of one element");
  require(tokens >= 0, "PendingLoss: tokens = ", tokens, ": must be >= 0");
  loss_sum_ = PendingRead(loss_sum);
}

double PendingLoss::value() const {
  if (!loss_sum_.defined()) return 0.0;
  return tokens_ > 0 ? loss_sum_.item() / static_cast<double>(tokens_) : 0.0;
}

}  // namespace longnet::model
