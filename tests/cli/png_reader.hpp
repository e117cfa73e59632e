// Reads a PNG file back into 8-bit RGB pixels with libpng, for tests of what the plotting
// module and `longnet bench --plot` write.
#pragma once

#include <png.h>

#include <cstdint>
#include <string>
#include <vector>

namespace longnet::testing {

struct DecodedPng {
  bool ok = false;
  std::string message;  // libpng's reason when !ok
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;

  std::uint32_t pixel(int x, int y) const {  // 0xRRGGBB
    const std::size_t at =
        (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
    return (std::uint32_t{rgb[at]} << 16) | (std::uint32_t{rgb[at + 1]} << 8) | rgb[at + 2];
  }
};

inline DecodedPng read_png(const std::string& path) {
  DecodedPng out;
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) {
    out.message = image.message;
    return out;
  }
  image.format = PNG_FORMAT_RGB;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) {
    out.message = image.message;
    return out;
  }
  out.ok = true;
  return out;
}

}  // namespace longnet::testing
