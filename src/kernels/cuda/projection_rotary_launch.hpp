// The Hopper launcher of the fused q/k/v projection with its rotary map
// (projection_rotary_sm90a.cu; present when LONGNET_HAVE_SM90A is defined).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "longnet/kernels/projection_rotary.hpp"

namespace longnet::kernels::cuda {

// The head sizes the kernel's epilogue takes (its pairs' layout is for one head size).
bool projection_rotary_head_dim_supported_sm90(std::int64_t head_dim);
void launch_projection_rotary_sm90(const ProjectionRotaryParams& p, cudaStream_t stream);

}  // namespace longnet::kernels::cuda
