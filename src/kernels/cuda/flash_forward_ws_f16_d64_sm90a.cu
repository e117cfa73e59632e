// Hopper warp-specialised forward kernel (dilated launches) instantiated for f16 with
// head-dim tile 64 and 3 consumer warpgroups; built for sm_90a only.
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_forward_sm90_ws.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_forward_sm90_ws<__half, 64, 3>(const PatternLaunch&, cudaStream_t);

}  // namespace longnet::kernels::cuda
