// Timing and number formatting for command reports (see measure.hpp).
#include "measure.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "longnet/core/error.hpp"
#include "longnet/core/stream.hpp"

namespace longnet::cli {

void wait_for(Device device) {
  if (device.is_cuda()) synchronize_device(device.index);
}

double time_ms(Device device, const std::function<void()>& work) {
  double host_ms = 0;
  return time_ms(device, work, host_ms);
}

double time_ms(Device device, const std::function<void()>& work, double& host_ms) {
  using milliseconds = std::chrono::duration<double, std::milli>;
  wait_for(device);
  const auto start = std::chrono::steady_clock::now();
  work();
  host_ms = milliseconds(std::chrono::steady_clock::now() - start).count();
  wait_for(device);
  return milliseconds(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  require(!values.empty(), "median of an empty list");
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

namespace {

std::string printf_string(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

}  // namespace

std::string format_ms(double ms) {
  if (!std::isfinite(ms)) return "-";
  if (ms >= 1000) return printf_string("%.0f", ms);
  if (ms >= 10) return printf_string("%.1f", ms);
  if (ms >= 1) return printf_string("%.2f", ms);
  return printf_string("%.3f", ms);
}

std::string format_rate(double flop_per_second, double unit) {
  if (!std::isfinite(flop_per_second)) return "-";
  const double value = flop_per_second / unit;
  return printf_string(value >= 100 ? "%.0f" : value >= 10 ? "%.1f" : "%.2f", value);
}

std::string format_bytes(double bytes) {
  if (!std::isfinite(bytes)) return "-";
  if (bytes >= 1024.0 * 1024 * 1024) return printf_string("%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  if (bytes >= 1024.0 * 1024) return printf_string("%.1f MiB", bytes / (1024.0 * 1024));
  if (bytes >= 1024.0) return printf_string("%.1f KiB", bytes / 1024.0);
  return printf_string("%.0f B", bytes);
}

bool stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

}  // namespace longnet::cli
