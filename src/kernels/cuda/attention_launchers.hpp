// The kernel launchers the CUDA attention drivers call, one explicit instantiation per
// (element type, head-dim tile) in its own translation unit so builds parallelise.
// kSparse = true: the block-sparse instantiations (PatternLaunch::sparse; their own
// translation units, flash_block_sparse_*.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/flash_params.cuh"

namespace longnet::kernels::cuda {

// Tensor-core kernels: Element = __nv_bfloat16 or __half, kHeadDim = 64 or 128.
template <class Element, int kHeadDim, bool kSparse = false>
void launch_flash_forward(const PatternLaunch& p, cudaStream_t stream);
template <class Element, int kHeadDim, bool kSparse = false>
void launch_flash_backward(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream);
// The deterministic dQ pass alone (launch_flash_backward runs it when p.deterministic); the
// Hopper path runs it after the warp-specialised kernel's dK, dV.
template <class Element, int kHeadDim, bool kSparse = false>
void launch_flash_backward_dq(const PatternLaunch& p, cudaStream_t stream);

// Hopper one-warpgroup wgmma forward of block-sparse launches (sm_90a; present when
// LONGNET_HAVE_SM90A is defined).
template <class Element, int kHeadDim>
void launch_flash_block_sparse_forward_sm90(const PatternLaunch& p, cudaStream_t stream);
// Hopper warp-specialised persistent forward of dilated launches (sm_90a): a producer
// warpgroup and kConsumers warpgroups of 64 query rows (flash_forward_sm90_ws.cuh).
template <class Element, int kHeadDim, int kConsumers>
void launch_flash_forward_sm90_ws(const PatternLaunch& p, cudaStream_t stream);
// Hopper warp-specialised backward of dilated launches (sm_90a): a producer warpgroup that
// copies the tiles and adds dQ, two consumer warpgroups of 64 keys (flash_backward_sm90_ws.cuh).
// Head dim 64 only. Deterministic launches: dK, dV only (dQ from launch_flash_backward_dq).
template <class Element, int kHeadDim>
void launch_flash_backward_sm90_ws(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream);
// Hopper wgmma backward: dK, dV (and dQ by atomics unless deterministic).
template <class Element, int kHeadDim, bool kSparse = false>
void launch_flash_backward_sm90(const PatternLaunch& p, std::int64_t kv_tiles_per_segment, cudaStream_t stream);

// Exact SIMT kernels: Compute = float (f32, bf16, f16 inputs) or double (f64 inputs).
template <class Element, class Compute, bool kSparse = false>
void launch_simt_forward(const PatternLaunch& p, cudaStream_t stream);
template <class Element, class Compute, bool kSparse = false>
void launch_simt_backward(const PatternLaunch& p, cudaStream_t stream);

// Rows each CTA of the kernels covers (the host sizes grids with them).
inline constexpr int kFlashForwardRows = 128;
inline constexpr int kFlashForwardRowsSm90 = 64;  // the one-warpgroup kernel (block-sparse launches)
// Consumer warpgroups of the warp-specialised forward: three at head_dim 64 (the softmax
// costs as much as the products there, so more warpgroups take turns), two at 128.
inline constexpr int flash_forward_consumers_sm90(std::int64_t head_dim) { return head_dim <= 64 ? 3 : 2; }
inline constexpr int kFlashBackwardRows = 64;
inline constexpr int kSimtRows = 8;

}  // namespace longnet::kernels::cuda
