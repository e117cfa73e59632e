// Until the CUDA dilated-attention kernels land (next issue), the CUDA entry points say so.
#include "longnet/core/error.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {

void dilated_attention_forward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA is not implemented yet in this build (use device = cpu)");
}

void dilated_attention_backward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA is not implemented yet in this build (use device = cpu)");
}

}  // namespace longnet::kernels
