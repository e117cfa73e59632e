// Line charts: axis ranges from the data (or the caller), "nice" ticks (1, 2, 5 x 10^k on
// linear axes; powers of the base on log axes), the layout of title, tick labels and axis
// labels around the data area, grid, series clipped to the data area, and a legend in
// the corner that hides the least data.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "longnet/core/error.hpp"
#include "plot/plot.hpp"

namespace longnet::plot {
namespace {

constexpr Color kGrid{225, 225, 225};
constexpr Color kLegendBorder{160, 160, 160};

double to_axis(double value, Scale scale) { return scale == Scale::log ? std::log10(value) : value; }

bool usable(double value, Scale scale) { return std::isfinite(value) && (scale == Scale::linear || value > 0); }

// The resolved [min, max] of an axis: the caller's bounds, else the data's range widened
// by 5% on each side (in log space for log axes).
void axis_range(const Axis& axis, const std::vector<const std::vector<double>*>& data, const char* name, double& lo,
                double& hi) {
  double data_lo = INFINITY, data_hi = -INFINITY;
  for (const auto* values : data) {
    for (double v : *values) {
      if (!usable(v, axis.scale)) continue;
      data_lo = std::min(data_lo, v);
      data_hi = std::max(data_hi, v);
    }
  }
  if (!(data_lo <= data_hi)) {  // no data: a unit range
    data_lo = axis.scale == Scale::log ? 1.0 : 0.0;
    data_hi = axis.scale == Scale::log ? 10.0 : 1.0;
  }
  if (axis.scale == Scale::log) {
    double a = std::log10(data_lo), b = std::log10(data_hi);
    const double pad = a == b ? 0.5 : 0.05 * (b - a);
    lo = axis.min.value_or(std::pow(10.0, a - pad));
    hi = axis.max.value_or(std::pow(10.0, b + pad));
    require(lo > 0, name, " axis min = ", lo, ": a log axis needs min > 0");
  } else {
    const double pad = data_lo == data_hi ? std::max(1.0, std::fabs(data_lo) * 0.1) : 0.05 * (data_hi - data_lo);
    lo = axis.min.value_or(data_lo - pad);
    hi = axis.max.value_or(data_hi + pad);
  }
  require(std::isfinite(lo) && std::isfinite(hi) && lo < hi, name, " axis range [", lo, ", ", hi,
          "]: must be finite with min < max");
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

struct Layout {
  Frame frame;
  std::vector<double> x_ticks, y_ticks;
  std::vector<std::string> x_labels, y_labels;
};

Layout make_layout(const Chart& chart, int x, int y, int width, int height, int s) {
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const Series& series = chart.series[i];
    require(series.x.size() == series.y.size(), "series ", i, " ('", series.label, "'): x has ", series.x.size(),
            " values but y has ", series.y.size(), ": they must have the same length");
  }
  require(s >= 1, "text_scale = ", s, ": must be >= 1");
  for (const Axis* axis : {&chart.x, &chart.y}) {
    require(axis->log_base >= 2, "log_base = ", axis->log_base, ": must be >= 2");
  }
  std::vector<const std::vector<double>*> xs, ys;
  for (const Series& series : chart.series) {
    xs.push_back(&series.x);
    ys.push_back(&series.y);
  }
  Layout layout;
  Frame& f = layout.frame;
  axis_range(chart.x, xs, "x", f.x_min, f.x_max);
  axis_range(chart.y, ys, "y", f.y_min, f.y_max);
  f.x_scale = chart.x.scale;
  f.y_scale = chart.y.scale;
  layout.x_ticks = axis_ticks(f.x_min, f.x_max, f.x_scale, chart.x.log_base);
  layout.y_ticks = axis_ticks(f.y_min, f.y_max, f.y_scale, chart.y.log_base);
  int y_label_width = 0;
  for (double t : layout.x_ticks) layout.x_labels.push_back(tick_label(t, f.x_scale, chart.x.log_base));
  for (double t : layout.y_ticks) {
    layout.y_labels.push_back(tick_label(t, f.y_scale, chart.y.log_base));
    y_label_width = std::max(y_label_width, text_width(layout.y_labels.back(), s));
  }
  const int gap = 4 * s, line = text_height(s);
  f.left = x + gap + (chart.y.label.empty() ? 0 : line + gap) + y_label_width + gap;
  f.top = y + gap + (chart.title.empty() ? 0 : line + gap);
  f.right = x + width - 1 - std::max(gap, layout.x_labels.empty() ? 0 : text_width(layout.x_labels.back(), s) / 2);
  f.bottom = y + height - 1 - (gap + line + gap + (chart.x.label.empty() ? 0 : line + gap));
  require(f.right - f.left >= 20 && f.bottom - f.top >= 20, "chart box ", width, "x", height,
          " is too small for its labels at text scale ", s);
  return layout;
}

// Clips the segment (x0, y0)-(x1, y1) to the rectangle (Liang-Barsky); false when nothing is left.
bool clip_segment(double& x0, double& y0, double& x1, double& y1, double left, double top, double right,
                  double bottom) {
  double t0 = 0, t1 = 1;
  const double dx = x1 - x0, dy = y1 - y0;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - left, right - x0, y0 - top, bottom - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    const double t = q[i] / p[i];
    if (p[i] < 0) {
      t0 = std::max(t0, t);
    } else {
      t1 = std::min(t1, t);
    }
  }
  if (t0 > t1) return false;
  const double ax = x0 + t0 * dx, ay = y0 + t0 * dy;
  x1 = x0 + t1 * dx;
  y1 = y0 + t1 * dy;
  x0 = ax;
  y0 = ay;
  return true;
}

void draw_series(Image& image, const Frame& f, const Series& series, Color color, int s) {
  const int thickness = s;
  bool have_previous = false;
  double px = 0, py = 0;
  for (std::size_t i = 0; i < series.x.size(); ++i) {
    if (!usable(series.x[i], f.x_scale) || !usable(series.y[i], f.y_scale)) {
      have_previous = false;  // a gap in the data breaks the line
      continue;
    }
    const double cx = f.pixel_x(series.x[i]), cy = f.pixel_y(series.y[i]);
    if (have_previous) {
      double x0 = px, y0 = py, x1 = cx, y1 = cy;
      if (clip_segment(x0, y0, x1, y1, f.left, f.top, f.right, f.bottom)) {
        image.draw_line(x0, y0, x1, y1, color, thickness);
      }
    }
    if (series.markers && cx >= f.left && cx <= f.right && cy >= f.top && cy <= f.bottom) {
      image.fill_disc(cx, cy, 2.0 * s, color);
    }
    px = cx;
    py = cy;
    have_previous = true;
  }
}

// How many points sampled along the drawn series fall inside the box [x0, x1) x [y0, y1).
int series_pixels_in(const Frame& f, const Chart& chart, int x0, int y0, int x1, int y1) {
  int count = 0;
  auto inside = [&](double x, double y) { return x >= x0 && x < x1 && y >= y0 && y < y1; };
  for (const Series& series : chart.series) {
    for (std::size_t i = 0; i < series.x.size(); ++i) {
      if (!usable(series.x[i], f.x_scale) || !usable(series.y[i], f.y_scale)) continue;
      const double cx = f.pixel_x(series.x[i]), cy = f.pixel_y(series.y[i]);
      count += inside(cx, cy) ? 4 : 0;  // a marker counts more than a line sample
      if (i + 1 == series.x.size() || !usable(series.x[i + 1], f.x_scale) || !usable(series.y[i + 1], f.y_scale)) {
        continue;
      }
      const double nx = f.pixel_x(series.x[i + 1]), ny = f.pixel_y(series.y[i + 1]);
      for (int k = 1; k < 32; ++k) count += inside(cx + (nx - cx) * k / 32.0, cy + (ny - cy) * k / 32.0);
    }
  }
  return count;
}

// The legend goes in the corner of the data area that hides the least of the data.
void draw_legend(Image& image, const Frame& f, const Chart& chart, int s) {
  int entries = 0, label_width = 0;
  for (const Series& series : chart.series) {
    if (series.label.empty()) continue;
    ++entries;
    label_width = std::max(label_width, text_width(series.label, s));
  }
  if (entries == 0) return;
  const int gap = 3 * s, line = text_height(s), sample = 12 * s;
  const int box_width = gap + sample + gap + label_width + gap, box_height = gap + entries * (line + s) + gap;
  int x0 = 0, y0 = 0, best = -1;
  for (const bool right : {false, true}) {
    for (const bool bottom : {false, true}) {
      const int cx = right ? f.right - 2 * gap - box_width : f.left + 2 * gap;
      const int cy = bottom ? f.bottom - 2 * gap - box_height : f.top + 2 * gap;
      const int hidden = series_pixels_in(f, chart, cx, cy, cx + box_width, cy + box_height);
      if (best < 0 || hidden < best) {
        best = hidden;
        x0 = cx;
        y0 = cy;
      }
    }
  }
  const int x1 = x0 + box_width, y1 = y0 + box_height;
  image.fill_rect(x0, y0, x1, y1, kWhite);
  image.fill_rect(x0, y0, x1, y0 + 1, kLegendBorder);
  image.fill_rect(x0, y1 - 1, x1, y1, kLegendBorder);
  image.fill_rect(x0, y0, x0 + 1, y1, kLegendBorder);
  image.fill_rect(x1 - 1, y0, x1, y1, kLegendBorder);
  int row = y0 + gap;
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    const Series& series = chart.series[i];
    if (series.label.empty()) continue;
    const Color color = series.color.value_or(palette_color(i));
    const double middle = row + line / 2.0;
    image.draw_line(x0 + gap, middle, x0 + gap + sample, middle, color, s);
    if (series.markers) image.fill_disc(x0 + gap + sample / 2.0, middle, 2.0 * s, color);
    draw_text(image, x0 + gap + sample + gap, row, series.label, kBlack, s);
    row += line + s;
  }
}

}  // namespace

double Frame::pixel_x(double x) const {
  const double a = to_axis(x_min, x_scale), b = to_axis(x_max, x_scale);
  return left + (to_axis(x, x_scale) - a) / (b - a) * (right - left);
}

double Frame::pixel_y(double y) const {
  const double a = to_axis(y_min, y_scale), b = to_axis(y_max, y_scale);
  return bottom - (to_axis(y, y_scale) - a) / (b - a) * (bottom - top);
}

std::vector<double> axis_ticks(double lo, double hi, Scale scale, int log_base) {
  require(lo < hi, "axis range [", lo, ", ", hi, "]: min must be < max");
  if (scale == Scale::linear) return linear_ticks(lo, hi, 6);
  require(lo > 0 && log_base >= 2, "log axis range [", lo, ", ", hi, "] with base ", log_base,
          ": needs min > 0 and base >= 2");
  const double base = log_base;
  const double first = std::ceil(std::log(lo) / std::log(base) - 1e-9);
  const double last = std::floor(std::log(hi) / std::log(base) + 1e-9);
  const int count = static_cast<int>(last - first) + 1;
  if (count < 2) return linear_ticks(lo, hi, 4);  // less than a power apart: plain ticks
  const int stride = (count + 7) / 8;             // at most about 8 labels
  std::vector<double> ticks;
  for (double e = first; e <= last; e += stride) ticks.push_back(std::pow(base, e));
  return ticks;
}

std::string tick_label(double value, Scale scale, int log_base) {
  char buffer[32];
  if (scale == Scale::log && log_base == 2 && value >= 1024 && std::fmod(value, 1024) == 0) {
    const bool mega = value >= 1024.0 * 1024 && std::fmod(value, 1024.0 * 1024) == 0;
    std::snprintf(buffer, sizeof buffer, "%.0f%s", mega ? value / (1024.0 * 1024) : value / 1024, mega ? "M" : "K");
    return buffer;
  }
  const double magnitude = std::fabs(value);
  std::snprintf(buffer, sizeof buffer, magnitude != 0 && (magnitude >= 1e6 || magnitude < 1e-3) ? "%.0e" : "%.4g",
                value);
  return buffer;
}

Frame layout_chart(const Chart& chart, int x, int y, int width, int height, int text_scale) {
  return make_layout(chart, x, y, width, height, text_scale).frame;
}

void draw_chart(Image& image, const Chart& chart, int x, int y, int width, int height, int s) {
  const Layout layout = make_layout(chart, x, y, width, height, s);
  const Frame& f = layout.frame;
  const int gap = 4 * s, line = text_height(s);
  // Grid and ticks.
  for (std::size_t i = 0; i < layout.x_ticks.size(); ++i) {
    const int px = static_cast<int>(std::lround(f.pixel_x(layout.x_ticks[i])));
    image.fill_rect(px, f.top, px + 1, f.bottom, kGrid);
    image.fill_rect(px, f.bottom, px + 1, f.bottom + s + 2, kBlack);
    const std::string& label = layout.x_labels[i];
    draw_text(image, px - text_width(label, s) / 2, f.bottom + gap, label, kBlack, s);
  }
  for (std::size_t i = 0; i < layout.y_ticks.size(); ++i) {
    const int py = static_cast<int>(std::lround(f.pixel_y(layout.y_ticks[i])));
    image.fill_rect(f.left, py, f.right, py + 1, kGrid);
    image.fill_rect(f.left - s - 2, py, f.left, py + 1, kBlack);
    const std::string& label = layout.y_labels[i];
    draw_text(image, f.left - gap - text_width(label, s), py - line / 2, label, kBlack, s);
  }
  // Data, then the frame over it, then the legend on top.
  for (std::size_t i = 0; i < chart.series.size(); ++i) {
    draw_series(image, f, chart.series[i], chart.series[i].color.value_or(palette_color(i)), s);
  }
  image.fill_rect(f.left, f.top, f.right + 1, f.top + 1, kBlack);
  image.fill_rect(f.left, f.bottom, f.right + 1, f.bottom + 1, kBlack);
  image.fill_rect(f.left, f.top, f.left + 1, f.bottom + 1, kBlack);
  image.fill_rect(f.right, f.top, f.right + 1, f.bottom + 1, kBlack);
  draw_legend(image, f, chart, s);
  // Title and axis labels.
  if (!chart.title.empty()) {
    draw_text(image, (f.left + f.right - text_width(chart.title, s)) / 2, y + gap, chart.title, kBlack, s);
  }
  if (!chart.x.label.empty()) {
    draw_text(image, (f.left + f.right - text_width(chart.x.label, s)) / 2, f.bottom + gap + line + gap, chart.x.label,
              kBlack, s);
  }
  if (!chart.y.label.empty()) {
    draw_text_upwards(image, x + gap, (f.top + f.bottom - text_width(chart.y.label, s)) / 2, chart.y.label, kBlack, s);
  }
}

Image render_charts(const std::vector<Chart>& charts, int width, int height, int columns, int text_scale) {
  require(!charts.empty(), "render_charts: no charts to draw");
  const int count = static_cast<int>(charts.size());
  if (columns <= 0) columns = count;
  const int rows = (count + columns - 1) / columns;
  Image image(width, height);
  for (int i = 0; i < count; ++i) {
    const int column = i % columns, row = i / columns;
    const int x0 = column * width / columns, x1 = (column + 1) * width / columns;
    const int y0 = row * height / rows, y1 = (row + 1) * height / rows;
    draw_chart(image, charts[static_cast<std::size_t>(i)], x0, y0, x1 - x0, y1 - y0, text_scale);
  }
  return image;
}

}  // namespace longnet::plot
