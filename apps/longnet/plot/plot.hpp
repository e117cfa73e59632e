// Line charts as PNG images, for the reports of the `longnet` program (benchmark sweeps,
// loss curves): series of (x, y) points with labels, linear or logarithmic axes with
// ticks, axis labels and a title drawn in a small built-in bitmap font, a legend, and PNG
// output through libpng, written atomically. Coordinates are pixels, origin top-left.
//
//   plot::Chart chart;
//   chart.x.label = "N";
//   chart.x.scale = plot::Scale::log;
//   chart.series.push_back(plot::Series{"dilated", {1024, 2048}, {0.5, 1.1}});
//   plot::save_png("sweep.png", plot::render_charts({chart}, 800, 500));
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace longnet::plot {

struct Color {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Color&, const Color&) = default;
};

inline constexpr Color kWhite{255, 255, 255};
inline constexpr Color kBlack{0, 0, 0};

// Colour i of a ten-colour palette that stays distinguishable on white (cycles after 10).
Color palette_color(std::size_t index);

// An 8-bit RGB image, row-major, 3 bytes per pixel.
class Image {
 public:
  // 1 <= width, height <= 16384; throws Error otherwise.
  Image(int width, int height, Color background = kWhite);
  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<std::uint8_t>& rgb() const { return rgb_; }
  Color pixel(int x, int y) const;        // throws Error outside the image
  void set_pixel(int x, int y, Color c);  // pixels outside the image are ignored
  // Fills the pixels [x0, x1) x [y0, y1) (clipped to the image).
  void fill_rect(int x0, int y0, int x1, int y1, Color c);
  // A straight line of `thickness` pixels between two points (clipped to the image).
  void draw_line(double x0, double y0, double x1, double y1, Color c, int thickness = 1);
  // A filled disc of `radius` pixels.
  void fill_disc(double x, double y, double radius, Color c);

 private:
  int width_, height_;
  std::vector<std::uint8_t> rgb_;
};

// The built-in font: 5x7-pixel glyphs of printable ASCII with descenders (other bytes
// draw as '?') in 6x9 cells, magnified by an integer `scale`.
int text_width(std::string_view text, int scale);
int text_height(int scale);
// Draws text with its cell's top-left corner at (x, y).
void draw_text(Image& image, int x, int y, std::string_view text, Color c, int scale);
// Draws text rotated a quarter turn counter-clockwise (reading upwards); (x, y) is the
// top-left corner of the rotated box, which is text_height wide and text_width tall.
void draw_text_upwards(Image& image, int x, int y, std::string_view text, Color c, int scale);

enum class Scale { linear, log };

struct Axis {
  std::string label;
  Scale scale = Scale::linear;
  std::optional<double> min, max;  // default: the data's range plus a margin
  int log_base = 10;               // log axes: ticks at powers of this (2 suits sequence lengths)
};

struct Series {
  std::string label;           // legend entry (empty: not listed)
  std::vector<double> x, y;    // equal sizes; a non-finite point (or <= 0 on a log axis) breaks the line
  std::optional<Color> color;  // default: palette_color of the series' index
  bool markers = true;         // a dot at each point
};

struct Chart {
  std::string title;
  Axis x, y;
  std::vector<Series> series;
};

// Where a chart's data area lies in an image and how data coordinates map onto it.
struct Frame {
  int left = 0, top = 0, right = 0, bottom = 0;  // data area: pixels [left, right] x [top, bottom]
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  Scale x_scale = Scale::linear, y_scale = Scale::linear;
  double pixel_x(double x) const;
  double pixel_y(double y) const;
};

// The frame of `chart` drawn into the box (x, y, width, height); throws Error on a bad
// chart (series sizes differ, min >= max, a log axis with min <= 0) or a box too small.
Frame layout_chart(const Chart& chart, int x, int y, int width, int height, int text_scale = 2);
void draw_chart(Image& image, const Chart& chart, int x, int y, int width, int height, int text_scale = 2);

// Charts side by side in `columns` columns (0: all in one row), in equal boxes.
Image render_charts(const std::vector<Chart>& charts, int width, int height, int columns = 0, int text_scale = 2);

// Tick positions of an axis over [lo, hi] (about 4 to 8 of them) and their labels
// ("2K", "1M" on base-2 log axes; "0.5", "100", "1e+06" otherwise).
std::vector<double> axis_ticks(double lo, double hi, Scale scale, int log_base);
std::string tick_label(double value, Scale scale, int log_base);

// The image as PNG bytes (8-bit RGB), and written atomically to `path`.
std::vector<std::uint8_t> encode_png(const Image& image);
void save_png(const std::filesystem::path& path, const Image& image);

}  // namespace longnet::plot
