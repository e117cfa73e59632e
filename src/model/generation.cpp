// Sampling and generation (generation.hpp).
#include "longnet/model/generation.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "longnet/kernels/counter_rng.hpp"

namespace longnet::model {

void SamplingConfig::validate() const {
  require(temperature >= 0 && std::isfinite(temperature), "temperature = ", temperature, ": must be >= 0");
  require(top_k >= 0, "top_k = ", top_k, ": must be >= 0 (0: no limit)");
  require(top_p > 0 && top_p <= 1, "top_p = ", top_p, ": must be in (0, 1]");
}

std::int32_t sample_token(const std::vector<double>& logits, const SamplingConfig& config, std::uint64_t draw) {
  require(!logits.empty(), "sample_token: no logits");
  if (config.temperature == 0) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates by decreasing logit (ties by id, so the order is deterministic).
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
  });
  std::size_t keep = order.size();
  if (config.top_k > 0) keep = std::min(keep, static_cast<std::size_t>(config.top_k));
  std::vector<double> weights(keep);
  const double top = logits[static_cast<std::size_t>(order[0])];
  double total = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    weights[i] = std::exp((logits[static_cast<std::size_t>(order[i])] - top) / config.temperature);
    total += weights[i];
  }
  if (config.top_p < 1) {
    double mass = 0;
    std::size_t nucleus = 0;
    while (nucleus < keep && mass < config.top_p * total) mass += weights[nucleus++];
    keep = std::max<std::size_t>(nucleus, 1);
    total = std::accumulate(weights.begin(), weights.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  const std::uint64_t key = kernels::counter_key(config.seed, draw, 0x5A3D1E);
  const double u = static_cast<double>(kernels::counter_bits(key, 0) >> 11) * 0x1.0p-53 * total;
  double cumulative = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += weights[i];
    if (u < cumulative) return order[i];
  }
  return order[keep - 1];
}

GenerationResult generate(const LongNetLM& model, const std::vector<std::int32_t>& prompt, std::int64_t max_new_tokens,
                          const SamplingConfig& config, const std::function<void(std::int32_t)>& on_token) {
  config.validate();
  require(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
  require(max_new_tokens >= 0, "max_new_tokens = ", max_new_tokens, ": must be >= 0");
  using Clock = std::chrono::steady_clock;
  const auto prompt_length = static_cast<std::int64_t>(prompt.size());
  LongNetLM::DecodeState state = model.make_decode_state(1, prompt_length + max_new_tokens);
  GenerationResult result;
  result.cache_bytes = state.bytes();
  auto step = [&](std::int32_t token) { return model.decode(Tensor::from_vector<std::int32_t>({token}, {1}), state); };
  const auto start = Clock::now();
  Tensor logits = model.prefill(Tensor::from_vector(prompt, {1, prompt_length}), state);
  const auto prompt_done = Clock::now();
  for (std::int64_t i = 0; i < max_new_tokens; ++i) {
    const std::int32_t next =
        sample_token(logits.to_vector<double>(), config, static_cast<std::uint64_t>(prompt_length + i));
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 < max_new_tokens) logits = step(next);
  }
  result.prompt_seconds = std::chrono::duration<double>(prompt_done - start).count();
  result.generation_seconds = std::chrono::duration<double>(Clock::now() - prompt_done).count();
  return result;
}

}  // namespace longnet::model
