// Tensor-core attention kernels of block-sparse launches (kSparse = true) instantiated for
// f16 with head-dim tile 128 (mma.sync; the dilated ones are in flash_f16_d128.cu).
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/flash_backward.cuh"
#include "kernels/cuda/flash_forward.cuh"

namespace longnet::kernels::cuda {

template void launch_flash_forward<__half, 128, true>(const PatternLaunch&, cudaStream_t);
template void launch_flash_backward<__half, 128, true>(const PatternLaunch&, std::int64_t, cudaStream_t);

}  // namespace longnet::kernels::cuda
