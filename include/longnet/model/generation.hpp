// Text generation with LongNetLM: the prompt and each new token go through
// LongNetLM::decode, whose per-layer KV caches hold only the current segment of every
// dilation pattern (memory bounded by the segment lengths, not by the generated length),
// and the next token is sampled from the logits with temperature, top-k and top-p. Every
// draw is a pure function of (seed, position), so a generation is reproducible.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "longnet/model/longnet_lm.hpp"

namespace longnet::model {

struct SamplingConfig {
  double temperature = 1.0;  // 0: greedy (argmax)
  std::int64_t top_k = 0;    // 0: all tokens
  double top_p = 1.0;        // nucleus: the smallest set of most likely tokens with mass >= top_p
  std::uint64_t seed = 0;
  void validate() const;
};

// The token drawn from `logits` for draw number `draw`.
std::int32_t sample_token(const std::vector<double>& logits, const SamplingConfig& config, std::uint64_t draw);

struct GenerationResult {
  std::vector<std::int32_t> tokens;  // the generated tokens (without the prompt)
  double prompt_seconds = 0;
  double generation_seconds = 0;
  std::size_t cache_bytes = 0;
  double tokens_per_second() const {
    return generation_seconds > 0 ? static_cast<double>(tokens.size()) / generation_seconds : 0.0;
  }
};

// Generates max_new_tokens tokens after `prompt` (non-empty); on_token (if given) sees each
// new token as it is drawn. The cache is sized for prompt + max_new_tokens positions and
// bounded by the segment lengths.
GenerationResult generate(const LongNetLM& model, const std::vector<std::int32_t>& prompt, std::int64_t max_new_tokens,
                          const SamplingConfig& config, const std::function<void(std::int32_t)>& on_token = {});

}  // namespace longnet::model
