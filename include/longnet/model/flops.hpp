// Model FLOPs of one LongNetLM training step (forward + backward), the numerator of model
// FLOPs utilisation (MFU = model FLOPs per second / the device's peak):
//   dense     = 6 * matmul_parameters * tokens        (a weight costs 2 FLOPs per token
//                                                      forward and 4 backward)
//   attention = 3.5 * layers * dilated_attention_forward_flops(the model's causal
//               patterns, batch, seq_len, heads, head_dim)
//               (DESIGN 4: forward = 4 D per attended (query, key) pair, backward 2.5x)
// matmul_parameters are the GEMM weights: the q, k, v (or fused qkv) and out projections,
// fc1 and fc2 of every layer, and the LM head (counted also when tied to the embedding,
// whose lookup costs no FLOPs). Biases, LayerNorms, activations, dropout, the softmax of
// the loss and the optimizer are not model FLOPs: work that a faster implementation would
// not have to do does not raise MFU.
#pragma once

#include <cstdint>

#include "longnet/model/config.hpp"

namespace longnet::model {

struct TrainingFlops {
  std::int64_t matmul_parameters = 0;
  double dense = 0;      // 6 * matmul_parameters * tokens
  double attention = 0;  // 3.5 * layers * forward FLOPs of one attention layer
  double total() const { return dense + attention; }
};

TrainingFlops training_flops(const LongNetLMConfig& config, std::int64_t batch, std::int64_t seq_len);

}  // namespace longnet::model
