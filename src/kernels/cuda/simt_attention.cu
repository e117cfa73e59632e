// The exact SIMT attention kernels of dilated launches for every input dtype (see
// simt_attention.cuh; the block-sparse ones are in simt_block_sparse_attention.cu).
#include "kernels/cuda/simt_launchers.cuh"

namespace longnet::kernels::cuda {

#define LONGNET_INSTANTIATE(Element, Compute)                                                     \
  template void launch_simt_forward<Element, Compute, false>(const PatternLaunch&, cudaStream_t); \
  template void launch_simt_backward<Element, Compute, false>(const PatternLaunch&, cudaStream_t);
LONGNET_INSTANTIATE(float, float)
LONGNET_INSTANTIATE(double, double)
LONGNET_INSTANTIATE(__nv_bfloat16, float)
LONGNET_INSTANTIATE(__half, float)
#undef LONGNET_INSTANTIATE

}  // namespace longnet::kernels::cuda
