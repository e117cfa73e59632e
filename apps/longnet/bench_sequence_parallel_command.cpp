// `longnet bench sequence-parallel`: sequence-parallel dilated attention timed across the
// processes mpirun started (one GPU per process with --device cuda, through NCCL; MPI on
// the CPU), for the weak-scaling question of issue 8: each process holds --local-seq rows
// (N = P x local), the patterns are LongNet's ([2048 .. 32768] / [1, 2, 4, 6, 12] by
// default) plus, unless --no-spanning, one segment over the whole sequence (rate N /
// --spanning-rows, so its virtual sequences have that many rows) that spans every
// process. Reports per process: forward and forward + backward time (the slowest
// process's median), TFLOP/s per process by DESIGN 4's rule over the whole sequence's
// work divided by P, rows received, peak memory; with one process also the single-process
// engine on the same N, and the efficiency (engine time / distributed time). With
// --find-max-local it finds the longest local length whose forward (and forward +
// backward) fits on every process. Run without mpirun it is one process (on a GPU an MPI
// singleton, for NCCL).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "attention_bench.hpp"
#include "attention_options.hpp"
#include "commands.hpp"
#include "launcher.hpp"
#include "longnet/core/memory_pool.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_parallel_attention.hpp"
#include "longnet/io/atomic_file.hpp"
#include "measure.hpp"
#include "parse_values.hpp"

namespace longnet::cli {
namespace {

struct Options {
  AttentionOptions attention;
  ComputeOptions compute;
  std::int64_t batch = 1, heads = 8, head_dim = 64;
  std::string local_seqs;
  std::int64_t spanning_rows = 8192;
  bool no_spanning = false;
  std::string order = "contiguous";
  bool forward_only = false;
  int repeat = 5, warmup = 2;
  bool find_max_local = false;
  std::string json;
};

// The processes of the benchmark and the communicator the attention exchanges over.
struct World {
  std::optional<MpiSession> mpi;
  std::shared_ptr<Communicator> host;  // MPI world (or self)
  std::shared_ptr<Communicator> comm;  // NCCL on GPUs, else host
  Device device;
  std::optional<DeviceGuard> guard;
};

void open_world(World& w, const Options& o) {
  w.device = o.compute.parsed_device();
  // MPI when a launcher started us, or for a GPU (NCCL's id travels over MPI); a lone
  // CPU process uses the self communicator.
  if (mpi_compiled() && (launched_processes() != 0 || w.device.is_cuda())) {
    w.mpi.emplace();
    w.host = mpi_world();
  } else {
    w.host = self_communicator();
  }
  w.device = process_device(w.device, o.compute.device, w.host->rank(), w.host->size());
  if (w.device.is_cuda()) {
    w.guard.emplace(w.device);
    require(nccl_compiled(), "--device ", o.compute.device,
            ": sequence parallelism on GPUs communicates through NCCL, which this build lacks");
    require(mpi_compiled(), "--device cuda: NCCL's id travels over MPI, which this build lacks");
    w.comm = nccl_communicator(*w.host, w.device.index);
  } else {
    w.comm = w.host;
  }
}

DilatedAttentionConfig config_for(const Options& o, std::int64_t seq_len) {
  DilatedAttentionConfig config = o.attention.config();
  if (!o.no_spanning) {
    require(o.spanning_rows >= 1, "--spanning-rows = ", o.spanning_rows, ": must be >= 1");
    const std::int64_t rate = std::max<std::int64_t>(1, seq_len / o.spanning_rows);
    config.segment_lengths.push_back(seq_len);
    config.dilation_rates.push_back(rate);
  }
  config.validate();
  return config;
}

struct Measurement {
  std::int64_t local_rows = 0, seq_len = 0;
  double forward_flops = 0;  // whole sequence
  double forward_ms = NAN, forward_backward_ms = NAN;
  double received_rows = 0;  // the most any process receives
  double peak_bytes = NAN;   // the most any process used above its baseline
  double engine_forward_ms = NAN, engine_forward_backward_ms = NAN;  // one process only
  std::string failure;
};

// The largest value over processes (host numbers).
double max_over(Communicator& host, double value) {
  const Tensor t = Tensor::full({1}, value, DType::f64);
  host.all_reduce(t, ReduceOp::max);
  return t.item();
}

double median_ms(World& w, const Options& o, const std::function<void()>& work) {
  for (int i = 0; i < o.warmup; ++i) work();
  std::vector<double> times;
  for (int i = 0; i < o.repeat; ++i) {
    wait_for(w.device);
    w.host->barrier();
    times.push_back(time_ms(w.device, work));
  }
  return max_over(*w.host, median(times));
}

Measurement measure(World& w, const Options& o, std::int64_t local_rows) {
  const int P = w.host->size(), me = w.host->rank();
  Measurement m;
  m.local_rows = local_rows;
  m.seq_len = local_rows * P;
  const DilatedAttentionConfig config = config_for(o, m.seq_len);
  const DType dtype = o.compute.parsed_dtype(w.device);
  m.forward_flops = dilated_attention_forward_flops(config, o.batch, m.seq_len, o.heads, o.head_dim);
  const SequenceOrder order = parse_sequence_order(o.order, "--order");
  const SequenceLayout layout = SequenceLayout::make(order, m.seq_len, P);
  const std::int64_t rows = layout.local_length(me);
  MemoryPool& pool = memory_pool(w.device);
  try {
    wait_for(w.device);
    const std::size_t baseline = pool.stats().in_use;
    pool.reset_stats();
    const auto seed = static_cast<std::uint64_t>(me) * 4 + 1;
    const Shape shape{o.batch, rows, o.heads, o.head_dim};
    Tensor q, k, v, dout;
    // Inputs made on every process together: memory running out on one is an Error on all.
    run_collectively(*w.host, [&] {
      q = Tensor::randn(shape, seed, dtype, w.device);
      k = Tensor::randn(shape, seed + 1, dtype, w.device);
      v = Tensor::randn(shape, seed + 2, dtype, w.device);
      if (!o.forward_only) dout = Tensor::randn(shape, seed + 3, dtype, w.device);
    });
    SequenceParallelDilatedAttention attention(config, w.comm, order);
    m.forward_ms = median_ms(w, o, [&] { (void)attention.forward(q, k, v); });
    m.received_rows = max_over(*w.host, static_cast<double>(attention.plan().receive_rows));
    if (!o.forward_only) {
      m.forward_backward_ms = median_ms(w, o, [&] {
        (void)attention.forward(q, k, v);
        (void)attention.backward(dout);
      });
    }
    wait_for(w.device);
    m.peak_bytes = max_over(*w.host, static_cast<double>(pool.stats().peak_in_use - baseline));
  } catch (const Error& error) {
    // Out of memory on any process ends the measurement on every one (the attention's
    // steps agree on errors); anything else is a real error.
    if (!is_out_of_memory(error)) throw;
    m.failure = error.what();
    pool.release_cached();
    return m;
  }
  if (P == 1) {
    AttentionBenchSetup setup;
    setup.name = "engine";
    setup.config = config;
    setup.batch = o.batch;
    setup.heads = setup.kv_heads = o.heads;
    setup.head_dim = o.head_dim;
    setup.dtype = dtype;
    setup.device = w.device;
    setup.warmup = o.warmup;
    setup.repeat = o.repeat;
    setup.backward = !o.forward_only;
    const AttentionBenchResult engine = run_attention_bench(setup, m.seq_len);
    m.engine_forward_ms = engine.forward_ms;
    m.engine_forward_backward_ms = engine.forward_backward_ms;
  }
  return m;
}

std::string cell(double value, const std::function<std::string(double)>& format) {
  return std::isnan(value) ? std::string("-") : format(value);
}

void print_table(std::ostream& os, int P, const std::vector<Measurement>& rows, bool engine) {
  os << "| P | N | N per process | fwd ms | fwd TFLOP/s per process | fwd+bwd ms | fwd+bwd TFLOP/s per process "
        "| rows received | peak memory |"
     << (engine ? " engine fwd ms | engine fwd+bwd ms | efficiency fwd / fwd+bwd |" : "") << "\n";
  os << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" << (engine ? "---:|---:|---:|" : "") << "\n";
  for (const Measurement& m : rows) {
    if (!m.failure.empty()) {
      os << "| " << P << " | " << m.seq_len << " | " << m.local_rows << " | did not fit: " << m.failure << " |\n";
      continue;
    }
    const double per = m.forward_flops / P;
    os << "| " << P << " | " << m.seq_len << " | " << m.local_rows << " | " << format_ms(m.forward_ms) << " | "
       << format_rate(per / (m.forward_ms * 1e-3), 1e12) << " | " << cell(m.forward_backward_ms, format_ms) << " | "
       << cell(m.forward_backward_ms, [&](double t) { return format_rate(3.5 * per / (t * 1e-3), 1e12); }) << " | "
       << static_cast<std::int64_t>(m.received_rows) << " | " << cell(m.peak_bytes, format_bytes) << " |";
    if (engine) {
      os << " " << cell(m.engine_forward_ms, format_ms) << " | " << cell(m.engine_forward_backward_ms, format_ms)
         << " | " << cell(m.engine_forward_ms / m.forward_ms, [](double x) { return str(std::lround(100 * x), "%"); })
         << " / "
         << cell(m.engine_forward_backward_ms / m.forward_backward_ms,
                 [](double x) { return str(std::lround(100 * x), "%"); })
         << " |";
    }
    os << "\n";
  }
}

// Doubling from `start`, then bisection: the longest local length (multiple of 1024)
// whose measurement fits on every process.
std::int64_t find_max_local(World& w, const Options& o, std::int64_t start) {
  constexpr std::int64_t kGranularity = 1024;
  std::int64_t fits = 0, fails = 0;
  for (std::int64_t n = std::max(start / kGranularity, std::int64_t{1}) * kGranularity;; n *= 2) {
    const Measurement m = measure(w, o, n);
    if (w.host->rank() == 0) std::cerr << "  local " << n << ": " << (m.failure.empty() ? "fits" : "does not fit") << "\n";
    if (!m.failure.empty()) {
      fails = n;
      break;
    }
    fits = n;
    if (n > (std::int64_t{1} << 40)) return fits;
  }
  while (fails - fits > kGranularity) {
    const std::int64_t mid = (fits + fails) / 2 / kGranularity * kGranularity;
    if (mid <= fits) break;
    const Measurement m = measure(w, o, mid);
    if (w.host->rank() == 0) std::cerr << "  local " << mid << ": " << (m.failure.empty() ? "fits" : "does not fit") << "\n";
    (m.failure.empty() ? fits : fails) = mid;
  }
  return fits;
}

int run(const Options& o) {
  World w;
  open_world(w, o);
  require(o.batch >= 1 && o.heads >= 1 && o.head_dim >= 1, "--batch, --heads and --head-dim must be >= 1");
  require(o.repeat >= 1 && o.warmup >= 0, "--repeat must be >= 1 and --warmup >= 0");
  const int P = w.host->size();
  const bool leader = w.host->rank() == 0;
  std::vector<std::int64_t> locals;
  if (o.local_seqs.empty()) {
    locals = w.device.is_cuda() ? std::vector<std::int64_t>{std::int64_t{1} << 20} : std::vector<std::int64_t>{8192};
  } else {
    locals = parse_integer_list(o.local_seqs, "--local-seqs");
  }
  for (std::int64_t n : locals) require(n >= 2, "--local-seqs contains ", n, ": must be >= 2");
  if (leader) {
    std::cout << "sequence-parallel dilated attention: " << P << " process" << (P == 1 ? "" : "es") << " ("
              << w.comm->name() << ", " << to_string(w.device) << "), " << dtype_name(o.compute.parsed_dtype(w.device))
              << ", B " << o.batch << ", H " << o.heads << ", D " << o.head_dim << ", patterns "
              << describe_patterns(o.attention.config()) << (o.no_spanning ? "" : " + one spanning all processes")
              << (o.attention.causal ? ", causal" : "") << ", " << o.order << " layout\n";
  }
  nlohmann::json report = {{"processes", P}, {"device", to_string(w.device)}, {"communicator", w.comm->name()}};
  if (o.find_max_local) {
    const std::int64_t longest = find_max_local(w, o, locals.front());
    if (leader) {
      std::cout << "longest local length that fits" << (o.forward_only ? " (forward)" : " (forward + backward)")
                << ": " << longest << " rows per process, N = " << longest * P << "\n";
    }
    report["longest_local"] = longest;
  } else {
    std::vector<Measurement> rows;
    for (std::int64_t n : locals) {
      rows.push_back(measure(w, o, n));
      if (leader) std::cerr << "  local " << n << " done\n";
    }
    if (leader) print_table(std::cout, P, rows, P == 1);
    for (const Measurement& m : rows) {
      report["rows"].push_back({{"seq_len", m.seq_len},
                                {"local_rows", m.local_rows},
                                {"forward_ms", m.forward_ms},
                                {"forward_backward_ms", m.forward_backward_ms},
                                {"forward_flops", m.forward_flops},
                                {"received_rows", m.received_rows},
                                {"peak_bytes", m.peak_bytes},
                                {"engine_forward_ms", m.engine_forward_ms},
                                {"engine_forward_backward_ms", m.engine_forward_backward_ms},
                                {"failure", m.failure}});
    }
  }
  if (leader && !o.json.empty()) write_text_atomically(o.json, report.dump(2) + "\n");
  return 0;
}

}  // namespace

Command add_bench_sequence_parallel(CLI::App& bench) {
  auto o = std::make_shared<Options>();
  o->attention.segments = "2048,4096,8192,16384,32768";
  o->attention.dilations = "1,2,4,6,12";
  o->compute.dtype = "auto";
  auto* c = bench.add_subcommand(
      "sequence-parallel",
      "Sequence-parallel dilated attention over the processes mpirun started (weak scaling: N = processes x "
      "--local-seqs; one GPU and NCCL per process with --device cuda)");
  o->attention.add_to(*c, false);
  o->compute.add_to(*c, "auto (bf16 on cuda, f32 on cpu), bf16, f16, f32 (cpu), f64 (cpu)");
  c->add_option("--batch", o->batch, "Batch size B")->capture_default_str();
  c->add_option("--heads", o->heads, "Heads H (= kv heads)")->capture_default_str();
  c->add_option("--head-dim", o->head_dim, "Head dimension D")->capture_default_str();
  c->add_option("--local-seqs", o->local_seqs,
                "Rows per process, comma list (default 1048576 on cuda, 8192 on cpu); N = processes x each");
  c->add_option("--spanning-rows", o->spanning_rows,
                "Rows of each virtual sequence of the pattern spanning all processes (its rate is N / this)")
      ->capture_default_str();
  c->add_flag("--no-spanning", o->no_spanning, "Only the --segments/--dilations patterns");
  c->add_option("--order", o->order, "Layout: contiguous or zigzag")->capture_default_str();
  c->add_flag("--forward-only", o->forward_only, "Time the forward pass only");
  c->add_option("--repeat", o->repeat, "Timed runs (the median of the slowest process)")->capture_default_str();
  c->add_option("--warmup", o->warmup, "Untimed runs first")->capture_default_str();
  c->add_flag("--find-max-local", o->find_max_local,
              "Find the longest rows per process that fit (forward + backward, or forward with --forward-only)");
  c->add_option("--json", o->json, "Write the results as JSON to this file");
  return {c, [o] { return run(*o); }};
}

}  // namespace longnet::cli
