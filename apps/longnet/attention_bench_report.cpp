// Table, JSON and plot of `longnet bench attention` (see attention_bench_report.hpp).
#include "attention_bench_report.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>

#include "longnet/io/atomic_file.hpp"
#include "measure.hpp"
#include "plot/plot.hpp"

namespace longnet::cli {
namespace {

constexpr double kForwardBackwardFactor = 3.5;  // forward + 2.5 x forward

double rate(double flops, double ms) { return flops / (ms * 1e-3); }

// JSON has no NaN: unmeasured values are null.
nlohmann::json number_or_null(double value) { return std::isfinite(value) ? nlohmann::json(value) : nullptr; }

std::vector<std::string> names_in_order(const AttentionBenchReport& report) {
  std::vector<std::string> names;
  for (const auto& r : report.results) {
    if (std::find(names.begin(), names.end(), r.name) == names.end()) names.push_back(r.name);
  }
  return names;
}

}  // namespace

double AttentionBenchReport::rate_unit() const { return setup.device.is_cuda() ? 1e12 : 1e9; }
std::string AttentionBenchReport::rate_name() const { return setup.device.is_cuda() ? "TFLOP/s" : "GFLOP/s"; }

void print_table(std::ostream& out, const AttentionBenchReport& report) {
  const AttentionBenchSetup& s = report.setup;
  out << "attention benchmark: " << report.impl << " on " << to_string(s.device)
      << (report.device_name.empty() ? "" : " (" + report.device_name + ")") << ", " << dtype_name(s.dtype)
      << ", batch " << s.batch << ", heads " << s.heads << " (kv " << s.kv_heads << "), head_dim " << s.head_dim
      << "\n";
  out << "dilated: mode " << to_string(s.config.mode) << ", patterns (w, r)";
  for (std::size_t i = 0; i < s.config.segment_lengths.size(); ++i) {
    out << " (" << s.config.segment_lengths[i] << ", " << s.config.dilation_rates[i] << ")";
  }
  out << (s.config.causal ? ", causal" : ", non-causal") << "; median of " << s.repeat << " after " << s.warmup
      << " warm-up\n";
  if (!report.results.empty()) {
    const std::string unit = report.rate_name();
    out << std::left << std::setw(9) << "attention" << std::right << std::setw(10) << "N" << std::setw(11) << "fwd ms"
        << std::setw(13) << "fwd+bwd ms" << std::setw(16) << ("fwd " + unit) << std::setw(20) << ("fwd+bwd " + unit)
        << std::setw(12) << "peak fwd" << std::setw(15) << "peak fwd+bwd"
        << "\n";
    for (const auto& r : report.results) {
      out << std::left << std::setw(9) << r.name << std::right << std::setw(10) << r.seq_len;
      if (!r.failure.empty()) {
        out << "  " << r.failure << "\n";
        continue;
      }
      out << std::setw(11) << format_ms(r.forward_ms) << std::setw(13) << format_ms(r.forward_backward_ms)
          << std::setw(16) << format_rate(rate(r.forward_flops, r.forward_ms), report.rate_unit()) << std::setw(20)
          << format_rate(rate(kForwardBackwardFactor * r.forward_flops, r.forward_backward_ms), report.rate_unit())
          << std::setw(12) << format_bytes(r.peak_forward_bytes) << std::setw(15)
          << format_bytes(r.peak_forward_backward_bytes) << "\n";
    }
  }
  for (const auto& l : report.longest) {
    out << "longest N that fits, " << (l.pass == "forward" ? "forward" : "forward+backward") << ": "
        << l.result.seq_len;
    if (l.result.seq_len > 0) out << " (peak " << format_bytes(l.result.peak_bytes) << ")";
    if (l.result.reached_limit) out << " [the search limit: longer may fit]";
    out << ", " << l.result.attempts << " attempts\n";
  }
}

void write_json(const std::filesystem::path& path, const AttentionBenchReport& report) {
  const AttentionBenchSetup& s = report.setup;
  nlohmann::json j;
  j["benchmark"] = "attention";
  j["impl"] = report.impl;
  j["device"] = to_string(s.device);
  j["device_name"] = report.device_name;
  j["dtype"] = dtype_name(s.dtype);
  j["batch"] = s.batch;
  j["heads"] = s.heads;
  j["kv_heads"] = s.kv_heads;
  j["head_dim"] = s.head_dim;
  j["mode"] = to_string(s.config.mode);
  j["causal"] = s.config.causal;
  j["segment_lengths"] = s.config.segment_lengths;
  j["dilation_rates"] = s.config.dilation_rates;
  j["warmup"] = s.warmup;
  j["repeat"] = s.repeat;
  j["flop_rule"] = "forward = 4 * head_dim * attended pairs; forward_backward = 3.5 x forward";
  j["results"] = nlohmann::json::array();
  for (const auto& r : report.results) {
    nlohmann::json row;
    row["attention"] = r.name;
    row["seq_len"] = r.seq_len;
    row["forward_flops"] = r.forward_flops;
    row["forward_ms"] = number_or_null(r.forward_ms);
    row["forward_backward_ms"] = number_or_null(r.forward_backward_ms);
    row["forward_flop_per_s"] = number_or_null(rate(r.forward_flops, r.forward_ms));
    row["forward_backward_flop_per_s"] =
        number_or_null(rate(kForwardBackwardFactor * r.forward_flops, r.forward_backward_ms));
    row["peak_forward_bytes"] = number_or_null(r.peak_forward_bytes);
    row["peak_forward_backward_bytes"] = number_or_null(r.peak_forward_backward_bytes);
    if (!r.failure.empty()) row["failure"] = r.failure;
    j["results"].push_back(row);
  }
  if (!report.longest.empty()) {
    nlohmann::json longest;
    for (const auto& l : report.longest) {
      longest[l.pass] = {{"seq_len", l.result.seq_len},
                         {"peak_bytes", l.result.peak_bytes},
                         {"reached_limit", l.result.reached_limit},
                         {"attempts", l.result.attempts}};
    }
    if (report.memory_limit > 0) longest["memory_limit_bytes"] = report.memory_limit;
    j["longest_seq_len"] = longest;
  }
  write_text_atomically(path, j.dump(2) + "\n");
}

void write_plot(const std::filesystem::path& path, const AttentionBenchReport& report) {
  plot::Axis n_axis;
  n_axis.label = "sequence length N";
  n_axis.scale = plot::Scale::log;
  n_axis.log_base = 2;
  plot::Chart time, throughput;
  time.title = "time";
  time.x = n_axis;
  time.y.label = "ms";
  time.y.scale = plot::Scale::log;
  throughput.title = "throughput (DESIGN 4 FLOPs)";
  throughput.x = n_axis;
  throughput.y.label = report.rate_name();
  throughput.y.min = 0.0;
  std::size_t colour = 0;
  for (const std::string& name : names_in_order(report)) {
    for (const bool backward : {false, true}) {
      const std::string label = name + (backward ? " fwd+bwd" : " forward");
      const plot::Color color = plot::palette_color(colour++);
      plot::Series t, f;
      t.label = f.label = label;
      t.color = f.color = color;
      for (const auto& r : report.results) {
        if (r.name != name) continue;
        const double ms = backward ? r.forward_backward_ms : r.forward_ms;
        const double flops = backward ? kForwardBackwardFactor * r.forward_flops : r.forward_flops;
        t.x.push_back(static_cast<double>(r.seq_len));
        t.y.push_back(ms);
        f.x.push_back(static_cast<double>(r.seq_len));
        f.y.push_back(rate(flops, ms) / report.rate_unit());
      }
      const bool any = std::any_of(t.y.begin(), t.y.end(), [](double v) { return std::isfinite(v); });
      if (!any) continue;
      time.series.push_back(std::move(t));
      throughput.series.push_back(std::move(f));
    }
  }
  plot::save_png(path, plot::render_charts({time, throughput}, 1400, 560));
}

}  // namespace longnet::cli
