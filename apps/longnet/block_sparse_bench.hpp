// `longnet bench attention --impl block_sparse`: block-sparse attention against dense
// attention at each sequence length N. A row per (N, mask): the mask's density (its
// attended pairs over dense attention's, so time x density is what the sparse run would
// take if it were exactly as efficient per FLOP as dense), the median forward and forward
// + backward times, their throughput by DESIGN 4's rule (4 * D * attended pairs; backward
// 2.5x), dense time x density, and the ratio of the two — the criterion is a
// ratio <= 1.25 at 90% sparsity (density 0.1). The masks are random blocks at each of
// --densities (random_blocks: round(density * key blocks) per query block), or the
// --pattern / --mask the user gives. Table on stdout, JSON, and a PNG plot of time
// against density per N with the dense x density lines.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "longnet/attention/block_mask.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/dtype.hpp"

namespace longnet::cli {

struct BlockSparseBenchSetup {
  std::int64_t batch = 1, heads = 8, kv_heads = 8, head_dim = 64;
  DType dtype = DType::f32;
  Device device;
  bool causal = false;
  int warmup = 1, repeat = 3;
  bool backward = true;        // also time forward + backward
  bool deterministic = false;  // CUDA backward without atomics
};

struct BlockSparseBenchRow {
  std::int64_t seq_len = 0;
  std::string mask;          // what made it: "random density 0.1" or the --pattern description
  double block_density = 0;  // listed blocks over all (heads x query blocks x key blocks)
  double density = 0;        // attended pairs over dense attention's
  double forward_flops = 0;  // DESIGN 4
  double forward_ms = 0;     // medians; NaN when not measured
  double forward_backward_ms = 0;
  double dense_forward_ms = 0;  // dense attention at this N (NaN: not run)
  double dense_forward_backward_ms = 0;
  std::string failure;  // "out of memory: ..." when it did not fit
};

struct BlockSparseBenchReport {
  BlockSparseBenchSetup setup;
  std::string device_name;
  std::int64_t block_q = 64, block_k = 64;
  std::vector<BlockSparseBenchRow> rows;
};

// Dense attention (one segment covering N) at N: forward and forward + backward medians,
// and its attended pairs per head; NaN times when it does not fit.
struct DenseTiming {
  double forward_ms, forward_backward_ms, pairs_per_head;
  std::string failure;
};
DenseTiming time_dense_attention(const BlockSparseBenchSetup& setup, std::int64_t seq_len);

// Block-sparse attention with `mask` (its N is the sequence length) into a row; an
// out-of-memory Error is reported in `failure`, any other Error propagates.
BlockSparseBenchRow time_block_sparse_attention(const BlockSparseBenchSetup& setup, const BlockMask& mask);

// ms / (dense ms x density): 1 is as efficient per attended pair as dense attention.
double dense_ratio(double sparse_ms, double dense_ms, double density);

void print_block_sparse_table(std::ostream& out, const BlockSparseBenchReport& report);
void write_block_sparse_json(const std::filesystem::path& path, const BlockSparseBenchReport& report);
void write_block_sparse_plot(const std::filesystem::path& path, const BlockSparseBenchReport& report);

}  // namespace longnet::cli
