// The data the `longnet` commands train and evaluate on (corpus.hpp).
#include "corpus.hpp"

#include <cstdio>

#include "longnet/core/error.hpp"
#include "longnet/model/checkpoint.hpp"

namespace longnet::cli {
namespace {

// The King James text through Debian's `bible` program (package bible-kjv).
std::vector<std::int32_t> kjv_tokens() {
  const char* command = "bible -l1000 gen1:1-rev22:21 2>/dev/null";
  FILE* pipe = popen(command, "r");
  require(pipe != nullptr, "--dataset kjv: cannot run `bible` (install Debian's bible-kjv package: apt-get install ",
          "bible-kjv), or pass --data FILE or --dataset passkey");
  std::string text;
  char buffer[1 << 16];
  std::size_t n = 0;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
  const int status = pclose(pipe);
  require(status == 0 && text.size() > 100000, "--dataset kjv: `bible` failed or printed too little (", text.size(),
          " bytes); install Debian's bible-kjv package (apt-get install bible-kjv), or pass --data FILE ",
          "or --dataset passkey");
  return model::byte_tokens(text);
}

}  // namespace

Corpus load_corpus(const std::string& data_file, const std::string& dataset) {
  Corpus corpus;
  if (!data_file.empty()) {
    corpus.tokens = model::read_byte_tokens(data_file);
    corpus.description = data_file;
  } else if (dataset == "kjv") {
    corpus.tokens = kjv_tokens();
    corpus.description = "the King James Bible (Debian bible-kjv)";
  } else if (dataset == "passkey") {
    corpus.passkey = true;
    corpus.description = "the synthetic passkey-retrieval task";
  } else {
    throw Error(str("--dataset = '", dataset, "': must be kjv or passkey (or pass --data FILE)"));
  }
  return corpus;
}

std::unique_ptr<model::BatchSource> batch_source(const Corpus& corpus, double validation_fraction,
                                                 std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed) {
  if (corpus.passkey) return std::make_unique<model::PasskeyData>(batch_size, seq_len, seed);
  return std::make_unique<model::LanguageModelingData>(corpus.tokens, validation_fraction, batch_size, seq_len, seed);
}

std::unique_ptr<model::LongNetLM> load_byte_model(const std::string& checkpoint, Device device,
                                                  const std::string& command) {
  std::unique_ptr<model::LongNetLM> lm = model::load_longnet_lm(checkpoint, device);
  require(lm->config().vocab_size == model::kByteVocabulary, checkpoint, ": vocab_size = ", lm->config().vocab_size,
          ": `", command, "` works on bytes, so it needs a byte-level model (", model::kByteVocabulary, ")");
  return lm;
}

}  // namespace longnet::cli
