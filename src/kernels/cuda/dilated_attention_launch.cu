// CUDA dilated attention: arrives with the CUDA issue; until then the entry points say so.
#include "longnet/core/error.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {

void dilated_attention_forward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA is not implemented yet (use device = cpu)");
}

void dilated_attention_backward_cuda(const DilatedAttentionParams&) {
  throw Error("dilated attention on CUDA is not implemented yet (use device = cpu)");
}

}  // namespace longnet::kernels
