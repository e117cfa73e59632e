// The launchers of the SIMT attention kernels (declared in attention_launchers.hpp), for
// the translation units that instantiate them: simt_attention.cu (dilated launches: a
// grid over the virtual sequences) and simt_block_sparse_attention.cu (block-sparse
// launches: a grid over the rows of the sequence). Kept out of simt_attention.cuh so the
// drivers, which include that header for its helpers, do not instantiate the kernels again.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/simt_attention.cuh"

namespace longnet::kernels::cuda {

template <class Element, class Compute, bool kSparse>
void launch_simt_forward(const PatternLaunch& p, cudaStream_t stream) {
  const std::int64_t blocks = kSparse ? (p.seq_len + kSimtWarps - 1) / kSimtWarps : p.segments * p.tiles_per_segment;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.head_count), static_cast<unsigned>(p.batch));
  simt_forward_kernel<Element, Compute, kSparse><<<grid, kSimtWarps * 32, 0, stream>>>(p);
}

template <class Element, class Compute, bool kSparse>
void launch_simt_backward(const PatternLaunch& p, cudaStream_t stream) {
  if constexpr (kSparse) {
    const auto row_blocks = static_cast<unsigned>((p.seq_len + kSimtWarps - 1) / kSimtWarps);
    const dim3 dq_grid(row_blocks, static_cast<unsigned>(p.head_count), static_cast<unsigned>(p.batch));
    simt_backward_dq_kernel<Element, Compute, true><<<dq_grid, kSimtWarps * 32, 0, stream>>>(p);
    const dim3 kv_grid(row_blocks, static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(p.batch));
    simt_backward_dkdv_kernel<Element, Compute, true><<<kv_grid, kSimtWarps * 32, 0, stream>>>(p, 0);
    return;
  }
  const dim3 dq_grid(static_cast<unsigned>(p.segments * p.tiles_per_segment), static_cast<unsigned>(p.head_count),
                     static_cast<unsigned>(p.batch));
  simt_backward_dq_kernel<Element, Compute><<<dq_grid, kSimtWarps * 32, 0, stream>>>(p);
  // Key side: tiles cover every offset of the pattern (offset-major), then key rows.
  PatternLaunch keys = p;
  const std::int64_t tiles_per_offset = p.tiles_per_segment;
  keys.tiles_per_segment = tiles_per_offset * p.pattern.dilation_rate;
  const dim3 kv_grid(static_cast<unsigned>(p.segments * keys.tiles_per_segment), static_cast<unsigned>(p.kv_heads),
                     static_cast<unsigned>(p.batch));
  simt_backward_dkdv_kernel<Element, Compute><<<kv_grid, kSimtWarps * 32, 0, stream>>>(keys, tiles_per_offset);
}

}  // namespace longnet::kernels::cuda
