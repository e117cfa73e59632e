// The exact SIMT attention kernels for every input dtype (see simt_attention.cuh).
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/simt_attention.cuh"

namespace longnet::kernels::cuda {

template <class Element, class Compute>
void launch_simt_forward(const PatternLaunch& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.segments * p.tiles_per_segment), static_cast<unsigned>(p.head_count),
                  static_cast<unsigned>(p.batch));
  simt_forward_kernel<Element, Compute><<<grid, kSimtWarps * 32, 0, stream>>>(p);
}

template <class Element, class Compute>
void launch_simt_backward(const PatternLaunch& p, cudaStream_t stream) {
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

#define LONGNET_INSTANTIATE(Element, Compute)                                              \
  template void launch_simt_forward<Element, Compute>(const PatternLaunch&, cudaStream_t); \
  template void launch_simt_backward<Element, Compute>(const PatternLaunch&, cudaStream_t);
LONGNET_INSTANTIATE(float, float)
LONGNET_INSTANTIATE(double, double)
LONGNET_INSTANTIATE(__nv_bfloat16, float)
LONGNET_INSTANTIATE(__half, float)
#undef LONGNET_INSTANTIATE

}  // namespace longnet::kernels::cuda
