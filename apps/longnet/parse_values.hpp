// Values that command-line flags carry as text: comma-separated integer lists
// ("2048,4096,8192", with binary K/M/G suffixes: "8K,1M") and byte sizes ("80G", "512M").
// Errors are longnet::Error naming the flag, the text and the rule, so the program prints
// them as one line.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace longnet::cli {

// One integer with an optional suffix K (x1024), M (x1024^2) or G (x1024^3), either case.
std::int64_t parse_integer(std::string_view text, std::string_view flag);

// A non-empty comma-separated list of parse_integer values (no empty items).
std::vector<std::int64_t> parse_integer_list(std::string_view text, std::string_view flag);

// A byte count: parse_integer, optionally followed by "B" or "iB" ("80G", "80GiB", "4096").
std::int64_t parse_byte_size(std::string_view text, std::string_view flag);

}  // namespace longnet::cli
