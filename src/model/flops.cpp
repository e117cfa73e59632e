// Model FLOPs of a LongNetLM training step (flops.hpp).
#include "longnet/model/flops.hpp"

#include "longnet/attention/dilated_attention.hpp"

namespace longnet::model {

TrainingFlops training_flops(const LongNetLMConfig& config, std::int64_t batch, std::int64_t seq_len) {
  config.validate();
  require(batch >= 1 && seq_len >= 1, "training_flops: batch = ", batch, ", seq_len = ", seq_len, ": must be >= 1");
  const std::int64_t d = config.d_model, head_dim = d / config.heads;
  const std::int64_t kv = (config.kv_heads == 0 ? config.heads : config.kv_heads) * head_dim;
  const std::int64_t per_layer = d * d + 2 * kv * d + d * d + 2 * d * config.ffn_dim;
  TrainingFlops f;
  f.matmul_parameters = config.layers * per_layer + config.vocab_size * d;
  const double tokens = static_cast<double>(batch) * static_cast<double>(seq_len);
  f.dense = 6.0 * static_cast<double>(f.matmul_parameters) * tokens;
  const DilatedAttentionConfig attention = config.layer_config(1.0, false).attention.attention;
  DilatedAttentionConfig causal = attention;
  causal.causal = true;  // decoder self-attention
  f.attention = 3.5 * static_cast<double>(config.layers) *
                dilated_attention_forward_flops(causal, batch, seq_len, config.heads, head_dim);
  return f;
}

}  // namespace longnet::model
