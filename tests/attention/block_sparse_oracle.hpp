// The fp64 oracle of block-sparse attention, written straight from DESIGN 2.5: for each
// (batch, head) the dense N x N matrix of attended pairs (from the mask's lists, partial
// flags, element mask and causal — not from BlockMask::allows), then a masked softmax per
// row. Slow (N^2 per head) and meant to be read. Also the same computation naively in
// float32 and in half precision (P, dS and the outputs rounded), the yardsticks of
// DESIGN 5's rules; and seeded random masks and inputs for the tests.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "longnet/attention/block_mask.hpp"
#include "longnet/core/tensor.hpp"

namespace longnet::testing {

// allowed[q * N + k] for query head `head`, from the definition.
std::vector<bool> block_sparse_allowed(const BlockMask& mask, std::int64_t head);

struct BlockSparseReference {
  Tensor out, lse;    // (B, N, H, D), (B, H, N), f64
  Tensor dq, dk, dv;  // f64, shapes of q, k, v (when dout was given)
};

// precision: f64 (the oracle), f32 (naive float) or bf16/f16 (naive half precision).
BlockSparseReference block_sparse_reference(const BlockMask& mask, double scale, const Tensor& q, const Tensor& k,
                                            const Tensor& v, const Tensor& dout, DType precision = DType::f64);

struct BlockSparseProblem {
  std::int64_t batch = 1, seq_len = 1, heads = 1, kv_heads = 1, head_dim = 8;
  double scale = 1.0;
};

struct BlockSparseTensors {
  Tensor q, k, v, dout;
};

BlockSparseTensors random_block_sparse_tensors(const BlockSparseProblem& p, std::uint64_t seed,
                                               DType dtype = DType::f32, Device device = Device::cpu());

// A random mask: random lists (each pair listed with probability `density`), random
// partial flags, optionally causal, a random band, per-head or shared.
BlockMask random_block_mask(std::mt19937_64& rng, std::int64_t seq_len, std::int64_t heads, std::int64_t block_q,
                            std::int64_t block_k);

std::string describe(const BlockSparseProblem& p, const BlockMask& mask);

}  // namespace longnet::testing
