// Measurements and reports of `longnet bench attention --impl block_sparse` (see
// block_sparse_bench.hpp).
#include "block_sparse_bench.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "attention_bench.hpp"
#include "longnet/attention/block_sparse_attention.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/memory_pool.hpp"
#include "longnet/io/atomic_file.hpp"
#include "measure.hpp"
#include "plot/plot.hpp"

namespace longnet::cli {
namespace {

constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();
constexpr double kForwardBackwardFactor = 3.5;  // forward + 2.5 x forward (DESIGN 4)

struct Inputs {
  Tensor q, k, v, dout;
};

Inputs make_inputs(const BlockSparseBenchSetup& s, std::int64_t seq_len) {
  const Shape q_shape{s.batch, seq_len, s.heads, s.head_dim};
  const Shape kv_shape{s.batch, seq_len, s.kv_heads, s.head_dim};
  return {Tensor::randn(q_shape, 1, s.dtype, s.device), Tensor::randn(kv_shape, 2, s.dtype, s.device),
          Tensor::randn(kv_shape, 3, s.dtype, s.device), Tensor::randn(q_shape, 4, s.dtype, s.device)};
}

double median_ms(const BlockSparseBenchSetup& s, const std::function<void()>& work) {
  std::vector<double> times;
  for (int run = 0; run < s.warmup + s.repeat; ++run) {
    const double ms = time_ms(s.device, work);
    if (run >= s.warmup) times.push_back(ms);
  }
  return median(times);
}

// Runs `measure`; an out-of-memory Error becomes the returned message (empty: it fit).
std::string unless_out_of_memory(Device device, const std::function<void()>& measure) {
  try {
    measure();
  } catch (const Error& error) {
    if (!is_out_of_memory(error)) throw;
    memory_pool(device).release_cached();
    return error.what();
  }
  return "";
}

double rate(double flops, double ms) { return flops / (ms * 1e-3); }
nlohmann::json number_or_null(double value) { return std::isfinite(value) ? nlohmann::json(value) : nullptr; }

std::string fixed(double value, int digits) {
  if (!std::isfinite(value)) return "-";
  std::ostringstream text;
  text << std::fixed << std::setprecision(digits) << value;
  return text.str();
}

std::string ms_or_dash(double ms) { return std::isfinite(ms) ? format_ms(ms) : "-"; }

}  // namespace

double dense_ratio(double sparse_ms, double dense_ms, double density) { return sparse_ms / (dense_ms * density); }

DenseTiming time_dense_attention(const BlockSparseBenchSetup& s, std::int64_t seq_len) {
  const DilatedAttentionConfig dense = DilatedAttentionConfig::dense(s.causal);
  DenseTiming timing{kNotMeasured, kNotMeasured, dilated_attention_forward_flops(dense, 1, seq_len, 1, 1) / 4.0, ""};
  timing.failure = unless_out_of_memory(s.device, [&] {
    wait_for(s.device);
    const Inputs in = make_inputs(s, seq_len);
    timing.forward_ms = median_ms(s, [&] { (void)dilated_attention_forward(dense, in.q, in.k, in.v); });
    if (s.backward) {
      timing.forward_backward_ms = median_ms(s, [&] {
        const AttentionOutput out = dilated_attention_forward(dense, in.q, in.k, in.v);
        (void)dilated_attention_backward(dense, in.q, in.k, in.v, out, in.dout);
      });
    }
  });
  if (!timing.failure.empty()) timing.forward_ms = timing.forward_backward_ms = kNotMeasured;
  return timing;
}

BlockSparseBenchRow time_block_sparse_attention(const BlockSparseBenchSetup& s, const BlockMask& mask) {
  BlockSparseBenchRow row;
  row.seq_len = mask.seq_len();
  row.block_density = mask.density();
  row.forward_flops = block_sparse_attention_forward_flops(mask, s.batch, s.heads, s.head_dim);
  const double dense_pairs =
      dilated_attention_forward_flops(DilatedAttentionConfig::dense(mask.grid().causal), 1, row.seq_len, 1, 1) / 4.0;
  row.density = row.forward_flops / (4.0 * static_cast<double>(s.head_dim * s.batch * s.heads) * dense_pairs);
  row.forward_ms = row.forward_backward_ms = kNotMeasured;
  row.dense_forward_ms = row.dense_forward_backward_ms = kNotMeasured;
  row.failure = unless_out_of_memory(s.device, [&] {
    wait_for(s.device);
    const Inputs in = make_inputs(s, row.seq_len);
    // The operator uploads the mask's lists once (in the warm-up) and keeps them.
    BlockSparseAttention attention(mask, {std::nullopt, s.deterministic});
    row.forward_ms = median_ms(s, [&] { (void)attention.forward(in.q, in.k, in.v); });
    if (s.backward) {
      row.forward_backward_ms = median_ms(s, [&] {
        (void)attention.forward(in.q, in.k, in.v);
        (void)attention.backward(in.dout);
      });
    }
  });
  if (!row.failure.empty()) row.forward_ms = row.forward_backward_ms = kNotMeasured;
  return row;
}

void print_block_sparse_table(std::ostream& out, const BlockSparseBenchReport& report) {
  const BlockSparseBenchSetup& s = report.setup;
  const bool cuda = s.device.is_cuda();
  const std::string unit = cuda ? "TFLOP/s" : "GFLOP/s";
  const double unit_scale = cuda ? 1e12 : 1e9;
  out << "attention benchmark: block_sparse on " << to_string(s.device)
      << (report.device_name.empty() ? "" : " (" + report.device_name + ")") << ", " << dtype_name(s.dtype)
      << ", batch " << s.batch << ", heads " << s.heads << " (kv " << s.kv_heads << "), head_dim " << s.head_dim
      << ", blocks " << report.block_q << " x " << report.block_k << (s.causal ? ", causal" : ", non-causal")
      << (s.deterministic ? ", deterministic" : "") << "; median of " << s.repeat << " after " << s.warmup
      << " warm-up\n";
  out << "density = attended pairs / dense attention's; dense x d = dense time x density; ratio = time / (dense x d)"
      << " (the issue's criterion: <= 1.25 at density 0.1)\n";
  out << std::right << std::setw(8) << "N"
      << "  " << std::left << std::setw(24) << "mask" << std::right << std::setw(8) << "blocks" << std::setw(9)
      << "density" << std::setw(10) << "fwd ms" << std::setw(9) << unit << std::setw(12) << "dense x d" << std::setw(7)
      << "ratio" << std::setw(12) << "fwd+bwd ms" << std::setw(9) << unit << std::setw(12) << "dense x d"
      << std::setw(7) << "ratio"
      << "\n";
  for (const BlockSparseBenchRow& r : report.rows) {
    out << std::right << std::setw(8) << r.seq_len << "  " << std::left << std::setw(24) << r.mask.substr(0, 23)
        << std::right << std::setw(8) << fixed(100 * r.block_density, 1) + "%" << std::setw(9) << fixed(r.density, 4);
    if (!r.failure.empty()) {
      out << "  " << r.failure << "\n";
      continue;
    }
    const double dense_f = r.dense_forward_ms * r.density, dense_fb = r.dense_forward_backward_ms * r.density;
    out << std::setw(10) << ms_or_dash(r.forward_ms) << std::setw(9)
        << (std::isfinite(r.forward_ms) ? format_rate(rate(r.forward_flops, r.forward_ms), unit_scale) : "-")
        << std::setw(12) << ms_or_dash(dense_f) << std::setw(7) << fixed(r.forward_ms / dense_f, 2) << std::setw(12)
        << ms_or_dash(r.forward_backward_ms) << std::setw(9)
        << (std::isfinite(r.forward_backward_ms)
                ? format_rate(rate(kForwardBackwardFactor * r.forward_flops, r.forward_backward_ms), unit_scale)
                : "-")
        << std::setw(12) << ms_or_dash(dense_fb) << std::setw(7) << fixed(r.forward_backward_ms / dense_fb, 2) << "\n";
  }
}

void write_block_sparse_json(const std::filesystem::path& path, const BlockSparseBenchReport& report) {
  const BlockSparseBenchSetup& s = report.setup;
  nlohmann::json j;
  j["benchmark"] = "attention";
  j["impl"] = "block_sparse";
  j["device"] = to_string(s.device);
  j["device_name"] = report.device_name;
  j["dtype"] = dtype_name(s.dtype);
  j["batch"] = s.batch;
  j["heads"] = s.heads;
  j["kv_heads"] = s.kv_heads;
  j["head_dim"] = s.head_dim;
  j["block_q"] = report.block_q;
  j["block_k"] = report.block_k;
  j["causal"] = s.causal;
  j["deterministic"] = s.deterministic;
  j["warmup"] = s.warmup;
  j["repeat"] = s.repeat;
  j["flop_rule"] = "forward = 4 * head_dim * attended pairs; forward_backward = 3.5 x forward";
  j["density_rule"] = "attended pairs / dense attention's attended pairs (same causality)";
  j["results"] = nlohmann::json::array();
  for (const BlockSparseBenchRow& r : report.rows) {
    nlohmann::json row;
    row["seq_len"] = r.seq_len;
    row["mask"] = r.mask;
    row["block_density"] = r.block_density;
    row["density"] = r.density;
    row["forward_flops"] = r.forward_flops;
    row["forward_ms"] = number_or_null(r.forward_ms);
    row["forward_backward_ms"] = number_or_null(r.forward_backward_ms);
    row["dense_forward_ms"] = number_or_null(r.dense_forward_ms);
    row["dense_forward_backward_ms"] = number_or_null(r.dense_forward_backward_ms);
    row["forward_ratio"] = number_or_null(dense_ratio(r.forward_ms, r.dense_forward_ms, r.density));
    row["forward_backward_ratio"] =
        number_or_null(dense_ratio(r.forward_backward_ms, r.dense_forward_backward_ms, r.density));
    if (!r.failure.empty()) row["failure"] = r.failure;
    j["results"].push_back(row);
  }
  write_text_atomically(path, j.dump(2) + "\n");
}

void write_block_sparse_plot(const std::filesystem::path& path, const BlockSparseBenchReport& report) {
  plot::Axis density_axis;
  density_axis.label = "density (attended pairs / dense)";
  density_axis.scale = plot::Scale::log;
  std::vector<plot::Chart> charts;
  for (const bool backward : {false, true}) {
    if (backward && !report.setup.backward) break;
    plot::Chart chart;
    chart.title = backward ? "forward + backward" : "forward";
    chart.x = density_axis;
    chart.y.label = "ms";
    chart.y.scale = plot::Scale::log;
    std::map<std::int64_t, std::vector<const BlockSparseBenchRow*>> by_length;
    for (const BlockSparseBenchRow& r : report.rows) by_length[r.seq_len].push_back(&r);
    std::size_t colour = 0;
    for (auto& [n, rows] : by_length) {
      std::sort(rows.begin(), rows.end(), [](auto* a, auto* b) { return a->density < b->density; });
      const plot::Color color = plot::palette_color(colour++);
      plot::Series sparse, dense;
      sparse.label = str("N = ", n);
      dense.label = str("dense x density, N = ", n);
      sparse.color = dense.color = color;
      dense.markers = false;
      for (const BlockSparseBenchRow* r : rows) {
        sparse.x.push_back(r->density);
        sparse.y.push_back(backward ? r->forward_backward_ms : r->forward_ms);
        dense.x.push_back(r->density);
        dense.y.push_back((backward ? r->dense_forward_backward_ms : r->dense_forward_ms) * r->density);
      }
      auto any = [](const plot::Series& series) {
        return std::any_of(series.y.begin(), series.y.end(), [](double v) { return std::isfinite(v) && v > 0; });
      };
      if (any(sparse)) chart.series.push_back(std::move(sparse));
      if (any(dense)) chart.series.push_back(std::move(dense));
    }
    charts.push_back(std::move(chart));
  }
  require(!charts.empty() && !charts[0].series.empty(), "--plot: no measured row to draw");
  plot::save_png(path, plot::render_charts(charts, 1400, 560));
}

}  // namespace longnet::cli
