// The CUDA block-sparse attention driver (DESIGN 2.5, 3.1): the dilated-attention kernels'
// kSparse instantiations, one launch over every (head, query block) for the forward and
// one over every (kv head, key block) (plus one over the query blocks for a deterministic
// dQ) for the backward. The block mask's CSR lists are already on the device (the
// attention layer uploads them once per mask and device, BlockSparseDeviceLayout).
//
// Forward: every query row belongs to exactly one CTA (tiles_per_block CTAs per query
// block), so out and lse are written directly, with no fill and no merge: a row whose
// listed blocks hold no allowed key gets out = 0 and lse = -inf from the epilogue.
// Backward: delta = rowsum(dO * O); dK, dV written straight into the caller's tensors
// when each key row has one contribution (tensor cores, Hk = H: the CTA owning a key row
// sees every query that reaches it), else into fp32 accumulators the owning CTA adds to
// head by head; dQ by fp32 atomics, or without atomics by a second kernel that owns the
// query rows (deterministic mode; the SIMT kernels always are).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/attention_driver.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/block_sparse_attention.hpp"

namespace longnet::kernels {
namespace {

using cuda::PatternLaunch;

constexpr std::int64_t kMaxGridX = (std::int64_t{1} << 31) - 1;
constexpr std::int64_t kMaxGridYZ = 65535;

void validate(const BlockSparseAttentionParams& p) {
  const BlockSparseLayout& l = p.layout;
  require(l.predicate == nullptr,
          "block mask element predicate: runs on the CPU only (on CUDA use causal or a band, ElementMask::band)");
  require(l.row_offsets && l.column_indices && l.row_partial && l.column_offsets && l.row_indices && l.column_partial,
          "block-sparse attention on CUDA: the block mask's lists must be on the device (BlockSparseDeviceLayout)");
  require(l.mask_heads == 1 || l.mask_heads == p.heads, "block mask heads = ", l.mask_heads,
          ": must be 1 (shared) or heads = ", p.heads);
  require(l.block_q >= 1 && l.block_k >= 1, "block sizes ", l.block_q, " x ", l.block_k, ": must be >= 1");
  require(l.query_blocks == (p.seq_len + l.block_q - 1) / l.block_q &&
              l.key_blocks == (p.seq_len + l.block_k - 1) / l.block_k,
          "block mask of ", l.query_blocks, " x ", l.key_blocks, " blocks does not cover seq_len = ", p.seq_len,
          " in blocks of ", l.block_q, " x ", l.block_k);
  require(p.batch <= kMaxGridYZ, "batch = ", p.batch,
          ": block-sparse attention on CUDA supports batch <= ", kMaxGridYZ);
  require(p.heads <= kMaxGridYZ, "heads = ", p.heads,
          ": block-sparse attention on CUDA supports heads <= ", kMaxGridYZ);
}

// The launch parameters shared by every kernel of a call (output_scale 1: one softmax).
PatternLaunch sparse_launch(const BlockSparseAttentionParams& p) {
  PatternLaunch l;
  l.batch = p.batch;
  l.seq_len = p.seq_len;
  l.heads = static_cast<int>(p.heads);
  l.kv_heads = static_cast<int>(p.kv_heads);
  l.head_dim = static_cast<int>(p.head_dim);
  l.causal = p.layout.causal;
  l.scale = static_cast<float>(p.scale);
  l.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  l.scale_exact = p.scale;
  l.output_scale = 1.0f;
  l.output_scale_exact = 1.0;
  l.head_begin = 0;
  l.head_count = static_cast<int>(p.heads);
  l.q = cuda::device_rows(p.q);
  l.k = cuda::device_rows(p.k);
  l.v = cuda::device_rows(p.v);
  l.out = cuda::device_rows(p.out);
  l.dout = cuda::device_rows(p.dout);
  l.lse = p.lse;
  l.deterministic = p.deterministic;
  cuda::SparseLists& s = l.sparse;
  const BlockSparseLayout& m = p.layout;
  s.row_offsets = m.row_offsets;
  s.column_indices = m.column_indices;
  s.row_partial = m.row_partial;
  s.column_offsets = m.column_offsets;
  s.row_indices = m.row_indices;
  s.column_partial = m.column_partial;
  s.block_q = m.block_q;
  s.block_k = m.block_k;
  s.query_blocks = m.query_blocks;
  s.key_blocks = m.key_blocks;
  s.mask_heads = static_cast<int>(m.mask_heads);
  s.min_distance = m.min_distance;
  s.max_distance = m.max_distance;
  return l;
}

template <class Element>
void forward(const BlockSparseAttentionParams& p) {
  validate(p);
  const cudaStream_t stream = cuda::current_cuda_stream();
  const bool tensor_cores = cuda::tensor_core_operands(p.dtype, p.head_dim, {p.q, p.k, p.v, p.out});
  require(tensor_cores || p.head_dim <= cuda::kSimtMaxHeadDim, "head_dim = ", p.head_dim,
          ": block-sparse attention on CUDA supports head_dim <= ", cuda::kSimtMaxHeadDim);
  PatternLaunch l = sparse_launch(p);
  if (tensor_cores) {
    // CTAs: (head, query block, tile of the block) — a block of more rows than a CTA
    // holds takes several CTAs.
    const int rows = cuda::sparse_forward_rows_per_cta();
    l.sparse.tiles_per_block = (p.layout.block_q + rows - 1) / rows;
    l.total_ctas = p.heads * p.layout.query_blocks * l.sparse.tiles_per_block;
    require(l.total_ctas <= kMaxGridX, "seq_len = ", p.seq_len, " with ", p.heads,
            " heads: too many thread blocks for one launch");
  }
  cuda::launch_forward<Element, true>(l, tensor_cores, stream);
  LONGNET_CHECK(cudaGetLastError());
}

template <class Element>
void backward(const BlockSparseAttentionParams& p) {
  using Compute = std::conditional_t<std::is_same_v<Element, double>, double, float>;
  validate(p);
  const cudaStream_t stream = cuda::current_cuda_stream();
  const Device device = cuda::current_device();
  const bool tensor_cores = cuda::tensor_core_operands(p.dtype, p.head_dim, {p.q, p.k, p.v, p.out, p.dout});
  require(tensor_cores || p.head_dim <= cuda::kSimtMaxHeadDim, "head_dim = ", p.head_dim,
          ": block-sparse attention on CUDA supports head_dim <= ", cuda::kSimtMaxHeadDim);
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const DType compute = dtype_of<Compute>::value;

  const Tensor delta = cuda::output_deltas<Element, Compute>(p.out, p.dout, B, N, H, D, stream);
  Tensor dq = Tensor::zeros({B, N, H, D}, compute, device);
  // The CTA that owns a key row walks every query of every head of its kv group, so with
  // one head per kv head its dK, dV are final: written in the output dtype, no accumulator.
  const bool direct_kv = tensor_cores && H == Hk;
  Tensor dk, dv;
  if (!direct_kv) {
    dk = Tensor::zeros({B, N, Hk, D}, compute, device);
    dv = Tensor::zeros({B, N, Hk, D}, compute, device);
  }
  PatternLaunch l = sparse_launch(p);
  l.delta = delta.data();
  const Tensor row_terms = cuda::backward_row_terms<Element, true>(l, tensor_cores, stream);
  l.row_terms = row_terms.data();
  l.dq_accumulator = dq.data();
  l.direct_kv = direct_kv;
  l.dk = cuda::device_rows(p.dk);
  l.dv = cuda::device_rows(p.dv);
  if (!direct_kv) {
    l.dk_accumulator = dk.data();
    l.dv_accumulator = dv.data();
  }
  if (tensor_cores) {
    const std::int64_t kv_ctas =
        p.layout.key_blocks * ((p.layout.block_k + cuda::kFlashBackwardRows - 1) / cuda::kFlashBackwardRows);
    const std::int64_t dq_ctas =
        p.layout.query_blocks * ((p.layout.block_q + cuda::kFlashBackwardRows - 1) / cuda::kFlashBackwardRows);
    require(kv_ctas <= kMaxGridX && dq_ctas <= kMaxGridX, "seq_len = ", N, ": too many thread blocks for one launch");
  }
  // The launchers size their grids from the key and query blocks (kv_tiles is unused).
  cuda::launch_backward<Element, true>(l, 0, tensor_cores, stream);
  LONGNET_CHECK(cudaGetLastError());

  auto convert = [&](const Tensor& accumulator, const RowTensor& target, std::int64_t heads) {
    cuda::convert_accumulator<Element, Compute>(accumulator, target, B, N, heads, D, stream);
  };
  convert(dq, p.dq, H);
  if (!direct_kv) {
    convert(dk, p.dk, Hk);
    convert(dv, p.dv, Hk);
  }
}

template <class Element>
struct RunForward {
  static void run(const BlockSparseAttentionParams& p) { forward<Element>(p); }
};
template <class Element>
struct RunBackward {
  static void run(const BlockSparseAttentionParams& p) { backward<Element>(p); }
};

}  // namespace

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams& params) {
  cuda::dispatch_float<RunForward>(params.dtype, params, "block-sparse attention");
}

void block_sparse_attention_backward_cuda(const BlockSparseAttentionParams& params) {
  cuda::dispatch_float<RunBackward>(params.dtype, params, "block-sparse attention");
}

}  // namespace longnet::kernels
