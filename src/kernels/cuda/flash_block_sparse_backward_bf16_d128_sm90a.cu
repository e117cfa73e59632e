// Hopper (wgmma) backward kernel of block-sparse launches (kSparse = true) instantiated for
// bf16 with head-dim tile 128; built for sm_90a only.
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_backward_sm90.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_backward_sm90<__nv_bfloat16, 128, true>(const PatternLaunch&, std::int64_t, cudaStream_t);

}  // namespace longnet::kernels::cuda
