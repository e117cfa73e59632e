// The reports of `longnet bench attention`: a table on stdout, a JSON file and a PNG plot
// (time and throughput against N, dilated vs dense, log axes). Rates follow DESIGN 4:
// forward FLOPs = 4 * D * attended pairs, forward + backward = 3.5 x forward.
#pragma once

#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "attention_bench.hpp"

namespace longnet::cli {

struct LongestSequenceReport {
  std::string pass;  // "forward" or "forward_backward"
  LongestSequence result;
};

struct AttentionBenchReport {
  AttentionBenchSetup setup;  // the dilated one (dense differs only in its patterns)
  std::string impl;
  std::vector<AttentionBenchResult> results;
  std::vector<LongestSequenceReport> longest;
  double memory_limit = 0;  // bytes; 0: none
  std::string device_name;

  // GFLOP/s on the CPU, TFLOP/s on CUDA.
  double rate_unit() const;
  std::string rate_name() const;
};

void print_table(std::ostream& out, const AttentionBenchReport& report);
void write_json(const std::filesystem::path& path, const AttentionBenchReport& report);
void write_plot(const std::filesystem::path& path, const AttentionBenchReport& report);

}  // namespace longnet::cli
