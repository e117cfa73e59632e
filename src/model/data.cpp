// Byte-level tokens and language-modelling batches (data.hpp).
#include "longnet/model/data.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>

#include "longnet/kernels/counter_rng.hpp"

namespace longnet::model {

std::vector<std::int32_t> byte_tokens(std::string_view text) {
  std::vector<std::int32_t> out(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string bytes_of(const std::vector<std::int32_t>& tokens) {
  std::string out(tokens.size(), '\0');
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    require(tokens[i] >= 0 && tokens[i] < kByteVocabulary, "token ", tokens[i], " at ", i, " is not a byte");
    out[i] = static_cast<char>(static_cast<unsigned char>(tokens[i]));
  }
  return out;
}

std::vector<std::int32_t> read_byte_tokens(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), path.string(), ": cannot open the text file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  require(!in.bad(), path.string(), ": read error");
  require(!text.empty(), path.string(), ": the text file is empty");
  return byte_tokens(text);
}

LanguageModelingData::LanguageModelingData(std::vector<std::int32_t> tokens, double validation_fraction,
                                           std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed)
    : tokens_(std::move(tokens)), batch_size_(batch_size), seq_len_(seq_len), seed_(seed) {
  require(batch_size >= 1, "batch_size = ", batch_size, ": must be >= 1");
  require(seq_len >= 1, "seq_len = ", seq_len, ": must be >= 1");
  require(validation_fraction > 0 && validation_fraction < 1, "validation_fraction = ", validation_fraction,
          ": must be in (0, 1)");
  const auto n = static_cast<double>(tokens_.size());
  split_ = static_cast<std::size_t>(n * (1.0 - validation_fraction));
  const auto window = static_cast<std::size_t>(seq_len + 1);
  require(split_ >= window && tokens_.size() - split_ >= window, "the data has ", tokens_.size(),
          " tokens: with validation_fraction = ", validation_fraction,
          " both parts need at least seq_len + 1 = ", window, " tokens (use more text or a shorter seq_len)");
}

Batch LanguageModelingData::window_batch(const std::vector<std::int64_t>& offsets) const {
  Tensor inputs = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  Tensor targets = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  std::int32_t* in = inputs.data<std::int32_t>();
  std::int32_t* out = targets.data<std::int32_t>();
  for (std::int64_t b = 0; b < batch_size_; ++b) {
    const std::int32_t* window = tokens_.data() + offsets[static_cast<std::size_t>(b)];
    std::copy(window, window + seq_len_, in + b * seq_len_);
    std::copy(window + 1, window + 1 + seq_len_, out + b * seq_len_);
  }
  return {inputs, targets, Tensor()};
}

Batch LanguageModelingData::train_batch(std::int64_t step, std::int64_t micro_step) const {
  const std::uint64_t key =
      kernels::counter_key(seed_ ^ 0xDA7Aull, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(micro_step));
  const auto choices = static_cast<std::uint64_t>(split_) - static_cast<std::uint64_t>(seq_len_);  // >= 1
  std::vector<std::int64_t> offsets;
  for (std::int64_t b = 0; b < batch_size_; ++b) {
    offsets.push_back(static_cast<std::int64_t>(kernels::counter_bits(key, static_cast<std::uint64_t>(b)) % choices));
  }
  return window_batch(offsets);
}

Batch LanguageModelingData::validation_batch(std::int64_t index) const {
  const auto windows =
      static_cast<std::int64_t>((tokens_.size() - split_ - 1) / static_cast<std::size_t>(seq_len_));  // >= 1
  std::vector<std::int64_t> offsets;
  for (std::int64_t b = 0; b < batch_size_; ++b) {
    const std::int64_t window = (index * batch_size_ + b) % windows;
    offsets.push_back(static_cast<std::int64_t>(split_) + window * seq_len_);
  }
  return window_batch(offsets);
}

namespace {
constexpr std::string_view kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";
constexpr std::string_view kQuestion = "What is the pass key? The pass key is ";
constexpr std::string_view kNeedle = "The pass key is ";
}  // namespace

PasskeyData::PasskeyData(std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed)
    : batch_size_(batch_size), seq_len_(seq_len), seed_(seed) {
  require(batch_size >= 1, "batch_size = ", batch_size, ": must be >= 1");
  const auto shortest = static_cast<std::int64_t>(kNeedle.size() + kQuestion.size()) + 2 * (kDigits + 2);
  require(seq_len >= shortest, "seq_len = ", seq_len, ": the passkey task needs at least ", shortest, " tokens");
}

PasskeyData::Sequence PasskeyData::sequence(std::uint64_t key, KeyPlacement placement) const {
  std::string digits;
  for (std::int64_t d = 0; d < kDigits; ++d) {
    digits += static_cast<char>('0' + kernels::counter_bits(key, static_cast<std::uint64_t>(d)) % 10);
  }
  const std::string needle = std::string(kNeedle) + digits + ". ";
  const std::string question = std::string(kQuestion) + digits + ".";
  const auto length = static_cast<std::size_t>(seq_len_ + 1);
  const std::size_t room = length - question.size() - needle.size();  // filler bytes
  // Where the key starts in the filler: uniform in [0, room], or room - distance with
  // log(1 + distance) uniform, so that near keys, from which copying is learnt, are common.
  std::size_t needle_at = kernels::counter_bits(key, 100) % (room + 1);
  if (placement == KeyPlacement::log_uniform) {
    const double u = static_cast<double>(kernels::counter_bits(key, 101) >> 11) * 0x1.0p-53;  // [0, 1)
    const auto distance = static_cast<std::size_t>(std::exp(u * std::log(static_cast<double>(room) + 1.0))) - 1;
    needle_at = room - std::min(distance, room);
  }
  Sequence s;
  for (std::size_t i = 0; s.text.size() < needle_at; ++i) s.text += kFiller[i % kFiller.size()];
  s.needle_position = s.text.size();
  s.text += needle;
  for (std::size_t i = needle_at; s.text.size() < length - question.size(); ++i) s.text += kFiller[i % kFiller.size()];
  s.key_position = s.text.size() + kQuestion.size();
  s.text += question;
  return s;
}

Batch PasskeyData::make_batch(std::uint64_t key, KeyPlacement placement) const {
  Tensor inputs = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  Tensor targets = Tensor::full({batch_size_, seq_len_}, kIgnoreIndex, DType::i32);
  std::int32_t* in = inputs.data<std::int32_t>();
  std::int32_t* out = targets.data<std::int32_t>();
  for (std::int64_t b = 0; b < batch_size_; ++b) {
    const Sequence s = sequence(kernels::mix64(key ^ static_cast<std::uint64_t>(b)), placement);
    for (std::int64_t i = 0; i < seq_len_; ++i)
      in[b * seq_len_ + i] = static_cast<unsigned char>(s.text[static_cast<std::size_t>(i)]);
    // The target of input position i is byte i + 1: score the key digits only.
    for (std::int64_t d = 0; d < kDigits; ++d) {
      const std::size_t digit = s.key_position + static_cast<std::size_t>(d);
      out[b * seq_len_ + static_cast<std::int64_t>(digit) - 1] = static_cast<unsigned char>(s.text[digit]);
    }
  }
  return {inputs, targets, Tensor()};
}

Batch PasskeyData::train_batch(std::int64_t step, std::int64_t micro_step) const {
  return make_batch(kernels::counter_key(seed_ ^ 0x9A55ull, static_cast<std::uint64_t>(step),
                                         static_cast<std::uint64_t>(micro_step)),
                    KeyPlacement::log_uniform);
}

Batch PasskeyData::validation_batch(std::int64_t index) const {
  return make_batch(kernels::counter_key(seed_ ^ 0x9A55ull, static_cast<std::uint64_t>(index), 1ull << 40),
                    KeyPlacement::uniform);
}

}  // namespace longnet::model
