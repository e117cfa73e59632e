// Parsing of integer lists and sizes given on the command line (see parse_values.hpp).
#include "parse_values.hpp"

#include <charconv>
#include <limits>

#include "longnet/core/error.hpp"

namespace longnet::cli {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  return text;
}

// The multiplier of a binary suffix, or 0 when `c` is not one.
std::int64_t suffix_multiplier(char c) {
  switch (c) {
    case 'k':
    case 'K':
      return std::int64_t{1} << 10;
    case 'm':
    case 'M':
      return std::int64_t{1} << 20;
    case 'g':
    case 'G':
      return std::int64_t{1} << 30;
    default:
      return 0;
  }
}

// `item` of the flag's whole `text` (messages quote both).
std::int64_t parse_item(std::string_view item_text, std::string_view text, std::string_view flag) {
  const std::string_view item = trim(item_text);
  std::int64_t multiplier = 1;
  std::string_view digits = item;
  if (!digits.empty() && suffix_multiplier(digits.back()) != 0) {
    multiplier = suffix_multiplier(digits.back());
    digits.remove_suffix(1);
  }
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  require(!digits.empty() && error == std::errc() && end == digits.data() + digits.size(), flag, " = '", text, "': '",
          item, "' is not an integer (digits with an optional K, M or G suffix)");
  require(value <= std::numeric_limits<std::int64_t>::max() / multiplier &&
              value >= std::numeric_limits<std::int64_t>::min() / multiplier,
          flag, " = '", text, "': '", item, "' is out of range");
  return value * multiplier;
}

}  // namespace

std::int64_t parse_integer(std::string_view text, std::string_view flag) { return parse_item(text, text, flag); }

std::vector<std::int64_t> parse_integer_list(std::string_view text, std::string_view flag) {
  require(!trim(text).empty(), flag, " = '", text, "': give a comma-separated list of integers, e.g. 2048,4096,8192");
  std::vector<std::int64_t> values;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    require(!trim(item).empty(), flag, " = '", text, "': empty item in the list (two commas, or a comma at an end)");
    values.push_back(parse_item(item, text, flag));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return values;
}

std::int64_t parse_byte_size(std::string_view text, std::string_view flag) {
  std::string_view number = trim(text);
  if (number.size() >= 3 && number.substr(number.size() - 2) == "iB") {
    number.remove_suffix(2);
  } else if (number.size() >= 2 && number.back() == 'B') {
    number.remove_suffix(1);
  }
  const std::int64_t bytes = parse_integer(number, flag);
  require(bytes >= 1, flag, " = '", text, "': must be at least 1 byte");
  return bytes;
}

}  // namespace longnet::cli
