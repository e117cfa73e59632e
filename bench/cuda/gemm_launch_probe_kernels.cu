// The probe's two kernels (gemm_launch_probe.cpp): nvcc's front end fails on CLI11 there.
#include <cuda_runtime.h>

#include "bench/cuda/gemm_launch_probe_kernels.hpp"

namespace {

__global__ void fill_kernel(unsigned short* bits, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    // bf16 values in [-1, 1) by a hash of the index
    const unsigned h = static_cast<unsigned>(i) * 2654435761u;
    bits[i] = static_cast<unsigned short>(0x3c00u + (h >> 25)) | static_cast<unsigned short>((h & 1u) << 15);
  }
}

// A stand-in for the LayerNorm or conversion before a GEMM: streams n floats.
__global__ void stream_kernel(const float4* in, float4* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float4 v = in[i];
    v.x += 1.0f;
    out[i] = v;
  }
}

}  // namespace

void launch_fill_bf16(void* bits, std::int64_t count) {
  fill_kernel<<<1024, 256>>>(static_cast<unsigned short*>(bits), count);
}

void launch_streaming(const void* in, void* out, std::int64_t float4s, int blocks, cudaStream_t stream) {
  stream_kernel<<<blocks, 256, 0, stream>>>(static_cast<const float4*>(in), static_cast<float4*>(out), float4s);
}
