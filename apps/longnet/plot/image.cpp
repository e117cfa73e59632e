// Raster primitives of the plotting module: an RGB image with pixel access, rectangles,
// thick lines (a square brush stepped along the line, one step per pixel of its longer
// axis) and discs. No anti-aliasing: charts stay crisp and tests can check exact pixels.
#include <algorithm>
#include <cmath>

#include "longnet/core/error.hpp"
#include "plot/plot.hpp"

namespace longnet::plot {

Color palette_color(std::size_t index) {
  static constexpr Color kPalette[] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                                       {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                       {188, 189, 34},  {23, 190, 207}};
  return kPalette[index % (sizeof kPalette / sizeof kPalette[0])];
}

Image::Image(int width, int height, Color background) : width_(width), height_(height) {
  require(width >= 1 && width <= 16384, "image width = ", width, ": must be in [1, 16384]");
  require(height >= 1 && height <= 16384, "image height = ", height, ": must be in [1, 16384]");
  rgb_.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  fill_rect(0, 0, width, height, background);
}

Color Image::pixel(int x, int y) const {
  require(x >= 0 && x < width_ && y >= 0 && y < height_, "pixel (", x, ", ", y, ") is outside the ", width_, "x",
          height_, " image");
  const std::size_t at =
      (static_cast<std::size_t>(y) * static_cast<std::size_t>(width_) + static_cast<std::size_t>(x)) * 3;
  return {rgb_[at], rgb_[at + 1], rgb_[at + 2]};
}

void Image::set_pixel(int x, int y, Color c) {
  if (x < 0 || x >= width_ || y < 0 || y >= height_) return;
  const std::size_t at =
      (static_cast<std::size_t>(y) * static_cast<std::size_t>(width_) + static_cast<std::size_t>(x)) * 3;
  rgb_[at] = c.r;
  rgb_[at + 1] = c.g;
  rgb_[at + 2] = c.b;
}

void Image::fill_rect(int x0, int y0, int x1, int y1, Color c) {
  x0 = std::max(x0, 0);
  y0 = std::max(y0, 0);
  x1 = std::min(x1, width_);
  y1 = std::min(y1, height_);
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) set_pixel(x, y, c);
  }
}

void Image::draw_line(double x0, double y0, double x1, double y1, Color c, int thickness) {
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1)) return;
  // Far-off endpoints would make the loop long: nothing outside a generous margin is drawn.
  const double limit = 4.0 * (width_ + height_);
  if (std::fabs(x0) > limit || std::fabs(y0) > limit || std::fabs(x1) > limit || std::fabs(y1) > limit) return;
  const int steps = static_cast<int>(std::ceil(std::max(std::fabs(x1 - x0), std::fabs(y1 - y0))));
  const int before = (thickness - 1) / 2;  // brush pixels before the centre
  for (int i = 0; i <= steps; ++i) {
    const double t = steps == 0 ? 0.0 : static_cast<double>(i) / steps;
    const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0))) - before;
    const int y = static_cast<int>(std::lround(y0 + t * (y1 - y0))) - before;
    fill_rect(x, y, x + thickness, y + thickness, c);
  }
}

void Image::fill_disc(double x, double y, double radius, Color c) {
  const int x0 = static_cast<int>(std::floor(x - radius)), x1 = static_cast<int>(std::ceil(x + radius));
  const int y0 = static_cast<int>(std::floor(y - radius)), y1 = static_cast<int>(std::ceil(y + radius));
  for (int py = y0; py <= y1; ++py) {
    for (int px = x0; px <= x1; ++px) {
      const double dx = px - x, dy = py - y;
      if (dx * dx + dy * dy <= radius * radius) set_pixel(px, py, c);
    }
  }
}

}  // namespace longnet::plot
