// The CUDA dilated-attention driver (DESIGN 3.1): patterns run one after another on the
// current stream, each as one launch over all its virtual sequences, so merges across
// patterns happen in a fixed order without atomics.
//
// Paths: the tensor-core kernels (bf16/f16, head_dim a multiple of 8 up to 128, 16-byte
// aligned rows) and the exact SIMT kernels (f32, f64, anything else up to head_dim 256).
// Forward: rows reached by one pattern only (head-groups mode, or a single pattern) are
// written directly; in LongNet mode with several patterns, each pattern's epilogue merges
// its rows into fp32 accumulators by log-sum-exp and a final pass converts them, or, when
// the first pattern has dilation 1 (it reaches every row), that pattern runs last and its
// epilogue writes the merged rows to the output (no fill before, no conversion after).
// Backward: delta = rowsum(dO * O), then per pattern dK/dV (and dQ) into fp32
// accumulators, then conversion into the caller's tensors.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>

#include "kernels/cuda/attention_driver.cuh"
#include "kernels/cuda/gradient_conversion.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"

namespace longnet::kernels {
namespace {

using cuda::current_cuda_stream;
using cuda::current_device;
using cuda::device_rows;
using cuda::PatternLaunch;

bool use_tensor_cores(const DilatedAttentionParams& p, bool backward) {
  return backward ? cuda::tensor_core_operands(p.dtype, p.head_dim, {p.q, p.k, p.v, p.out, p.dout})
                  : cuda::tensor_core_operands(p.dtype, p.head_dim, {p.q, p.k, p.v, p.out});
}

PatternLaunch pattern_launch(const DilatedAttentionParams& p, std::size_t i, int rows_per_cta) {
  PatternLaunch l;
  l.batch = p.batch;
  l.seq_len = p.seq_len;
  l.heads = static_cast<int>(p.heads);
  l.kv_heads = static_cast<int>(p.kv_heads);
  l.head_dim = static_cast<int>(p.head_dim);
  l.pattern = p.patterns[i];
  l.pattern_index = static_cast<int>(i);
  l.num_patterns = static_cast<int>(p.patterns.size());
  l.mode = p.mode;
  l.causal = p.causal;
  l.scale = static_cast<float>(p.scale);
  l.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  l.output_scale_exact = p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(p.patterns.size()) : 1.0;
  l.output_scale = static_cast<float>(l.output_scale_exact);
  l.scale_exact = p.scale;
  const cuda::HeadRange heads = cuda::pattern_heads(p.mode, static_cast<std::int64_t>(i),
                                                     static_cast<std::int64_t>(p.patterns.size()), p.heads);
  l.head_begin = heads.begin;
  l.head_count = heads.count;
  l.segments = segment_count(p.seq_len, p.patterns[i].segment_length);
  l.tiles_per_segment = ceil_div(longest_virtual_length(p.seq_len, p.patterns[i]), rows_per_cta);
  l.q = device_rows(p.q);
  l.k = device_rows(p.k);
  l.v = device_rows(p.v);
  l.out = device_rows(p.out);
  l.dout = device_rows(p.dout);
  l.lse = p.lse;
  l.deterministic = p.deterministic;
  return l;
}

// Whether every row is reached by its head's pattern (all rates 1); else rows that no
// pattern reaches must be zero-filled in outputs the kernels write directly.
bool every_row_reached(const DilatedAttentionParams& p) {
  for (const auto& pattern : p.patterns) {
    if (pattern.dilation_rate != 1) return false;
  }
  return true;
}

// Whether the work items of the warp-specialised Hopper forward (rows_per_item query rows
// each) can write the zeros of every output row no pattern reaches (PatternLaunch::
// zero_unreached): not when a head's virtual sequence in a pattern's last segment is empty
// (that segment is no longer than the head's offset, so no item covers it), nor when an
// item's rows would span 2^31 positions.
bool items_cover_unreached_rows(const DilatedAttentionParams& p, int rows_per_item) {
  const auto G = static_cast<std::int64_t>(p.patterns.size());
  for (std::int64_t i = 0; i < G; ++i) {
    const DilationPattern pattern = p.patterns[static_cast<std::size_t>(i)];
    if (pattern.dilation_rate == 1) continue;
    if (pattern.dilation_rate >= (std::int64_t{1} << 31) / rows_per_item) return false;
    const std::int64_t last_segment = segment_count(p.seq_len, pattern.segment_length) - 1;
    for (std::int64_t h = 0; h < p.heads; ++h) {
      const std::int64_t offset = pattern_offset(p.mode, i, G, pattern.dilation_rate, h, p.heads);
      if (offset >= 0 && virtual_sequence(p.seq_len, pattern, offset, last_segment).length == 0) return false;
    }
  }
  return true;
}

void zero_rows(const RowTensor& t, const DilatedAttentionParams& p, std::int64_t heads, Device device) {
  Tensor::from_blob(t.data, {p.batch, p.seq_len, heads, p.head_dim}, p.dtype, device,
                    {t.batch_stride, t.seq_stride, t.head_stride, 1})
      .zero();
}

template <class Element>
void forward(const DilatedAttentionParams& p) {
  using Compute = std::conditional_t<std::is_same_v<Element, double>, double, float>;
  const cudaStream_t stream = current_cuda_stream();
  const Device device = current_device();
  const bool tensor_cores = use_tensor_cores(p, false);
  require(tensor_cores || p.head_dim <= cuda::kSimtMaxHeadDim, "head_dim = ", p.head_dim,
          ": dilated attention on CUDA supports head_dim <= ", cuda::kSimtMaxHeadDim);
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, D = p.head_dim;
  const bool merge = p.mode == DilatedMode::longnet && p.patterns.size() > 1;

  // LongNet mode whose first pattern has dilation 1: that pattern reaches every row of
  // every head, so it runs last and writes the output (PatternLaunch::merge_last): the
  // accumulators are neither filled first nor converted after (only the lse is filled).
  const bool dilation_one_last = merge && tensor_cores && p.patterns.front().dilation_rate == 1;
  Tensor accumulator;
  // Rows no pattern reaches are zero: written by the warp-specialised Hopper kernel's
  // work items where they cover them all, else filled here first.
  const int rows = tensor_cores ? cuda::forward_rows_per_cta(p.head_dim) : cuda::kSimtRows;
  const bool unreached_rows = !merge && !every_row_reached(p);
  const bool kernel_zeroes =
      unreached_rows && tensor_cores && cuda::use_sm90_kernels() && items_cover_unreached_rows(p, rows);
  // lse: the tensor-core epilogues write it for every row a pattern reaches, and the items
  // that zero unreached rows write their -inf; otherwise (and where merging launches read
  // it) it is filled with -inf first. A fill is a launch of its own, ~5 % of a short (8K)
  // forward.
  const bool lse_written = !merge && tensor_cores && (!unreached_rows || kernel_zeroes);
  if (!lse_written) cuda::fill<Compute>(p.lse, B * H * N, static_cast<Compute>(-INFINITY), stream);
  if (merge) {
    accumulator = dilation_one_last ? Tensor::empty({B, N, H, D}, dtype_of<Compute>::value, device)
                                    : Tensor::zeros({B, N, H, D}, dtype_of<Compute>::value, device);
  } else if (unreached_rows && !kernel_zeroes) {
    zero_rows(p.out, p, H, device);
  }
  // Causal launches of the warp-specialised Hopper kernel take their items from a counter
  // (PatternLaunch::item_counter), one per launch, zeroed here at once.
  const bool counted = tensor_cores && p.causal && cuda::use_sm90_kernels();
  const Tensor item_counters =
      counted ? Tensor::zeros({static_cast<std::int64_t>(p.patterns.size())}, DType::i64, device) : Tensor();
  std::size_t launches = 0;
  const auto launch_tensor_cores = [&](PatternLaunch& l) {
    if (counted) l.item_counter = static_cast<unsigned long long*>(item_counters.data()) + launches++;
    require(l.total_ctas < (std::int64_t{1} << 31), "seq_len = ", N, ": too many thread blocks for one launch");
    cuda::launch_forward<Element>(l, true, stream);
    LONGNET_CHECK(cudaGetLastError());
  };
  if (tensor_cores && merge) {
    // LongNet mode with several patterns: one launch per pattern, merging in turn (the
    // dilation-1 pattern last where it is the first).
    const std::size_t G = p.patterns.size();
    for (std::size_t k = 0; k < G; ++k) {
      const std::size_t i = dilation_one_last ? (k + 1) % G : k;
      PatternLaunch l = pattern_launch(p, i, rows);
      l.merge = true;
      l.merge_last = dilation_one_last && k + 1 == G;
      // A merging launch may start while the previous pattern's finishes (its CTAs wait
      // for it before merging): nothing is queued between them.
      l.overlap_previous = k > 0;
      l.out_accumulator = accumulator.data();
      cuda::append_slot(l, pattern_launch(p, i, rows));
      launch_tensor_cores(l);
    }
  } else if (tensor_cores) {
    // Rows reached by one pattern only: every pattern in one launch.
    std::size_t first = 0;
    while (first < p.patterns.size()) {
      const std::size_t last = std::min(p.patterns.size(), first + cuda::kMaxSlots);
      PatternLaunch l = pattern_launch(p, first, rows);
      l.zero_unreached = kernel_zeroes;
      for (std::size_t i = first; i < last; ++i) cuda::append_slot(l, pattern_launch(p, i, rows));
      launch_tensor_cores(l);
      first = last;
    }
  } else {
    for (std::size_t i = 0; i < p.patterns.size(); ++i) {
      PatternLaunch l = pattern_launch(p, i, cuda::kSimtRows);
      l.merge = merge;
      if (merge) l.out_accumulator = accumulator.data();
      cuda::launch_forward<Element>(l, false, stream);
      LONGNET_CHECK(cudaGetLastError());
    }
  }
  if (merge && !dilation_one_last) {
    cuda::convert_accumulator<Element, Compute>(accumulator, p.out, B, N, H, D, stream);
  }
}

template <class Element>
void backward(const DilatedAttentionParams& p) {
  using Compute = std::conditional_t<std::is_same_v<Element, double>, double, float>;
  const cudaStream_t stream = current_cuda_stream();
  const Device device = current_device();
  const bool tensor_cores = use_tensor_cores(p, true);
  require(tensor_cores || p.head_dim <= cuda::kSimtMaxHeadDim, "head_dim = ", p.head_dim,
          ": dilated attention on CUDA supports head_dim <= ", cuda::kSimtMaxHeadDim);
  const std::int64_t B = p.batch, N = p.seq_len, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const DType compute = dtype_of<Compute>::value;

  const Tensor delta = p.output_deltas ? Tensor::from_blob(const_cast<void*>(p.output_deltas), {B, H, N},
                                                           dtype_of<Compute>::value, device)
                                       : cuda::output_deltas<Element, Compute>(p.out, p.dout, B, N, H, D, stream);
  Tensor dq = p.dq_accumulator ? Tensor::from_blob(p.dq_accumulator, {B, N, H, D}, compute, device)
                               : Tensor::zeros({B, N, H, D}, compute, device);
  // Each key row has one contribution when every kv head serves one query head that uses
  // one pattern: the kernels then write dK, dV in the output dtype (no fp32 accumulators,
  // which is what lets the longest sequences fit).
  const bool direct_kv = tensor_cores && H == Hk && (p.mode == DilatedMode::head_groups || p.patterns.size() == 1);
  // LongNet mode whose first pattern has dilation 1 (it reaches every key row of every
  // head) and one query head per kv head: the tensor-core kernels of that launch store
  // into the dK, dV accumulators (PatternLaunch::store_kv), which then need no zero fill:
  // 8 bytes an element of dK and dV neither written by a fill nor read back by the first
  // pattern. (With grouped heads a kv row gets several contributions in that launch.)
  const bool store_kv = tensor_cores && !direct_kv && H == Hk && p.mode == DilatedMode::longnet &&
                        p.patterns.front().dilation_rate == 1;
  Tensor dk, dv;
  if (direct_kv) {
    if (!every_row_reached(p)) {  // key rows no pattern reaches get zero gradients
      zero_rows(p.dk, p, Hk, device);
      zero_rows(p.dv, p, Hk, device);
    }
  } else if (store_kv) {
    dk = Tensor::empty({B, N, Hk, D}, compute, device);
    dv = Tensor::empty({B, N, Hk, D}, compute, device);
  } else {
    dk = Tensor::zeros({B, N, Hk, D}, compute, device);
    dv = Tensor::zeros({B, N, Hk, D}, compute, device);
  }

  const int rows = tensor_cores ? cuda::kFlashBackwardRows : cuda::kSimtRows;
  // The Hopper kernels' row terms, shared by every pattern's launch.
  PatternLaunch first = pattern_launch(p, 0, rows);
  first.delta = delta.data();
  const Tensor row_terms = cuda::backward_row_terms<Element>(first, tensor_cores, stream);
  for (std::size_t i = 0; i < p.patterns.size(); ++i) {
    PatternLaunch l = pattern_launch(p, i, rows);
    l.delta = delta.data();
    l.row_terms = row_terms.data();
    l.dq_accumulator = dq.data();
    l.direct_kv = direct_kv;
    l.store_kv = store_kv && i == 0;
    // The next pattern's launch may start while this one finishes (its CTAs wait for it
    // before adding to dK, dV; dQ's atomics need no order). Not in deterministic mode: there
    // dQ's additions keep one order across the patterns' launches, and turn counters or dQ
    // passes are queued between them.
    l.overlap_previous = i > 0 && !p.deterministic;
    l.dk = device_rows(p.dk);
    l.dv = device_rows(p.dv);
    if (!direct_kv) {
      l.dk_accumulator = dk.data();
      l.dv_accumulator = dv.data();
    }
    cuda::launch_backward<Element>(l, l.tiles_per_segment, tensor_cores, stream);
    LONGNET_CHECK(cudaGetLastError());
  }
  // With the gradients' column sums wanted (a fused q/k/v projection's bias gradient),
  // one pass converts, rotates and sums where it can.
  if constexpr (sizeof(Element) == 2) {
    if (p.gradient_column_sums && cuda::gradients_summed_in_conversion(p, !direct_kv)) {
      cuda::convert_gradients_summing<Element>(p, dq.data<float>(), dk.data<float>(), dv.data<float>(), stream);
      return;
    }
  }
  // dq and dk through the positional encoding's transposed map (dq_rotary, dk_rotary) as
  // they are converted; what the conversion could not rotate (dK written by the kernels
  // themselves, head dims it does not take) the rotary kernel rotates after.
  const bool dq_rotated = cuda::convert_accumulator<Element, Compute>(dq, p.dq, B, N, H, D, stream, p.dq_rotary);
  bool dk_rotated = false;
  if (!direct_kv) {
    dk_rotated = cuda::convert_accumulator<Element, Compute>(dk, p.dk, B, N, Hk, D, stream, p.dk_rotary);
    cuda::convert_accumulator<Element, Compute>(dv, p.dv, B, N, Hk, D, stream);
  }
  rotate_attention_gradients_cuda(p, !dq_rotated, !dk_rotated);
  if (p.gradient_column_sums) cuda::add_gradient_column_sums<Element>(p, stream);
}

template <class Element>
struct RunForward {
  static void run(const DilatedAttentionParams& p) { forward<Element>(p); }
};
template <class Element>
struct RunBackward {
  static void run(const DilatedAttentionParams& p) { backward<Element>(p); }
};

}  // namespace

void dilated_attention_forward_cuda(const DilatedAttentionParams& params) {
  cuda::dispatch_float<RunForward>(params.dtype, params, "dilated attention");
}

void dilated_attention_backward_cuda(const DilatedAttentionParams& params) {
  cuda::dispatch_float<RunBackward>(params.dtype, params, "dilated attention");
}

}  // namespace longnet::kernels
