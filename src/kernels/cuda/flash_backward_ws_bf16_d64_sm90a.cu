// Hopper warp-specialised backward kernel of dilated launches instantiated for bf16 with
// head-dim tile 64; built for sm_90a only.
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_backward_sm90_ws.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_backward_sm90_ws<__nv_bfloat16, 64>(const PatternLaunch&, std::int64_t, cudaStream_t);

}  // namespace longnet::kernels::cuda
