// What `longnet train` and `longnet eval` read: the byte tokens of a text file (--data), of
// a built-in corpus (--dataset kjv: the King James Bible from Debian's bible-kjv package,
// public domain), or the synthetic passkey-retrieval task (--dataset passkey, whose batches
// are made rather than read), the batch source over them, and the byte-level model of a
// checkpoint that reads them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "longnet/core/device.hpp"
#include "longnet/model/data.hpp"
#include "longnet/model/longnet_lm.hpp"

namespace longnet::cli {

struct Corpus {
  std::vector<std::int32_t> tokens;  // empty for the passkey task
  std::string description;           // for messages: "the King James Bible (Debian bible-kjv)", a path, ...
  bool passkey = false;
};

// data_file: a text file, or empty for `dataset` (kjv or passkey).
Corpus load_corpus(const std::string& data_file, const std::string& dataset);

// Batches of batch_size x seq_len over the corpus: its text split into training and
// validation parts (validation_fraction held out), or the passkey task's batches.
std::unique_ptr<model::BatchSource> batch_source(const Corpus& corpus, double validation_fraction,
                                                 std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed);

// The LongNetLM of a checkpoint on `device`; `command` (e.g. "longnet eval") works on
// bytes, so the model must be byte-level (vocab_size 256): otherwise an error naming both.
std::unique_ptr<model::LongNetLM> load_byte_model(const std::string& checkpoint, Device device,
                                                  const std::string& command);

}  // namespace longnet::cli
