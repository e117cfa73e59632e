// The exact SIMT attention kernels of block-sparse launches (kSparse = true) for every
// input dtype (see simt_attention.cuh): f32, f64, and bf16/f16 that the tensor-core
// kernels do not take (head dims not a multiple of 8 or above 128, unaligned rows).
#include "kernels/cuda/simt_launchers.cuh"

namespace longnet::kernels::cuda {

#define LONGNET_INSTANTIATE(Element, Compute)                                                    \
  template void launch_simt_forward<Element, Compute, true>(const PatternLaunch&, cudaStream_t); \
  template void launch_simt_backward<Element, Compute, true>(const PatternLaunch&, cudaStream_t);
LONGNET_INSTANTIATE(float, float)
LONGNET_INSTANTIATE(double, double)
LONGNET_INSTANTIATE(__nv_bfloat16, float)
LONGNET_INSTANTIATE(__half, float)
#undef LONGNET_INSTANTIATE

}  // namespace longnet::kernels::cuda
