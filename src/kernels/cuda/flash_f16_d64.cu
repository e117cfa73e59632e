// Tensor-core attention kernels instantiated for f16 with head-dim tile 64.
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_backward.cuh"
#include "kernels/cuda/flash_forward.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_forward<__half, 64>(const PatternLaunch&, cudaStream_t);
template void launch_flash_backward<__half, 64>(const PatternLaunch&, std::int64_t, cudaStream_t);
template void launch_flash_backward_dq<__half, 64>(const PatternLaunch&, cudaStream_t);

}  // namespace longnet::kernels::cuda
