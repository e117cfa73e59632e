// Hopper (wgmma) forward kernel of block-sparse launches instantiated for
// f16 with head-dim tile 128; built for sm_90a only.
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_forward_sm90.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_block_sparse_forward_sm90<__half, 128>(const PatternLaunch&, cudaStream_t);

}  // namespace longnet::kernels::cuda
