// `longnet eval`: how well a LongNetLM checkpoint predicts held-out data, at one or more
// sequence lengths: the mean loss (nats and bits a byte, perplexity) and greedy accuracy —
// of the next byte for text, and for the passkey task of the key's digits and of whole
// keys retrieved, which shows what a longer context buys. A table on stdout, and optionally
// JSON and a chart of the loss (and the keys retrieved) against the sequence length.
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "corpus.hpp"
#include "longnet/io/atomic_file.hpp"
#include "longnet/model/evaluation.hpp"
#include "measure.hpp"
#include "parse_values.hpp"
#include "plot/plot.hpp"

namespace longnet::cli {
namespace {

struct EvalOptions {
  std::string checkpoint = "longnet-run/checkpoint.safetensors";
  std::string data;  // a text file; empty: --dataset
  std::string dataset = "kjv";
  double validation_fraction = 0.05;
  std::string seq_lens = "128";
  std::int64_t batch_size = 8, batches = 4;
  std::uint64_t seed = 0;
  std::string device = "cpu";
  std::string json, plot;
};

struct Row {
  std::int64_t seq_len = 0;
  model::Evaluation evaluation;
  double seconds = 0;
  double processed = 0;  // input tokens run through the model
  double tokens_per_second() const { return processed / std::max(seconds, 1e-12); }
};

double bits(double nats) { return nats / std::log(2.0); }

void print_table(const std::vector<Row>& rows, bool passkey) {
  std::cout << "| seq_len | loss (nats) | bits/byte | perplexity | "
            << (passkey ? "key digits right" : "next byte right") << " |" << (passkey ? " keys retrieved |" : "")
            << " tokens/s |\n"
            << "|---:|---:|---:|---:|---:|" << (passkey ? "---:|" : "") << "---:|\n";
  for (const Row& r : rows) {
    const model::Evaluation& e = r.evaluation;
    std::cout << "| " << r.seq_len << " | " << std::fixed << std::setprecision(4) << e.loss() << " | "
              << std::setprecision(3) << bits(e.loss()) << " | " << std::setprecision(2) << std::exp(e.loss()) << " | "
              << std::setprecision(1) << 100 * e.token_accuracy() << " % (" << e.correct << " / " << e.tokens << ") |";
    if (passkey) {
      std::cout << " " << 100 * e.sequence_accuracy() << " % (" << e.sequences_correct << " / " << e.sequences << ") |";
    }
    std::cout << " " << std::setprecision(0) << r.tokens_per_second() << " |\n";
    std::cout.unsetf(std::ios::floatfield);
  }
}

void write_json(const EvalOptions& o, const std::string& source, Device device, const std::vector<Row>& rows) {
  nlohmann::json results = nlohmann::json::array();
  for (const Row& r : rows) {
    const model::Evaluation& e = r.evaluation;
    results.push_back({{"seq_len", r.seq_len},
                       {"loss", e.loss()},
                       {"bits_per_byte", bits(e.loss())},
                       {"perplexity", std::exp(e.loss())},
                       {"tokens", e.tokens},
                       {"token_accuracy", e.token_accuracy()},
                       {"sequences", e.sequences},
                       {"sequence_accuracy", e.sequence_accuracy()},
                       {"seconds", r.seconds},
                       {"tokens_per_second", r.tokens_per_second()}});
  }
  const nlohmann::json j = {{"checkpoint", o.checkpoint}, {"data", source},       {"device", to_string(device)},
                            {"batch_size", o.batch_size}, {"batches", o.batches}, {"seed", o.seed},
                            {"results", results}};
  write_text_atomically(o.json, j.dump(2) + "\n");
}

void plot_rows(const std::string& path, const std::vector<Row>& rows, bool passkey) {
  plot::Chart loss;
  loss.title = "LongNetLM on held-out data";
  loss.x = {"sequence length", plot::Scale::log, std::nullopt, std::nullopt, 2};
  loss.y.label = "loss (bits / byte)";
  plot::Series series{"loss", {}, {}, std::nullopt, true};
  plot::Chart keys;
  keys.title = "passkey retrieval";
  keys.x = loss.x;
  keys.y = {"right (%)", plot::Scale::linear, 0.0, 100.0, 10};
  plot::Series retrieved{"whole keys", {}, {}, std::nullopt, true}, digits{"key digits", {}, {}, std::nullopt, true};
  for (const Row& r : rows) {
    const double n = static_cast<double>(r.seq_len);
    series.x.push_back(n);
    series.y.push_back(bits(r.evaluation.loss()));
    retrieved.x.push_back(n);
    retrieved.y.push_back(100 * r.evaluation.sequence_accuracy());
    digits.x.push_back(n);
    digits.y.push_back(100 * r.evaluation.token_accuracy());
  }
  loss.series.push_back(series);
  keys.series = {retrieved, digits};
  if (passkey) {
    plot::save_png(path, plot::render_charts({loss, keys}, 1400, 540, 2));
  } else {
    plot::save_png(path, plot::render_charts({loss}, 900, 540));
  }
}

int run_eval(const EvalOptions& o) {
  const Device device = parse_device(o.device, "--device");
  require_device_available(device, "--device");
  require(o.batch_size >= 1, "--batch-size = ", o.batch_size, ": must be >= 1");
  require(o.batches >= 1, "--batches = ", o.batches, ": must be >= 1");
  const std::vector<std::int64_t> seq_lens = parse_integer_list(o.seq_lens, "--seq-lens");
  for (std::int64_t n : seq_lens) require(n >= 1, "--seq-lens: ", n, ": every length must be >= 1");
  const std::unique_ptr<model::LongNetLM> lm = load_byte_model(o.checkpoint, device, "longnet eval");
  const Corpus corpus = load_corpus(o.data, o.dataset);
  std::cerr << "eval: " << o.checkpoint << " on " << to_string(device) << ", data " << corpus.description << ", "
            << o.batches << " batches of " << o.batch_size << " sequences at each length\n";
  std::vector<Row> rows;
  for (const std::int64_t n : seq_lens) {
    const std::unique_ptr<model::BatchSource> data =
        batch_source(corpus, o.validation_fraction, o.batch_size, n, o.seed);
    Row row;
    row.seq_len = n;
    row.seconds = time_ms(device, [&] { row.evaluation = model::evaluate(*lm, *data, o.batches); }) / 1e3;
    row.processed = static_cast<double>(o.batches * data->tokens_per_batch());
    std::cerr << "eval: seq_len " << n << ": loss " << row.evaluation.loss() << " in " << format_ms(row.seconds * 1e3)
              << " ms\n";
    rows.push_back(row);
  }
  print_table(rows, corpus.passkey);
  if (!o.json.empty()) {
    write_json(o, corpus.description, device, rows);
    std::cout << "wrote " << o.json << "\n";
  }
  if (!o.plot.empty()) {
    plot_rows(o.plot, rows, corpus.passkey);
    std::cout << "wrote " << o.plot << "\n";
  }
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* c = app.add_subcommand(
      "eval", "Loss and greedy accuracy of a LongNetLM checkpoint on held-out data, at one or more sequence lengths");
  c->add_option("--checkpoint", o->checkpoint, "Checkpoint written by `longnet train`")->capture_default_str();
  c->add_option("--data", o->data, "Text file to evaluate on (byte-level tokens); default: --dataset");
  c->add_option("--dataset", o->dataset, "Built-in data when no --data: kjv (Debian bible-kjv) or passkey")
      ->capture_default_str();
  c->add_option("--validation-fraction", o->validation_fraction,
                "Held-out share of the text (the same as training's to evaluate on unseen text)")
      ->capture_default_str();
  c->add_option("--seq-lens", o->seq_lens, "Comma-separated sequence lengths (K/M suffixes allowed)")
      ->capture_default_str();
  c->add_option("--batch-size", o->batch_size, "Sequences a batch")->capture_default_str();
  c->add_option("--batches", o->batches, "Held-out batches at each length")->capture_default_str();
  c->add_option("--seed", o->seed, "Seed of the passkey task's keys")->capture_default_str();
  c->add_option("--device", o->device, "cpu or cuda[:N]")->capture_default_str();
  c->add_option("--json", o->json, "Write the results as JSON to this file");
  c->add_option("--plot", o->plot, "Draw the loss (and for passkey the keys retrieved) against the length (PNG)");
  return {c, [o] { return run_eval(*o); }};
}

}  // namespace longnet::cli
