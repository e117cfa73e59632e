// Builds without the CUDA backend: the CUDA entry points of block-sparse attention say so.
#include "longnet/core/error.hpp"
#include "longnet/kernels/block_sparse_attention.hpp"

namespace longnet::kernels {

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams&) {
  throw Error("block-sparse attention on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
}

void block_sparse_attention_backward_cuda(const BlockSparseAttentionParams&) {
  throw Error("block-sparse attention on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
}

}  // namespace longnet::kernels
