// The pending loss of the language-model interface (language_model.hpp).
#include "longnet/model/language_model.hpp"

#include <utility>

namespace longnet::model {

PendingLoss::PendingLoss(Tensor loss_sum, std::int64_t tokens) : loss_sum_(std::move(loss_sum)), tokens_(tokens) {
  require(loss_sum_.defined() && loss_sum_.dtype() == DType::f64 && loss_sum_.numel() == 1,
          "PendingLoss: the loss sum must be an f64 tensor of one element");
  require(tokens >= 0, "PendingLoss: tokens = ", tokens, ": must be >= 0");
}

double PendingLoss::value() const {
  if (!loss_sum_.defined()) return 0.0;
  return tokens_ > 0 ? loss_sum_.item() / static_cast<double>(tokens_) : 0.0;
}

}  // namespace longnet::model
