// Training data for language models: byte-level tokens (a token per byte, vocabulary 256),
// a train/validation split, and batches drawn as pure functions of (seed, step,
// micro-step), so a resumed run sees exactly the batches of an uninterrupted one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/model/language_model.hpp"

namespace longnet::model {

inline constexpr std::int64_t kByteVocabulary = 256;

std::vector<std::int32_t> byte_tokens(std::string_view text);
// Bytes of token ids (each must be in [0, 256)).
std::string bytes_of(const std::vector<std::int32_t>& tokens);
// The byte tokens of a file; Error naming the file when it cannot be read or is empty.
std::vector<std::int32_t> read_byte_tokens(const std::filesystem::path& path);

// Where the training loop gets its batches.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual Batch train_batch(std::int64_t step, std::int64_t micro_step) const = 0;
  virtual Batch validation_batch(std::int64_t index) const = 0;
  virtual std::int64_t tokens_per_batch() const = 0;
};

// Next-token prediction on a token stream. The last `validation_fraction` of the stream
// is held out. A training batch takes batch_size windows of seq_len + 1 tokens at offsets
// drawn from (seed, step, micro_step); validation batch i takes consecutive windows of the
// held-out part (wrapping around), so evaluations are comparable across a run.
class LanguageModelingData final : public BatchSource {
 public:
  LanguageModelingData(std::vector<std::int32_t> tokens, double validation_fraction, std::int64_t batch_size,
                       std::int64_t seq_len, std::uint64_t seed);
  Batch train_batch(std::int64_t step, std::int64_t micro_step) const override;
  Batch validation_batch(std::int64_t index) const override;
  std::int64_t tokens_per_batch() const override { return batch_size_ * seq_len_; }
  std::int64_t train_tokens() const { return static_cast<std::int64_t>(split_); }
  std::int64_t validation_tokens() const { return static_cast<std::int64_t>(tokens_.size() - split_); }

 private:
  Batch window_batch(const std::vector<std::int64_t>& offsets) const;

  std::vector<std::int32_t> tokens_;
  std::size_t split_ = 0;
  std::int64_t batch_size_, seq_len_;
  std::uint64_t seed_;
};

// Synthetic long-range retrieval, the passkey test (Mohtashami & Jaggi, 2023) as bytes:
// filler sentences hide "The pass key is DDDDD." at a random place, and every sequence
// ends with "What is the pass key? The pass key is DDDDD." Only the predictions of the
// final key's digits are scored (every other target is ignored), so the loss measures
// whether the model retrieves the key across the distance to it: what a long context and
// a dilated pattern that reaches back buy. Keys and positions are functions of (seed,
// step, micro-step, sequence); validation sequences use a separate stream. Validation
// places the key uniformly (the task as measured); training places it with log(1 + its
// distance) uniform, so that near keys are common: from five scored bytes a sequence a
// model learns to copy from near keys first, and with uniform placement at 256 bytes or
// more it learnt nothing (docs/guides/training.md).
class PasskeyData final : public BatchSource {
 public:
  PasskeyData(std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed);
  Batch train_batch(std::int64_t step, std::int64_t micro_step) const override;
  Batch validation_batch(std::int64_t index) const override;
  std::int64_t tokens_per_batch() const override { return batch_size_ * seq_len_; }
  // The bytes of one sequence of seq_len + 1 tokens and where its key digits start.
  struct Sequence {
    std::string text;
    std::size_t key_position = 0;     // first digit of the key at the end
    std::size_t needle_position = 0;  // first byte of "The pass key is ..."
  };
  enum class KeyPlacement { uniform, log_uniform };
  Sequence sequence(std::uint64_t key, KeyPlacement placement = KeyPlacement::uniform) const;
  static constexpr std::int64_t kDigits = 5;

 private:
  Batch make_batch(std::uint64_t key, KeyPlacement placement) const;
  std::int64_t batch_size_, seq_len_;
  std::uint64_t seed_;
};

}  // namespace longnet::model
