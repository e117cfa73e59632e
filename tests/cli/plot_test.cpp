// The plotting module: a chart becomes a valid PNG of the requested size, known series
// land on the pixels the frame maps them to (linear and log axes), gaps break lines,
// text draws ink, ticks are nice numbers, and bad charts are Errors.
#include "plot/plot.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "cli_runner.hpp"
#include "png_reader.hpp"

namespace longnet::testing {
namespace {

constexpr plot::Color kRed{220, 0, 0};

std::uint32_t packed(plot::Color c) { return (std::uint32_t{c.r} << 16) | (std::uint32_t{c.g} << 8) | c.b; }

plot::Chart horizontal_line_chart() {
  plot::Chart chart;
  chart.title = "a known line";
  chart.x.label = "x";
  chart.x.min = 0.0;
  chart.x.max = 10.0;
  chart.y.label = "y";
  chart.y.min = 0.0;
  chart.y.max = 10.0;
  plot::Series line;
  line.label = "y = 5";
  line.x = {1, 9};
  line.y = {5, 5};
  line.color = kRed;
  line.markers = false;
  chart.series.push_back(line);
  return chart;
}

TEST(Plot, WritesAValidPngOfTheRequestedSizeWithTheSeriesWhereTheFrameSays) {
  const ScratchFolder folder("plot");
  const plot::Chart chart = horizontal_line_chart();
  plot::save_png(folder / "line.png", plot::render_charts({chart}, 640, 400));

  std::ifstream file(folder / "line.png", std::ios::binary);
  char signature[8] = {};
  file.read(signature, 8);
  EXPECT_EQ(std::string(signature, 8), std::string("\x89PNG\r\n\x1a\n", 8));

  const DecodedPng png = read_png(folder / "line.png");
  ASSERT_TRUE(png.ok) << png.message;
  EXPECT_EQ(png.width, 640);
  EXPECT_EQ(png.height, 400);
  const plot::Frame frame = plot::layout_chart(chart, 0, 0, 640, 400);
  // On the line (away from the legend, which sits in a corner): red.
  for (double x : {3.0, 5.0, 7.0}) {
    const auto px = static_cast<int>(std::lround(frame.pixel_x(x))),
               py = static_cast<int>(std::lround(frame.pixel_y(5)));
    EXPECT_EQ(png.pixel(px, py), packed(kRed)) << "at x = " << x;
  }
  // Beside the line, off the grid (ticks at 0, 2, 4, ...): background, not red.
  const auto px = static_cast<int>(std::lround(frame.pixel_x(5))), py = static_cast<int>(std::lround(frame.pixel_y(3)));
  EXPECT_EQ(png.pixel(px, py), packed(plot::kWhite));
  // Left of the line's first point: no red.
  EXPECT_NE(
      png.pixel(static_cast<int>(std::lround(frame.pixel_x(0.5))), static_cast<int>(std::lround(frame.pixel_y(5)))),
      packed(kRed));
}

TEST(Plot, LogAxesMapPowersEvenly) {
  plot::Chart chart;
  chart.x.scale = plot::Scale::log;
  chart.x.log_base = 2;
  chart.y.scale = plot::Scale::log;
  plot::Series square;
  for (double x = 1024; x <= 1 << 20; x *= 2) {
    square.x.push_back(x);
    square.y.push_back(x * x);
  }
  square.color = kRed;
  chart.series.push_back(square);
  const plot::Frame frame = plot::layout_chart(chart, 0, 0, 800, 500);
  // Equal ratios are equal distances.
  EXPECT_NEAR(frame.pixel_x(4096) - frame.pixel_x(2048), frame.pixel_x(2048) - frame.pixel_x(1024), 1e-9);
  EXPECT_NEAR(frame.pixel_y(1e8) - frame.pixel_y(1e7), frame.pixel_y(1e7) - frame.pixel_y(1e6), 1e-9);
  const plot::Image image = plot::render_charts({chart}, 800, 500);
  // The line between (2^15, 2^30) and (2^16, 2^32) passes through its geometric midpoint.
  const double x = std::sqrt(32768.0 * 65536.0);
  EXPECT_EQ(
      image.pixel(static_cast<int>(std::lround(frame.pixel_x(x))), static_cast<int>(std::lround(frame.pixel_y(x * x)))),
      kRed);
}

TEST(Plot, NonFiniteAndNonPositivePointsBreakTheLine) {
  plot::Chart chart = horizontal_line_chart();
  chart.series[0].x = {1, 5, 9};
  chart.series[0].y = {5, NAN, 5};
  const plot::Frame frame = plot::layout_chart(chart, 0, 0, 640, 400);
  const plot::Image image = plot::render_charts({chart}, 640, 400);
  const int py = static_cast<int>(std::lround(frame.pixel_y(5)));
  EXPECT_NE(image.pixel(static_cast<int>(std::lround(frame.pixel_x(5))), py), kRed);
}

TEST(Plot, TextDrawsInkAndSpacesDoNot) {
  plot::Image image(100, 40);
  plot::draw_text(image, 2, 2, "   ", plot::kBlack, 2);
  int ink = 0;
  auto count = [&] {
    ink = 0;
    for (int y = 0; y < image.height(); ++y) {
      for (int x = 0; x < image.width(); ++x) ink += image.pixel(x, y) == plot::kBlack;
    }
    return ink;
  };
  EXPECT_EQ(count(), 0);
  plot::draw_text(image, 2, 2, "8K", plot::kBlack, 2);
  EXPECT_GT(count(), 40);
  EXPECT_EQ(plot::text_width("8K", 2), 24);
  EXPECT_EQ(plot::text_height(3), 27);
  // Everything stays inside the text's box.
  for (int y = 0; y < image.height(); ++y) {
    for (int x = 0; x < image.width(); ++x) {
      if (image.pixel(x, y) == plot::kBlack) {
        EXPECT_TRUE(x >= 2 && x < 2 + 24 && y >= 2 && y < 2 + 18) << x << ", " << y;
      }
    }
  }
}

TEST(Plot, TicksAreNiceNumbersAndLabelsAreCompact) {
  EXPECT_EQ(plot::axis_ticks(0, 10, plot::Scale::linear, 10), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(plot::axis_ticks(1, 1000, plot::Scale::log, 10), (std::vector<double>{1, 10, 100, 1000}));
  const std::vector<double> binary = plot::axis_ticks(1000, 5e6, plot::Scale::log, 2);
  ASSERT_FALSE(binary.empty());
  EXPECT_LE(binary.size(), 9u);
  EXPECT_EQ(binary.front(), 1024);
  EXPECT_EQ(plot::tick_label(8192, plot::Scale::log, 2), "8K");
  EXPECT_EQ(plot::tick_label(1 << 20, plot::Scale::log, 2), "1M");
  EXPECT_EQ(plot::tick_label(0.5, plot::Scale::linear, 10), "0.5");
  EXPECT_EQ(plot::tick_label(1e7, plot::Scale::log, 10), "1e+07");
}

TEST(Plot, BadChartsAreErrors) {
  plot::Chart chart = horizontal_line_chart();
  chart.series[0].y.push_back(1);
  EXPECT_THROW(plot::render_charts({chart}, 640, 400), Error);
  chart = horizontal_line_chart();
  chart.x.min = 20.0;
  EXPECT_THROW(plot::render_charts({chart}, 640, 400), Error);
  chart = horizontal_line_chart();
  chart.y.scale = plot::Scale::log;
  chart.y.min = 0.0;
  EXPECT_THROW(plot::render_charts({chart}, 640, 400), Error);
  EXPECT_THROW(plot::render_charts({horizontal_line_chart()}, 30, 30), Error);
  EXPECT_THROW(plot::render_charts({}, 640, 400), Error);
  EXPECT_THROW(plot::Image(0, 10), Error);
}

}  // namespace
}  // namespace longnet::testing
