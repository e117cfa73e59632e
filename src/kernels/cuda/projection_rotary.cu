// The fused q/k/v projection with its rotary map (projection_rotary.hpp): what it takes,
// and the dispatch to the Hopper kernel (projection_rotary_sm90a.cu).
#include <cstdint>
#include <cstdlib>

#include "kernels/cuda/attention_driver.cuh"
#include "kernels/cuda/model_kernels_common.cuh"
#include "kernels/cuda/projection_rotary_launch.hpp"
#include "longnet/kernels/projection_rotary.hpp"

namespace longnet::kernels {
#ifdef LONGNET_HAVE_SM90A  // without the kernel nothing asks (and an unused function fails -Werror)
namespace {

// The first rule p breaks, or null.
const char* unsupported(const ProjectionRotaryParams& p) {
  const RotaryParams& m = p.query_map;
  if (!cuda::use_sm90_kernels()) return "needs a Hopper GPU (compute capability 9.0) and the sm_90a kernels built";
  if (p.dtype != DType::bf16) return "takes bf16 tensors";
  if (p.rows < 0 || p.in_features <= 0 || p.out_features <= 0) return "needs rows >= 0 and positive feature counts";
  if (p.out_features % 8 != 0) return "needs out_features a multiple of 8";
  if (p.in_features % 8 != 0 || p.x_row_stride % 8 != 0 || p.y_row_stride % 8 != 0)
    return "needs in_features and both row strides multiples of 8 (16-byte rows)";
  if (p.x_row_stride < p.in_features || p.y_row_stride < p.out_features) return "needs row strides >= the rows' widths";
  if (!cuda_model::aligned16(p.x, p.weight, p.y) || (p.bias != nullptr && !cuda_model::aligned16(p.bias)))
    return "needs x, weight, bias and y 16-byte aligned";
  const std::int64_t rotated = p.query_columns + p.key_columns;
  if (p.query_columns < 0 || p.key_columns < 0 || rotated > p.out_features)
    return "needs query and key columns within out_features";
  if (rotated > 0) {
    if (!cuda::projection_rotary_head_dim_supported_sm90(m.head_dim)) return "takes heads of 64 columns";
    if (p.query_columns % m.head_dim != 0 || p.key_columns % m.head_dim != 0)
      return "needs whole heads of query and key columns";
    if (m.seq_len <= 0 || p.rows % m.seq_len != 0) return "needs rows a whole number of sequences of seq_len";
    if (m.downscale || m.transpose) return "takes a query map (downscale and transpose false)";
  }
  return nullptr;
}

}  // namespace
#endif

bool projection_rotary_supported(const ProjectionRotaryParams& p) {
#ifdef LONGNET_HAVE_SM90A
  return unsupported(p) == nullptr;
#else
  (void)p;
  return false;
#endif
}

void projection_rotary_cuda(const ProjectionRotaryParams& p) {
#ifdef LONGNET_HAVE_SM90A
  const char* rule = unsupported(p);
  require(rule == nullptr, "projection_rotary_cuda: ", rule == nullptr ? "" : rule);
  cuda::launch_projection_rotary_sm90(p, cuda_model::current_cuda_stream());
#else
  (void)p;
  throw Error("projection_rotary_cuda: this build has no sm_90a kernels");
#endif
}

}  // namespace longnet::kernels
