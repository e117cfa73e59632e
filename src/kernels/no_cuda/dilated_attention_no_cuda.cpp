// Builds without the CUDA backend: the CUDA entry points say so.
#include "longnet/core/error.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {

void dilated_attention_forward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
}

void dilated_attention_backward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
}

void rotate_attention_gradients_cuda(const DilatedAttentionParams&, bool, bool) {
  throw Error("rotary on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
}

}  // namespace longnet::kernels
