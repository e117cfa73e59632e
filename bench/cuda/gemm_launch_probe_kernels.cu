// The probe's streaming kernel, apart from gemm_launch_probe.cpp: nvcc's front end fails on
// that file's headers (CLI11, longnet.hpp).
#include <cuda_runtime.h>

#include "bench/cuda/gemm_launch_probe_kernels.hpp"

namespace {

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

void launch_streaming(const void* in, void* out, std::int64_t float4s, int blocks, cudaStream_t stream) {
  stream_kernel<<<blocks, 256, 0, stream>>>(static_cast<const float4*>(in), static_cast<float4*>(out), float4s);
}
