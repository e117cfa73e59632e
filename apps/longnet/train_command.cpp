// `longnet train`: trains a LongNetLM (decoder-only, byte-level tokens) on a text file,
// or with no data argument on a built-in corpus: the King James Bible from Debian's
// bible-kjv package (public domain), or the synthetic passkey-retrieval task. Progress
// bar on a terminal, plain lines otherwise; validation loss; checkpoints every K steps
// (resumable exactly with --resume); a loss log (CSV) and a loss-curve PNG in --out.
// Under mpirun, data- or sequence-parallel training over the MPI world (--parallel): every
// process runs this same command; rank 0 alone prints and writes files.
// The training itself is the library's (model/trainer.hpp); this file maps flags onto it.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "commands.hpp"
#include "corpus.hpp"
#include "launcher.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/communicator.hpp"
#include "longnet/io/atomic_file.hpp"
#include "longnet/model/checkpoint.hpp"
#include "longnet/model/trainer.hpp"
#include "measure.hpp"
#include "parse_values.hpp"
#include "plot/plot.hpp"

namespace longnet::cli {
namespace {

struct TrainOptions {
  std::string data;  // a text file; empty: --dataset
  std::string dataset = "kjv";
  std::string out = "longnet-run";
  bool resume = false;
  // Model.
  std::int64_t d_model = 128, heads = 4, kv_heads = 0, layers = 4, ffn_dim = 512;
  std::string segments = "32,64,128", dilations = "1,2,4";
  std::string mode = "longnet", positional = "xpos";
  double dropout = 0.0;
  bool tie_embeddings = true;
  // Training.
  std::int64_t steps = 500, batch_size = 8, seq_len = 128, gradient_accumulation = 1, warmup = 50;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.1, grad_clip = 1.0;
  std::uint64_t seed = 0;
  double validation_fraction = 0.05;
  std::int64_t eval_every = 100, eval_batches = 4, checkpoint_every = 100, log_every = 10;
  double time_limit = 0;  // seconds; 0: none
  std::string device = "cpu";
  std::string dtype = "auto";  // compute dtype: bf16 on CUDA, f32 on the CPU
  bool deterministic = true;
  // Distribution.
  std::string parallel = "auto";
  std::string sequence_order = "contiguous";
};

// The processes training together: the MPI world when an MPI launcher started this one
// (MPI initialised on construction, finalised on destruction), else this process alone.
class TrainingWorld {
 public:
  TrainingWorld() {
    if (launched_processes() != 0 && mpi_compiled()) {
      mpi_.emplace();
      world_ = mpi_world();
    }
  }
  bool under_mpi() const { return world_ != nullptr; }

  // Parallelism from --parallel and --sequence-order (the same outcome on every process).
  void choose(const TrainOptions& o) {
    const int launched = launched_processes();
    require(mpi_compiled() || launched == 0 || launched == 1, "launched by an MPI launcher with ", launched,
            " processes, but this build has no MPI (configure with LONGNET_WITH_MPI=ON), so each process would ",
            "train alone");
    const int processes = world_ ? world_->size() : 1;
    const SequenceOrder order = parse_sequence_order(o.sequence_order, "--sequence-order");
    model::Parallelism parallelism = processes > 1 ? model::Parallelism::data : model::Parallelism::none;
    if (o.parallel != "auto") parallelism = model::parse_parallelism(o.parallel, "--parallel");
    require(parallelism != model::Parallelism::none || processes == 1, "--parallel = none with ", processes,
            " MPI processes: each would train alone and write the same files; use --parallel data or sequence");
    // The device: with several processes, `--device cuda` is one GPU per process.
    device_ = process_device(parse_device(o.device, "--device"), o.device, world_ ? world_->rank() : 0, processes);
    if (device_.is_cuda()) guard_.emplace(device_);
    std::shared_ptr<Communicator> comm;
    if (parallelism != model::Parallelism::none) {
      comm = world_ ? world_ : std::shared_ptr<Communicator>(self_communicator());
      // GPUs exchange through NCCL (its id over MPI); its host() stays the MPI world.
      if (world_ && device_.is_cuda()) {
        require(nccl_compiled(), "--device ", o.device, " with --parallel ", model::to_string(parallelism),
                ": GPUs communicate through NCCL, which this build lacks (configure with LONGNET_WITH_NCCL=ON)");
        run_collectively(*world_, [&] { require_device_available(device_, "--device"); });
        comm = nccl_communicator(*world_, device_.index);
      }
    }
    distribution_ = {comm, parallelism, order};
  }

  Device device() const { return device_; }

  const model::Distribution& distribution() const { return distribution_; }
  bool leader() const { return distribution_.rank() == 0; }
  // Runs `body` on rank 0 only; a failure there is an Error on every rank.
  void on_leader(const std::function<void()>& body) const {
    if (!distribution_.distributed()) return body();
    run_collectively(*distribution_.comm, [&] {
      if (leader()) body();
    });
  }
  // Everything on every rank; a failure on any rank is an Error on every rank.
  void everywhere(const std::function<void()>& body) const {
    if (!distribution_.distributed()) return body();
    run_collectively(*distribution_.comm, body);
  }
  // Whether `flag` holds on any rank.
  bool any(bool flag) const {
    if (!distribution_.distributed()) return flag;
    const Tensor value = Tensor::full({1}, flag ? 1.0 : 0.0, DType::i32);
    distribution_.comm->host().all_reduce(value, ReduceOp::max);
    return value.item() != 0.0;
  }

 private:
  std::optional<MpiSession> mpi_;  // declared first: finalised last
  std::shared_ptr<Communicator> world_;
  Device device_ = Device::cpu();
  std::optional<DeviceGuard> guard_;  // this process's GPU, current while it trains
  model::Distribution distribution_;
};

// --dtype auto: bf16 compute with f32 master weights on CUDA, f32 on the CPU.
DType compute_dtype_for(const std::string& text, Device device) {
  if (text == "auto") return device.is_cuda() ? DType::bf16 : DType::f32;
  const DType dtype = parse_dtype(text, "--dtype");
  require(dtype == DType::f32 || dtype == DType::bf16, "--dtype = ", text, ": must be auto, f32 or bf16");
  require(dtype != DType::bf16 || device.is_cuda(), "--dtype = bf16 with --device ", to_string(device),
          ": bf16 compute needs a CUDA device (the CPU computes in f32)");
  return dtype;
}

model::LongNetLMConfig model_config(const TrainOptions& o, Device device) {
  model::LongNetLMConfig c;
  c.vocab_size = model::kByteVocabulary;
  c.d_model = o.d_model;
  c.heads = o.heads;
  c.kv_heads = o.kv_heads;
  c.layers = o.layers;
  c.ffn_dim = o.ffn_dim;
  c.segment_lengths = parse_integer_list(o.segments, "--segments");
  c.dilation_rates = parse_integer_list(o.dilations, "--dilations");
  c.mode = parse_dilated_mode(o.mode, "--mode");
  c.positional = nn::parse_positional_encoding(o.positional, "--positional");
  c.dropout = o.dropout;
  c.tie_embeddings = o.tie_embeddings;
  c.dtype = DType::f32;
  c.compute_dtype = compute_dtype_for(o.dtype, device);
  c.validate();
  return c;
}

model::TrainingConfig training_config(const TrainOptions& o) {
  model::TrainingConfig t;
  t.steps = o.steps;
  t.gradient_accumulation = o.gradient_accumulation;
  t.lr = o.lr;
  t.min_lr = o.min_lr;
  t.warmup_steps = o.warmup;
  t.grad_clip = o.grad_clip;
  t.adamw.weight_decay = o.weight_decay;
  t.seed = o.seed;
  t.deterministic = o.deterministic;
  t.validate();
  return t;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long>(std::max(0.0, seconds));
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h";
  if (s >= 60) out << (s / 60) % 60 << "m";
  out << s % 60 << "s";
  return out.str();
}

std::string format_tokens_per_second(double rate) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(rate >= 1e4 ? 0 : 1) << rate;
  return out.str();
}

struct LogRow {
  std::int64_t step = 0;  // steps done
  double train_loss = NAN, validation_loss = NAN, lr = 0, grad_norm = 0, tokens_per_second = 0, seconds = 0;
};

// loss.csv: one row per step, validation loss where evaluated (empty otherwise).
void write_log(const std::filesystem::path& path, const std::vector<LogRow>& rows) {
  std::ostringstream out;
  out << "step,train_loss,validation_loss,lr,grad_norm,tokens_per_second,seconds\n";
  for (const LogRow& r : rows) {
    out << r.step << "," << r.train_loss << ",";
    if (std::isfinite(r.validation_loss)) out << r.validation_loss;
    out << "," << r.lr << "," << r.grad_norm << "," << r.tokens_per_second << "," << r.seconds << "\n";
  }
  write_text_atomically(path, out.str());
}

// Rows of an earlier run's loss.csv up to `steps` (for --resume); unreadable rows end it.
std::vector<LogRow> read_log(const std::filesystem::path& path, std::int64_t steps) {
  std::vector<LogRow> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string item; std::getline(fields, item, ',');) f.push_back(item);
    if (f.size() < 7) break;
    try {
      LogRow r{std::stoll(f[0]), std::stod(f[1]), f[2].empty() ? NAN : std::stod(f[2]),
               std::stod(f[3]),  std::stod(f[4]), std::stod(f[5]),
               std::stod(f[6])};
      if (r.step > steps) break;
      rows.push_back(r);
    } catch (const std::exception&) {
      break;
    }
  }
  return rows;
}

void plot_losses(const std::filesystem::path& path, const std::vector<LogRow>& rows) {
  plot::Chart chart;
  chart.title = "LongNetLM training";
  chart.x.label = "step";
  chart.y.label = "loss (nats / byte)";
  plot::Series train{"train", {}, {}, std::nullopt, false}, validation{"validation", {}, {}, std::nullopt, true};
  for (const LogRow& r : rows) {
    train.x.push_back(static_cast<double>(r.step));
    train.y.push_back(r.train_loss);
    if (std::isfinite(r.validation_loss)) {
      validation.x.push_back(static_cast<double>(r.step));
      validation.y.push_back(r.validation_loss);
    }
  }
  if (train.x.size() < 2) return;
  chart.series.push_back(train);
  if (!validation.x.empty()) chart.series.push_back(validation);
  plot::save_png(path, plot::render_charts({chart}, 900, 540));
}

class Progress {
 public:
  Progress(std::int64_t total, std::int64_t log_every) : total_(total), log_every_(log_every) {}

  void update(const model::StepResult& r, double tokens_per_second, double eta_seconds) {
    const std::int64_t done = r.step + 1;
    std::ostringstream line;
    line << "step " << done << "/" << total_ << "  loss " << std::fixed << std::setprecision(4) << r.loss << "  "
         << format_tokens_per_second(tokens_per_second) << " tok/s  lr " << std::scientific << std::setprecision(2)
         << r.lr << "  ETA " << format_duration(eta_seconds);
    if (terminal_) {
      const int width = 24;
      const auto filled = static_cast<int>(width * done / total_);
      std::cerr << "\r[" << std::string(static_cast<std::size_t>(filled), '=')
                << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << line.str() << "   "
                << std::flush;
    } else if (done % log_every_ == 0 || done == total_) {
      std::cerr << line.str() << "\n";
    }
  }
  // A line that must not be overwritten by the bar.
  void note(const std::string& text) {
    if (terminal_) std::cerr << "\r\033[K";
    std::cerr << text << "\n";
  }
  void finish() {
    if (terminal_) std::cerr << "\n";
  }

 private:
  std::int64_t total_, log_every_;
  bool terminal_ = stderr_is_terminal();
};

std::string describe(const model::Distribution& d) {
  if (!d.distributed()) return std::string();
  std::string text = str(", ", to_string(d.parallelism), "-parallel over ", d.size(), " process",
                         d.size() == 1 ? "" : "es", " (", d.comm->name());
  if (d.parallelism == model::Parallelism::sequence) text += str(", ", to_string(d.order), " layout");
  return text + ")";
}

int train(const TrainOptions& o, const TrainingWorld& world) {
  require(o.eval_every >= 0 && o.checkpoint_every >= 0 && o.log_every >= 1 && o.eval_batches >= 1,
          "--eval-every and --checkpoint-every must be >= 0, --log-every and --eval-batches >= 1");
  require(o.time_limit >= 0, "--time-limit = ", o.time_limit, ": must be >= 0");
  const model::Distribution& distribution = world.distribution();
  std::ostream null_stream(nullptr);
  std::ostream& messages = world.leader() ? std::cerr : null_stream;  // rank 0 alone prints
  const std::filesystem::path out = o.out;
  const std::filesystem::path checkpoint = out / "checkpoint.safetensors";

  Device device = Device::cpu();
  std::string source;
  std::unique_ptr<model::BatchSource> data;
  std::unique_ptr<model::LongNetLM> lm;
  world.everywhere([&] {
    device = world.device();
    require_device_available(device, "--device");
    const Corpus corpus = load_corpus(o.data, o.dataset);
    source = corpus.description;
    data = batch_source(corpus, o.validation_fraction, o.batch_size, o.seq_len, o.seed);
    lm = std::make_unique<model::LongNetLM>(model_config(o, device), device, o.seed);
  });
  world.on_leader([&] { std::filesystem::create_directories(out); });
  const model::LongNetLMConfig& config = lm->config();
  std::int64_t parameters = 0;
  for (const auto& p : lm->parameters()) parameters += p->value.numel();
  model::Trainer trainer(*lm, *data, training_config(o), distribution);
  // A batch the processes cannot share fails here, before anything is written.
  if (distribution.distributed()) world.everywhere([&] { model::share_batch(data->train_batch(0, 0), distribution); });
  std::vector<LogRow> rows;
  if (!o.resume && world.leader() && std::filesystem::exists(checkpoint)) {
    messages << "train: starting a new run in " << out.string() << "; its checkpoint will be replaced (--resume "
             << "continues it instead)\n";
  }
  if (o.resume) {
    trainer.resume(checkpoint);
    world.on_leader([&] { rows = read_log(out / "loss.csv", trainer.steps_done()); });
  }
  messages << "train: LongNetLM with " << parameters << " parameters (d_model " << config.d_model << ", "
           << config.layers << " layers, " << config.heads << " heads, segments " << o.segments << ", dilations "
           << o.dilations << ", " << nn::to_string(config.positional) << ") on " << to_string(device) << ", "
           << (config.compute_dtype == config.dtype
                   ? std::string(dtype_name(config.dtype))
                   : str(dtype_name(config.compute_dtype), " compute, ", dtype_name(config.dtype), " master weights"))
           << describe(distribution) << "\n"
           << "train: data " << source << ", batch " << o.batch_size << " x " << o.seq_len << " tokens"
           << (o.resume ? str(", resumed at step ", trainer.steps_done()) : std::string()) << "\n";
  if (const std::string note = model::uncovered_offsets_note(config); !note.empty()) {
    messages << "train: note: " << note << "\n";
  }

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const double seconds_before = rows.empty() ? 0.0 : rows.back().seconds;
  std::optional<Progress> progress;
  if (world.leader()) progress.emplace(o.steps, o.log_every);
  const std::int64_t first_step = trainer.steps_done();
  double tokens_per_second = 0;
  auto save = [&] {
    trainer.save_checkpoint(checkpoint);
    world.on_leader([&] {
      write_log(out / "loss.csv", rows);
      plot_losses(out / "loss.png", rows);
    });
  };
  // Each step but those before an evaluation or a checkpoint is queued before the previous
  // one's loss is read (Trainer::step(true)), so the device never waits for the host between
  // steps. `finishing`: the time limit came with a step queued ahead; that one ends the run.
  const auto evaluates_after = [&](std::int64_t done) { return o.eval_every > 0 && done % o.eval_every == 0; };
  const auto saves_after = [&](std::int64_t done) { return o.checkpoint_every > 0 && done % o.checkpoint_every == 0; };
  // Nor is one queued where the time limit would come before it ends (judged by the last step).
  bool finishing = false;
  double last_step_seconds = 0;
  while (trainer.step_queued_ahead() || trainer.steps_done() < o.steps) {
    const auto step_start = Clock::now();
    // The step this call returns (steps_done() counts a step queued ahead too).
    const std::int64_t coming = trainer.steps_done() - (trainer.step_queued_ahead() ? 1 : 0) + 1;
    const bool time_for_another =
        o.time_limit <= 0 ||
        std::chrono::duration<double>(step_start - start).count() + 2 * last_step_seconds < o.time_limit;
    const bool queue_next = !finishing && time_for_another && !evaluates_after(coming) && !saves_after(coming);
    const model::StepResult r = trainer.step(queue_next);
    const double step_seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
    last_step_seconds = step_seconds;
    // Tokens processed (the passkey task scores only a few of them).
    const double rate =
        static_cast<double>(data->tokens_per_batch() * o.gradient_accumulation) / std::max(step_seconds, 1e-9);
    tokens_per_second = tokens_per_second == 0 ? rate : 0.9 * tokens_per_second + 0.1 * rate;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const std::int64_t done = r.step + 1;
    LogRow row{done, r.loss, NAN, r.lr, r.grad_norm, rate, seconds_before + elapsed};
    const double per_step = elapsed / static_cast<double>(done - first_step);
    if (progress) progress->update(r, tokens_per_second, per_step * static_cast<double>(o.steps - done));
    const bool last = done == o.steps;
    // Every process stops at the same step (clocks differ).
    const bool time_up = (o.time_limit > 0 && world.any(elapsed >= o.time_limit)) || finishing;
    // With a step queued ahead (one process only), that step is finished first.
    const bool out_of_time = time_up && !trainer.step_queued_ahead();
    finishing = time_up && trainer.step_queued_ahead();
    if (evaluates_after(done) || last || out_of_time) {
      row.validation_loss = trainer.evaluate(o.eval_batches);
      std::ostringstream note;
      note << "step " << done << ": train loss " << std::fixed << std::setprecision(4) << r.loss << ", validation loss "
           << row.validation_loss << " (" << std::setprecision(3) << row.validation_loss / std::log(2.0)
           << " bits/byte), " << format_tokens_per_second(tokens_per_second) << " tok/s";
      if (progress) progress->note(note.str());
    }
    rows.push_back(row);
    if (saves_after(done) || last || out_of_time) save();
    if (out_of_time && !last) {
      if (progress)
        progress->note(str("train: --time-limit of ", o.time_limit, " s reached at step ", done, " of ", o.steps,
                           "; continue with --resume"));
      break;
    }
  }
  if (!world.leader()) return 0;
  progress->finish();
  messages << "train: checkpoint " << checkpoint.string() << ", loss log " << (out / "loss.csv").string()
           << ", loss curve " << (out / "loss.png").string() << "\n";
  std::cout << "tokens_per_second " << format_tokens_per_second(tokens_per_second) << "\n";
  if (!rows.empty()) std::cout << "final_validation_loss " << rows.back().validation_loss << "\n";
  return 0;
}

// `settings`: every option's value (CLI11's configuration text), which must be the same on
// every process: collectives follow from them (evaluation, checkpoints, the time limit).
int run_train(const TrainOptions& o, const std::string& settings) {
  TrainingWorld world;
  try {
    world.choose(o);
    const model::Distribution& distribution = world.distribution();
    if (distribution.distributed()) {
      model::require_equal_on_every_rank(*distribution.comm, model::fingerprint(settings),
                                         "the options of `longnet train` (every process must run the same command)");
    }
    return train(o, world);
  } catch (const Error& error) {
    if (!world.under_mpi()) throw;
    // Printed while MPI is still up: mpirun ends the job as soon as one process exits, which
    // would silence processes that printed only after finalising. Every process prints.
    std::cerr << str("longnet: error: ", error.what(), "\n") << std::flush;  // one write: lines do not interleave
    return 1;
  }
}

}  // namespace

Command add_train_command(CLI::App& app) {
  auto options = std::make_shared<TrainOptions>();
  CLI::App* c = app.add_subcommand("train", "Train a LongNetLM on byte-level text (default: the King James Bible)");
  c->add_option("--data", options->data, "Text file to train on (byte-level tokens); default: --dataset");
  c->add_option("--dataset", options->dataset, "Built-in data when no --data: kjv (Debian bible-kjv) or passkey")
      ->capture_default_str();
  c->add_option("--out", options->out, "Output folder: checkpoint, loss.csv, loss.png")->capture_default_str();
  c->add_flag("--resume", options->resume, "Continue the run saved in --out exactly where it stopped");
  c->add_option("--d-model", options->d_model, "Model width")->capture_default_str();
  c->add_option("--heads", options->heads, "Attention heads")->capture_default_str();
  c->add_option("--kv-heads", options->kv_heads, "Key/value heads (0: = heads; fewer: grouped-query)")
      ->capture_default_str();
  c->add_option("--layers", options->layers, "Decoder layers")->capture_default_str();
  c->add_option("--ffn-dim", options->ffn_dim, "Feed-forward width")->capture_default_str();
  c->add_option("--segments", options->segments, "Segment lengths w_i, comma-separated")->capture_default_str();
  c->add_option("--dilations", options->dilations, "Dilation rates r_i, comma-separated")->capture_default_str();
  c->add_option("--mode", options->mode, "Dilated attention mode: longnet or head_groups")->capture_default_str();
  c->add_option("--positional", options->positional, "Positional encoding: xpos, rope or none")->capture_default_str();
  c->add_option("--dropout", options->dropout, "Dropout probability")->capture_default_str();
  c->add_option("--tie-embeddings", options->tie_embeddings, "Share the embedding and the LM head (true/false)")
      ->capture_default_str();
  c->add_option("--steps", options->steps, "Optimizer steps")->capture_default_str();
  c->add_option("--batch-size", options->batch_size, "Sequences per micro-batch")->capture_default_str();
  c->add_option("--seq-len", options->seq_len, "Tokens per sequence")->capture_default_str();
  c->add_option("--grad-accum", options->gradient_accumulation, "Micro-batches per step")->capture_default_str();
  c->add_option("--lr", options->lr, "Peak learning rate (AdamW)")->capture_default_str();
  c->add_option("--min-lr", options->min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
  c->add_option("--warmup", options->warmup, "Linear warmup steps")->capture_default_str();
  c->add_option("--weight-decay", options->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  c->add_option("--grad-clip", options->grad_clip, "Global gradient-norm clip (0: none)")->capture_default_str();
  c->add_option("--seed", options->seed, "Seed of initialisation, batches and dropout")->capture_default_str();
  c->add_option("--validation-fraction", options->validation_fraction, "Held-out share of the text")
      ->capture_default_str();
  c->add_option("--eval-every", options->eval_every, "Validation every K steps (0: only at the end)")
      ->capture_default_str();
  c->add_option("--eval-batches", options->eval_batches, "Validation batches per evaluation")->capture_default_str();
  c->add_option("--checkpoint-every", options->checkpoint_every, "Checkpoint every K steps (0: only at the end)")
      ->capture_default_str();
  c->add_option("--log-every", options->log_every, "Plain progress line every K steps (no terminal)")
      ->capture_default_str();
  c->add_option("--time-limit", options->time_limit,
                "Stop (with a checkpoint) after this many seconds; 0: none. The run can go on with --resume")
      ->capture_default_str();
  c->add_option("--device", options->device, "cpu or cuda[:N]")->capture_default_str();
  c->add_option("--dtype", options->dtype,
                "Compute dtype: auto (bf16 on cuda with f32 master weights, f32 on cpu), f32 or bf16")
      ->capture_default_str();
  c->add_option("--parallel", options->parallel,
                "Distributed training when launched by mpirun (every process runs this command): data (each "
                "process takes a share of the sequences of every batch), sequence (each takes a slice of every "
                "sequence; sequence-parallel attention), none, or auto (data when mpirun started several processes, "
                "else none). Exact: the steps equal one process's over the same batch, to rounding")
      ->capture_default_str();
  c->add_option("--sequence-order", options->sequence_order,
                "Layout of --parallel sequence: contiguous (one slice per process) or zigzag (blocks r and 2P-1-r: "
                "balances causal attention)")
      ->capture_default_str();
  c->add_option("--deterministic", options->deterministic,
                "Bitwise repeatable steps on cuda, so --resume continues exactly (true/false; false: a faster "
                "attention backward, reproducible only to rounding)")
      ->capture_default_str();
  return {c, [options, c] { return run_train(*options, c->config_to_str(/*default_also=*/true)); }};
}

}  // namespace longnet::cli
