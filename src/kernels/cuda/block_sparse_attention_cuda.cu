// The CUDA block-sparse attention driver (being written: until then the CUDA entry
// points say so, and the CPU backend computes block-sparse attention).
#include "longnet/core/error.hpp"
#include "longnet/kernels/block_sparse_attention.hpp"

namespace longnet::kernels {

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams&) {
  throw Error("block-sparse attention on CUDA: not available yet in this build");
}

void block_sparse_attention_backward_cuda(const BlockSparseAttentionParams&) {
  throw Error("block-sparse attention on CUDA: not available yet in this build");
}

}  // namespace longnet::kernels
