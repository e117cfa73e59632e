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

}  // namespace longnet::model
