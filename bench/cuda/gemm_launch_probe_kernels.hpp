// The kernels of cuda_gemm_launch_probe (gemm_launch_probe.cpp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// bf16 values in [-1, 1) into `count` elements (default stream).
void launch_fill_bf16(void* bits, std::int64_t count);
// out = in + (1, 0, 0, 0) over `float4s` float4s: a stand-in for a memory-bound kernel.
void launch_streaming(const void* in, void* out, std::int64_t float4s, int blocks, cudaStream_t stream);
