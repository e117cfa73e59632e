// PNG output of the plotting module through libpng's simplified API (8-bit RGB, no
// interlacing), written with longnet's atomic file replacement so a reader never sees a
// partial image.
#include <png.h>

#include "longnet/core/error.hpp"
#include "longnet/io/atomic_file.hpp"
#include "plot/plot.hpp"

namespace longnet::plot {

std::vector<std::uint8_t> encode_png(const Image& image) {
  png_image header{};
  header.version = PNG_IMAGE_VERSION;
  header.width = static_cast<png_uint_32>(image.width());
  header.height = static_cast<png_uint_32>(image.height());
  header.format = PNG_FORMAT_RGB;
  const auto row_stride = static_cast<png_int_32>(image.width() * 3);
  png_alloc_size_t size = 0;
  // First call: the size of the encoded image; second: the bytes.
  if (!png_image_write_to_memory(&header, nullptr, &size, 0, image.rgb().data(), row_stride, nullptr)) {
    throw Error(str("PNG encoding failed: ", header.message));
  }
  std::vector<std::uint8_t> bytes(size);
  if (!png_image_write_to_memory(&header, bytes.data(), &size, 0, image.rgb().data(), row_stride, nullptr)) {
    throw Error(str("PNG encoding failed: ", header.message));
  }
  bytes.resize(size);
  return bytes;
}

void save_png(const std::filesystem::path& path, const Image& image) {
  const std::vector<std::uint8_t> bytes = encode_png(image);
  write_file_atomically(path, [&](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

}  // namespace longnet::plot
