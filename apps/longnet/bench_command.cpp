// `longnet bench attention`: sweeps sequence lengths N for dilated attention and for
// dense attention (one segment covering N, DilatedAttentionConfig::dense()), measuring
// forward and forward + backward time, throughput by DESIGN 4's FLOP rule and peak memory
// from the device's memory pool; prints a table, writes JSON (--json) and a plot (--plot).
// With --find-max-seq it instead finds the longest N whose forward, and whose forward +
// backward, fit in memory. Defaults follow BENCHMARKS.md: batch 1, H = 8, D = 64,
// w = [2048, 4096, 8192], r = [1, 2, 4].
// With --impl block_sparse: block-sparse attention at each N against dense attention
// (block_sparse_bench.hpp): random block masks at each of --densities, or the mask of
// --pattern; a sparsity-vs-time table with dense time x density and their ratio.
#include <iostream>
#include <memory>

#include "attention_bench.hpp"
#include "attention_bench_report.hpp"
#include "attention_options.hpp"
#include "block_pattern_options.hpp"
#include "block_sparse_bench.hpp"
#include "commands.hpp"
#include "longnet/core/parallel.hpp"
#include "measure.hpp"
#include "parse_values.hpp"

namespace longnet::cli {
namespace {

ComputeOptions auto_dtype() {
  ComputeOptions options;
  options.dtype = "auto";  // f32 on the CPU, bf16 on CUDA (BENCHMARKS.md)
  return options;
}

struct BenchAttentionOptions {
  std::string impl = "dilated";
  AttentionOptions attention;
  ComputeOptions compute = auto_dtype();
  std::int64_t batch = 1, heads = 8, kv_heads = 0, head_dim = 64;
  std::string seq_lens, min_seq, max_seq, dense_max_seq;
  bool no_dense = false;
  bool forward_only = false;
  int repeat = 3, warmup = 1;
  std::string json, plot;
  bool find_max_seq = false;
  std::string memory_limit;
  // --impl block_sparse
  BlockPatternOptions blocks;
  std::string densities = "0.5,0.25,0.1,0.05";
  bool deterministic = false;
  const CLI::Option *segments_flag = nullptr, *dilations_flag = nullptr, *mode_flag = nullptr;
};

// Sequence lengths of the sweep: --seq-lens, else powers of two from --min-seq to --max-seq.
std::vector<std::int64_t> sweep_lengths(const BenchAttentionOptions& o, Device device) {
  if (!o.seq_lens.empty()) {
    std::vector<std::int64_t> lengths = parse_integer_list(o.seq_lens, "--seq-lens");
    for (std::int64_t n : lengths) require(n >= 1, "--seq-lens contains ", n, ": lengths must be >= 1");
    return lengths;
  }
  const std::int64_t lo = o.min_seq.empty() ? (device.is_cuda() ? 8192 : 2048) : parse_integer(o.min_seq, "--min-seq");
  const std::int64_t hi =
      o.max_seq.empty() ? (device.is_cuda() ? 1 << 20 : 16384) : parse_integer(o.max_seq, "--max-seq");
  require(lo >= 1, "--min-seq = ", lo, ": must be >= 1");
  require(hi >= lo, "--max-seq = ", hi, ": must be >= --min-seq = ", lo);
  std::vector<std::int64_t> lengths;
  for (std::int64_t n = lo; n <= hi; n *= 2) lengths.push_back(n);
  return lengths;
}

// Draws "text" over the previous progress line on a terminal; nothing otherwise.
void progress(const std::string& text) {
  if (stderr_is_terminal()) std::cerr << "\r\033[K" << text << std::flush;
}

std::string device_description(Device device) {
  if (device.is_cpu()) return str(num_threads(), " threads");
  for (const auto& info : cuda_devices()) {
    if (info.index == device.index) return info.name;
  }
  return "";
}

// --densities: a non-empty comma list of numbers in (0, 1].
std::vector<double> parse_densities(const std::string& text) {
  std::vector<double> values;
  std::string::size_type begin = 0;
  for (;;) {
    const auto end = text.find(',', begin);
    const std::string item = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    std::size_t used = 0;
    double value = 0;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(!item.empty() && used == item.size(), "--densities = '", text, "': '", item, "' is not a number");
    require(value > 0 && value <= 1, "--densities contains ", item, ": densities must be in (0, 1]");
    values.push_back(value);
    if (end == std::string::npos) return values;
    begin = end + 1;
  }
}

int run_bench_block_sparse(const BenchAttentionOptions& o, const BlockSparseBenchSetup& setup,
                           const std::string& device_name) {
  for (const CLI::Option* flag : {o.segments_flag, o.dilations_flag, o.mode_flag}) {
    require(flag->count() == 0, flag->get_name(), " is a dilated-attention flag: --impl block_sparse takes ",
            "--densities or --pattern");
  }
  require(!o.find_max_seq, "--find-max-seq: only with --impl dilated");
  const std::vector<double> densities = parse_densities(o.densities);
  const std::vector<std::int64_t> lengths = [&] {
    if (!o.seq_lens.empty() || !o.min_seq.empty() || !o.max_seq.empty()) return sweep_lengths(o, setup.device);
    return setup.device.is_cuda() ? std::vector<std::int64_t>{16384, 32768, 65536}
                                  : std::vector<std::int64_t>{1024, 2048};
  }();
  const std::int64_t dense_limit = o.dense_max_seq.empty() ? (setup.device.is_cuda() ? 131072 : 8192)
                                                           : parse_integer(o.dense_max_seq, "--dense-max-seq");
  BlockSparseBenchReport report;
  report.setup = setup;
  report.device_name = device_name;
  const BlockGrid grid = o.blocks.grid(1, setup.causal);
  report.block_q = grid.block_q;
  report.block_k = grid.block_k;
  if (o.blocks.given()) (void)o.blocks.parsed_patterns();  // bad flags fail before any run
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const std::int64_t n = lengths[i];
    DenseTiming dense{std::nan(""), std::nan(""), 0, ""};
    if (!o.no_dense && n <= dense_limit) {
      progress(str("[", i + 1, "/", lengths.size(), "] dense N = ", n));
      dense = time_dense_attention(setup, n);
    }
    std::vector<std::pair<std::string, BlockMask>> masks;
    if (o.blocks.given()) {
      masks.emplace_back(o.blocks.describe(), o.blocks.mask(n, setup.heads, setup.causal));
    } else {
      const BlockGrid at_n = o.blocks.grid(n, setup.causal);
      for (const double density : densities) {
        const auto per_row = std::max<std::int64_t>(1, std::llround(density * static_cast<double>(at_n.key_blocks())));
        masks.emplace_back(str("random density ", density), random_blocks(at_n, per_row, 1));
      }
    }
    for (const auto& [name, mask] : masks) {
      progress(str("[", i + 1, "/", lengths.size(), "] block_sparse N = ", n, ", ", name));
      BlockSparseBenchRow row = time_block_sparse_attention(setup, mask);
      row.mask = name;
      row.dense_forward_ms = dense.forward_ms;
      row.dense_forward_backward_ms = dense.forward_backward_ms;
      report.rows.push_back(std::move(row));
    }
  }
  progress("");
  print_block_sparse_table(std::cout, report);
  if (!o.json.empty()) {
    write_block_sparse_json(o.json, report);
    std::cout << "wrote " << o.json << "\n";
  }
  if (!o.plot.empty()) {
    write_block_sparse_plot(o.plot, report);
    std::cout << "wrote " << o.plot << "\n";
  }
  return 0;
}

int run_bench_attention(const BenchAttentionOptions& o) {
  require(o.impl == "dilated" || o.impl == "block_sparse", "--impl = '", o.impl, "': must be dilated or block_sparse");
  require(o.impl == "block_sparse" || !o.blocks.given(), "--pattern: give --impl block_sparse to benchmark a block ",
          "mask");
  const Device device = o.compute.parsed_device();
  require(o.batch >= 1, "--batch = ", o.batch, ": must be >= 1");
  require(o.heads >= 1, "--heads = ", o.heads, ": must be >= 1");
  const std::int64_t kv_heads = o.kv_heads == 0 ? o.heads : o.kv_heads;
  require(kv_heads >= 1 && o.heads % kv_heads == 0, "--kv-heads = ", kv_heads, ": must divide --heads = ", o.heads);
  require(o.head_dim >= 1, "--head-dim = ", o.head_dim, ": must be >= 1");
  require(o.repeat >= 1, "--repeat = ", o.repeat, ": must be >= 1");
  require(o.warmup >= 0, "--warmup = ", o.warmup, ": must be >= 0");
  if (o.impl == "block_sparse") {
    BlockSparseBenchSetup setup;
    setup.batch = o.batch;
    setup.heads = o.heads;
    setup.kv_heads = kv_heads;
    setup.head_dim = o.head_dim;
    setup.dtype = o.compute.parsed_dtype(device);
    setup.device = device;
    setup.causal = o.attention.causal;
    setup.warmup = o.warmup;
    setup.repeat = o.repeat;
    setup.backward = !o.forward_only;
    setup.deterministic = o.deterministic;
    return run_bench_block_sparse(o, setup, device_description(device));
  }
  require(!o.deterministic, "--deterministic: only with --impl block_sparse");

  AttentionOptions dense_options = o.attention;
  AttentionBenchReport report;
  report.impl = o.impl;
  report.device_name = device_description(device);
  AttentionBenchSetup& dilated = report.setup;
  dilated.name = "dilated";
  dilated.config = o.attention.config();
  dilated.batch = o.batch;
  dilated.heads = o.heads;
  dilated.kv_heads = kv_heads;
  dilated.head_dim = o.head_dim;
  dilated.dtype = o.compute.parsed_dtype(device);
  dilated.device = device;
  dilated.warmup = o.warmup;
  dilated.repeat = o.repeat;
  dilated.backward = !o.forward_only;
  if (dilated.config.mode == DilatedMode::head_groups) {
    const auto groups = static_cast<std::int64_t>(dilated.config.segment_lengths.size());
    require(o.heads >= groups, "--heads = ", o.heads, ": head_groups mode with ", groups, " patterns needs at least ",
            groups, " heads");
  }
  AttentionBenchSetup dense = dilated;
  dense.name = "dense";
  dense.config = DilatedAttentionConfig::dense(dilated.config.causal);
  dense.config.scale = dilated.config.scale;

  if (o.find_max_seq) {
    LongestSequenceSearch search;
    search.start = o.min_seq.empty() ? 8192 : parse_integer(o.min_seq, "--min-seq");
    require(search.start >= 1, "--min-seq = ", search.start, ": must be >= 1");
    search.granularity = std::min<std::int64_t>(1024, search.start);
    search.limit = o.max_seq.empty() ? std::int64_t{1} << 30 : parse_integer(o.max_seq, "--max-seq");
    require(search.limit >= search.start, "--max-seq = ", search.limit, ": must be >= the first length tried, ",
            search.start);
    if (!o.memory_limit.empty()) {
      report.memory_limit = static_cast<double>(parse_byte_size(o.memory_limit, "--memory-limit"));
      search.memory_limit = report.memory_limit;
    }
    require(device.is_cuda() || search.memory_limit || !o.max_seq.empty(),
            "--find-max-seq on the CPU needs --memory-limit or --max-seq (host allocations do not fail before the "
            "system runs out of memory)");
    search.progress = [](const std::string& line) { progress("longest N: " + line); };
    for (const bool backward : {false, true}) {
      if (backward && o.forward_only) break;
      search.with_backward = backward;
      report.longest.push_back({backward ? "forward_backward" : "forward", find_longest_sequence(dilated, search)});
    }
  } else {
    const std::int64_t dense_limit = o.dense_max_seq.empty() ? (device.is_cuda() ? 131072 : 8192)
                                                             : parse_integer(o.dense_max_seq, "--dense-max-seq");
    const std::vector<std::int64_t> lengths = sweep_lengths(o, device);
    for (std::size_t i = 0; i < lengths.size(); ++i) {
      for (const AttentionBenchSetup* setup : {&dilated, &dense}) {
        if (setup == &dense && (o.no_dense || lengths[i] > dense_limit)) continue;
        progress(str("[", i + 1, "/", lengths.size(), "] ", setup->name, " N = ", lengths[i]));
        report.results.push_back(run_attention_bench(*setup, lengths[i]));
      }
    }
  }
  progress("");
  print_table(std::cout, report);
  if (!o.json.empty()) {
    write_json(o.json, report);
    std::cout << "wrote " << o.json << "\n";
  }
  if (!o.plot.empty()) {
    require(!report.results.empty(), "--plot needs a sweep (it has nothing to draw with --find-max-seq)");
    write_plot(o.plot, report);
    std::cout << "wrote " << o.plot << "\n";
  }
  return 0;
}

CLI::App* add_bench_attention(CLI::App& bench, const std::shared_ptr<BenchAttentionOptions>& o) {
  auto* command = bench.add_subcommand(
      "attention",
      "Dilated vs dense attention over sequence lengths: time, FLOP/s, peak memory; or the longest N. With --impl "
      "block_sparse: block-sparse vs dense attention, time against density");
  command->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag wins
  command->add_option("--impl", o->impl, "Implementation: dilated (against dense) or block_sparse (against dense)")
      ->capture_default_str();
  o->attention.add_to(*command, /*patterns_required=*/false);
  o->segments_flag = command->get_option("--segments");
  o->dilations_flag = command->get_option("--dilations");
  o->mode_flag = command->get_option("--mode");
  o->blocks.add_to(*command, /*with_mask_file=*/false);
  command
      ->add_option("--densities", o->densities,
                   "block_sparse: random block masks of these densities (of the key blocks per query block), "
                   "unless --pattern is given")
      ->capture_default_str();
  command->add_flag("--deterministic", o->deterministic, "block_sparse on CUDA: the backward without atomics");
  o->compute.add_to(*command, "Compute dtype f32, f64, bf16, f16 or auto (f32 on cpu, bf16 on cuda)");
  command->add_option("--batch", o->batch, "Batch size B")->capture_default_str();
  command->add_option("--heads", o->heads, "Query heads H")->capture_default_str();
  command->add_option("--kv-heads", o->kv_heads, "Key/value heads Hk (must divide H; default H)");
  command->add_option("--head-dim", o->head_dim, "Head dimension D")->capture_default_str();
  command->add_option("--seq-lens", o->seq_lens,
                      "Sequence lengths to sweep, e.g. 8K,32K,128K (block_sparse default: 16K,32K,64K on cuda, 1K,2K "
                      "on cpu)");
  command->add_option("--min-seq", o->min_seq,
                      "Sweep powers of two from this N (default 2048 on cpu, 8192 on cuda); first N of --find-max-seq");
  command->add_option("--max-seq", o->max_seq,
                      "Sweep up to this N (default 16384 on cpu, 1M on cuda); the cap of --find-max-seq");
  command->add_option("--dense-max-seq", o->dense_max_seq,
                      "Run dense attention only up to this N (default 8192 on cpu, 128K on cuda)");
  command->add_flag("--no-dense", o->no_dense, "Skip dense attention");
  command->add_flag("--forward-only", o->forward_only, "Time the forward pass only");
  command->add_option("--repeat", o->repeat, "Timed runs per measurement (the median is reported)")
      ->capture_default_str();
  command->add_option("--warmup", o->warmup, "Untimed runs before them")->capture_default_str();
  command->add_option("--json", o->json, "Write the results as JSON to this file");
  command->add_option("--plot", o->plot, "Write time and throughput against N as a PNG to this file");
  command->add_flag("--find-max-seq", o->find_max_seq,
                    "Find the longest N whose forward (and forward+backward) fit in memory instead of sweeping");
  command->add_option("--memory-limit", o->memory_limit,
                      "With --find-max-seq: a run whose peak memory exceeds this (e.g. 2G) does not fit");
  return command;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks of the operators");
  bench->require_subcommand(1);
  auto attention_options = std::make_shared<BenchAttentionOptions>();
  CLI::App* attention = add_bench_attention(*bench, attention_options);
  const Command train = add_bench_train(*bench);
  const Command sequence_parallel = add_bench_sequence_parallel(*bench);
  return {bench, [attention, attention_options, train, sequence_parallel] {
            if (attention->parsed()) return run_bench_attention(*attention_options);
            if (train.subcommand->parsed()) return train.run();
            if (sequence_parallel.subcommand->parsed()) return sequence_parallel.run();
            return 0;
          }};
}

}  // namespace longnet::cli
