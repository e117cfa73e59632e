// Host-side pieces shared by the CUDA attention drivers (dilated_attention_cuda.cu,
// block_sparse_attention_cuda.cu): which kernel family a call takes, the current stream
// and device, fills, and the dispatch from (element type, head dim, Hopper or not) to the
// launchers of attention_launchers.hpp. kSparse picks the kernels' block-sparse
// instantiations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/status_cuda.hpp"
#include "kernels/cuda/attention_launchers.hpp"
#include "kernels/cuda/attention_utility.cuh"
#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/core/device.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels::cuda {

inline bool aligned_rows(const RowTensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.batch_stride % 8 == 0 && t.seq_stride % 8 == 0 &&
         t.head_stride % 8 == 0;
}

// Tensor cores take bf16/f16 with head_dim a multiple of 8 up to 128 and 16-byte aligned
// rows of every operand; the rest runs on the exact SIMT kernels.
inline bool tensor_core_operands(DType dtype, std::int64_t head_dim, std::initializer_list<RowTensor> operands) {
  if (dtype != DType::bf16 && dtype != DType::f16) return false;
  if (head_dim % 8 != 0 || head_dim > 128) return false;
  for (const RowTensor& t : operands) {
    if (!aligned_rows(t)) return false;
  }
  return true;
}

inline DeviceRows device_rows(const RowTensor& t) { return {t.data, t.batch_stride, t.seq_stride, t.head_stride}; }

inline cudaStream_t current_cuda_stream() {
  int device = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  return static_cast<cudaStream_t>(current_stream(device).handle);
}

inline Device current_device() {
  int device = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  return Device::cuda(device);
}

template <class Compute>
void fill(void* data, std::int64_t count, Compute value, cudaStream_t stream) {
  cuda_model::launch_model(fill_kernel<Compute>, grid_for(count, 256), 256, 0, stream, static_cast<Compute*>(data),
                           count, value);
}

// Hopper (compute capability 9.0) runs the wgmma kernels when they were built.
inline bool use_sm90_kernels() {
#ifdef LONGNET_HAVE_SM90A
  static const bool hopper = [] {
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return false;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    return major == 9 && minor == 0 && std::getenv("LONGNET_DISABLE_SM90") == nullptr;
  }();
  return hopper;
#else
  return false;
#endif
}

// The query heads pattern `index` of `num_patterns` serves: all of them in LongNet mode,
// group `index` (the first H mod G groups one head larger) in head-groups mode.
struct HeadRange {
  int begin = 0, count = 0;
};

inline HeadRange pattern_heads(DilatedMode mode, std::int64_t index, std::int64_t num_patterns, std::int64_t heads) {
  const auto H = static_cast<int>(heads);
  if (mode == DilatedMode::longnet) return {0, H};
  const auto G = static_cast<int>(num_patterns), i = static_cast<int>(index);
  const int base = H / G, larger = H % G;
  return {i * base + (i < larger ? i : larger), base + (i < larger ? 1 : 0)};
}

// A host list of structs made only of int64 fields, as an i64 tensor on the current
// device (undefined when empty: nothing to copy, no synchronisation).
template <class T>
Tensor upload_words(const T* items, std::int64_t count) {
  static_assert(sizeof(T) % sizeof(std::int64_t) == 0, "upload_words takes structs of int64 fields");
  if (count == 0) return Tensor();
  const std::int64_t words = count * static_cast<std::int64_t>(sizeof(T) / sizeof(std::int64_t));
  std::vector<std::int64_t> host(static_cast<std::size_t>(words));
  std::memcpy(host.data(), items, host.size() * sizeof(std::int64_t));
  return Tensor::from_vector(host, {words}).to(current_device());
}

// Appends the pattern of `one` (a launch of that pattern alone) as the next slot of the
// forward launch `l`, its CTAs after those already there.
inline void append_slot(PatternLaunch& l, const PatternLaunch& one) {
  PatternSlot& slot = l.slots[l.slot_count++];
  slot.pattern = one.pattern;
  slot.pattern_index = one.pattern_index;
  slot.head_begin = one.head_begin;
  slot.head_count = one.head_count;
  slot.segments = one.segments;
  slot.tiles_per_segment = one.tiles_per_segment;
  // Causal launches take their items by cost within groups of sequences whose K and V stay
  // in L2 (forward_cost_group, dilation.hpp; 16-bit rows).
  const std::int64_t sequence_bytes = 2 * longest_virtual_length(one.seq_len, one.pattern) * one.head_dim * 2;
  slot.cost_group = forward_cost_group(sequence_bytes, static_cast<std::int64_t>(one.head_count) * one.segments);
  slot.cta_begin = l.total_ctas;
  l.total_ctas += static_cast<std::int64_t>(one.head_count) * one.segments * one.tiles_per_segment;
}

// Rows of the sequence a forward CTA (or, on Hopper, a work item of the persistent
// warp-specialised kernel) of a dilated launch owns on the tensor-core path.
inline int forward_rows_per_cta(std::int64_t head_dim) {
  return use_sm90_kernels() ? 64 * flash_forward_consumers_sm90(head_dim) : kFlashForwardRows;
}
// Rows a forward CTA of a block-sparse launch owns on the tensor-core path.
inline int sparse_forward_rows_per_cta() { return use_sm90_kernels() ? kFlashForwardRowsSm90 : kFlashForwardRows; }

template <class Element, bool kSparse = false>
void launch_forward(const PatternLaunch& l, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16> || std::is_same_v<Element, __half>) {
#ifdef LONGNET_HAVE_SM90A
    if (tensor_cores && use_sm90_kernels()) {
      // Dilated launches: the warp-specialised kernel (flash_forward_consumers_sm90 consumer
      // warpgroups); block-sparse ones: the one-warpgroup kernel.
      if constexpr (kSparse) {
        if (l.head_dim <= 64) {
          launch_flash_block_sparse_forward_sm90<Element, 64>(l, stream);
        } else {
          launch_flash_block_sparse_forward_sm90<Element, 128>(l, stream);
        }
      } else {
        static_assert(flash_forward_consumers_sm90(64) == 3 && flash_forward_consumers_sm90(128) == 2);
        if (l.head_dim <= 64) {
          launch_flash_forward_sm90_ws<Element, 64, 3>(l, stream);
        } else {
          launch_flash_forward_sm90_ws<Element, 128, 2>(l, stream);
        }
      }
      return;
    }
#endif
    if (tensor_cores) {
      if (l.head_dim <= 64) {
        launch_flash_forward<Element, 64, kSparse>(l, stream);
      } else {
        launch_flash_forward<Element, 128, kSparse>(l, stream);
      }
      return;
    }
  }
  using Compute = std::conditional_t<std::is_same_v<Element, double>, double, float>;
  launch_simt_forward<Element, Compute, kSparse>(l, stream);
}

// Whether launch_backward runs the Hopper kernels, which read PatternLaunch::row_terms.
// Deterministic launches: only the warp-specialised kernel (dilated, head dim up to 64) has
// a dK/dV-only path; the others run the mma.sync kernels.
template <class Element, bool kSparse = false>
bool backward_runs_sm90(const PatternLaunch& l, bool tensor_cores) {
  return (std::is_same_v<Element, __nv_bfloat16> || std::is_same_v<Element, __half>) && tensor_cores &&
         use_sm90_kernels() && (!l.deterministic || (!kSparse && l.head_dim <= 64));
}

// PatternLaunch::row_terms of a call from its lse and delta (float, (B, H, N)) and its
// output_scale; an undefined tensor where the call does not run the Hopper backward.
template <class Element, bool kSparse = false>
Tensor backward_row_terms(const PatternLaunch& l, bool tensor_cores, cudaStream_t stream) {
  if (!backward_runs_sm90<Element, kSparse>(l, tensor_cores)) return {};
  const std::int64_t count = l.batch * l.heads * l.seq_len;
  Tensor terms = Tensor::empty({l.batch, l.heads, l.seq_len, 2}, DType::f32, current_device());
  if (count == 0) return terms;
  cuda_model::launch_model(backward_row_terms_kernel, grid_for(count, 256), 256, 0, stream,
                           static_cast<const float*>(l.lse), static_cast<const float*>(l.delta),
                           static_cast<float2*>(terms.data()), count, static_cast<float>(1.0 / l.output_scale_exact));
  LONGNET_CHECK(cudaGetLastError());
  return terms;
}

template <class Element, bool kSparse = false>
void launch_backward(const PatternLaunch& l, std::int64_t kv_tiles, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16> || std::is_same_v<Element, __half>) {
#ifdef LONGNET_HAVE_SM90A
    if (backward_runs_sm90<Element, kSparse>(l, tensor_cores)) {
      PatternLaunch with_terms = l;
      Tensor terms;  // freed in stream order after the launch
      if (l.row_terms == nullptr) {
        terms = backward_row_terms<Element, kSparse>(l, tensor_cores, stream);
        with_terms.row_terms = terms.data();
        with_terms.overlap_previous = false;  // the kernel reads what the launch just queued wrote
      }
      // Dilated launches up to head dim 64: the warp-specialised kernel; the others: the
      // one-role kernel.
      if (l.head_dim <= 64) {
        if constexpr (kSparse) {
          launch_flash_backward_sm90<Element, 64, true>(with_terms, kv_tiles, stream);
        } else {
          // Deterministic launches add dQ in a fixed order (the same kernel, with turn
          // counters per query tile: 4 bytes a row and head, zeroed): non-causal ones in
          // key-tile order, causal ones from the diagonal down with the key tiles
          // dispatched in descending order (flash_backward_sm90_ws.cuh). Before that
          // order, causal launches took dK, dV from the kernel and dQ from the query-tile
          // pass (launch_flash_backward_dq), which recomputes S and dP.
          Tensor order;  // freed in stream order after the launch
          if (l.deterministic) {  // (deterministic launches never overlap: dilated_attention_cuda.cu)
            order = Tensor::zeros({l.batch * l.heads * l.seq_len}, DType::i32, current_device());
            with_terms.dq_order = static_cast<int*>(order.data());
          }
          launch_flash_backward_sm90_ws<Element, 64>(with_terms, kv_tiles, stream);
        }
      } else {
        launch_flash_backward_sm90<Element, 128, kSparse>(with_terms, kv_tiles, stream);
      }
      return;
    }
#endif
    if (tensor_cores) {
      if (l.head_dim <= 64) {
        launch_flash_backward<Element, 64, kSparse>(l, kv_tiles, stream);
      } else {
        launch_flash_backward<Element, 128, kSparse>(l, kv_tiles, stream);
      }
      return;
    }
  }
  using Compute = std::conditional_t<std::is_same_v<Element, double>, double, float>;
  launch_simt_backward<Element, Compute, kSparse>(l, stream);
}

// target[(b H + h) N + n] = sum_d dO[b, n, h, d] O[b, n, h, d] in the compute type: the
// backward's delta = rowsum(dO o O) (DESIGN 2.3: the final output), and any dot product of
// two row tensors head by head (LayerNorm's segment_dots where its backward does not take
// them).
template <class Element, class Compute>
void output_deltas_into(const RowTensor& out, const RowTensor& dout, std::int64_t batch, std::int64_t seq_len,
                        std::int64_t heads, std::int64_t head_dim, Compute* target, cudaStream_t stream) {
  if (batch * heads * seq_len == 0) return;
  // 16-byte packs when every row is aligned and a row is at most 32 packs.
  constexpr std::int64_t kPack = 16 / sizeof(Element);
  // (aligned_rows: 16-byte aligned data, strides in multiples of 8 elements, so of kPack.)
  const bool packed = aligned_rows(out) && aligned_rows(dout) && head_dim % kPack == 0 && head_dim <= 32 * kPack &&
                      heads <= 65535 && batch <= 65535;
  if (packed) {
    const std::int64_t packs = head_dim / kPack;
    const auto launch = [&](auto lanes_tag) {
      constexpr int kLanes = decltype(lanes_tag)::value;
      constexpr int kThreads = 256;
      const dim3 grid(static_cast<unsigned>((seq_len + kThreads / kLanes - 1) / (kThreads / kLanes)),
                      static_cast<unsigned>(heads), static_cast<unsigned>(batch));
      cuda_model::launch_model(delta_packed_kernel<Element, Compute, kLanes>, grid, kThreads, 0, stream,
                               device_rows(out), device_rows(dout), target, seq_len, static_cast<int>(heads),
                               static_cast<int>(head_dim));
    };
    if (packs <= 1) {
      launch(std::integral_constant<int, 1>{});
    } else if (packs <= 2) {
      launch(std::integral_constant<int, 2>{});
    } else if (packs <= 4) {
      launch(std::integral_constant<int, 4>{});
    } else if (packs <= 8) {
      launch(std::integral_constant<int, 8>{});
    } else if (packs <= 16) {
      launch(std::integral_constant<int, 16>{});
    } else {
      launch(std::integral_constant<int, 32>{});
    }
  } else {
    cuda_model::launch_model(delta_kernel<Element, Compute>, grid_for(batch * heads * seq_len * 32, 256), 256, 0,
                             stream, device_rows(out), device_rows(dout), target, batch, seq_len,
                             static_cast<int>(heads), static_cast<int>(head_dim));
  }
  LONGNET_CHECK(cudaGetLastError());
}

// delta = rowsum(dO o O) per (batch, head, row), (B, H, N) on the current device.
template <class Element, class Compute>
Tensor output_deltas(const RowTensor& out, const RowTensor& dout, std::int64_t batch, std::int64_t seq_len,
                     std::int64_t heads, std::int64_t head_dim, cudaStream_t stream) {
  Tensor delta = Tensor::empty({batch, heads, seq_len}, dtype_of<Compute>::value, current_device());
  output_deltas_into<Element, Compute>(out, dout, batch, seq_len, heads, head_dim, static_cast<Compute*>(delta.data()),
                                       stream);
  return delta;
}

// Writes scale * a contiguous (B, N, heads, D) accumulator in the compute type into
// `target` (any row strides) in the output dtype. With `rotation` (nullable; rotary.hpp)
// the rows leave through its transposed map, applied as they are converted, when
// head_dim % 4 == 0 and head_dim <= 256; returns whether it was applied (else the caller
// rotates after: rotate_attention_gradients_cuda).
template <class Element, class Compute>
bool convert_accumulator(const Compute* accumulator, const RowTensor& target, std::int64_t batch, std::int64_t seq_len,
                         std::int64_t heads, std::int64_t head_dim, cudaStream_t stream, Compute scale = Compute(1),
                         const RotaryParams* rotation = nullptr) {
  const std::int64_t per_position = heads * head_dim / 4;
  bool rotated = false;
  if (head_dim % 4 == 0 && batch <= 65535 && seq_len <= 0x7fffffff && per_position <= (1 << 20)) {
    const int threads = static_cast<int>(std::min<std::int64_t>((per_position + 31) / 32 * 32, 256));
    const dim3 grid(static_cast<unsigned>(seq_len), static_cast<unsigned>(batch));
    rotated = rotation && head_dim / 2 <= kMaxRotatedPairs;
    if (seq_len > 0 && batch > 0 && rotated) {
      const RotaryParams map = transposed_gradient_map(*rotation, head_dim);
      RotaryPairTable table{};
      fill_rotary_pair_constants(map, table.theta, table.log2_zeta);
      cuda_model::launch_model(convert_accumulator_rows_kernel<Element, Compute, true>, grid, threads, 0, stream,
                               accumulator, device_rows(target), static_cast<int>(heads), static_cast<int>(head_dim),
                               scale, map, table);
    } else if (seq_len > 0 && batch > 0) {
      cuda_model::launch_model(convert_accumulator_rows_kernel<Element, Compute, false>, grid, threads, 0, stream,
                               accumulator, device_rows(target), static_cast<int>(heads), static_cast<int>(head_dim),
                               scale, RotaryParams{}, RotaryPairTable{});
    }
  } else {
    cuda_model::launch_model(
        convert_accumulator_kernel<Element, Compute>, grid_for(batch * seq_len * heads * head_dim, 256), 256, 0, stream,
        accumulator, device_rows(target), batch, seq_len, static_cast<int>(heads), static_cast<int>(head_dim), scale);
  }
  LONGNET_CHECK(cudaGetLastError());
  return rotated;
}

template <class Element, class Compute>
bool convert_accumulator(const Tensor& accumulator, const RowTensor& target, std::int64_t batch, std::int64_t seq_len,
                         std::int64_t heads, std::int64_t head_dim, cudaStream_t stream,
                         const RotaryParams* rotation = nullptr) {
  return convert_accumulator<Element, Compute>(static_cast<const Compute*>(accumulator.data()), target, batch, seq_len,
                                               heads, head_dim, stream, Compute(1), rotation);
}

// Runs Run<Element>::run(p) for the CUDA element type of `dtype`.
template <template <class> class Run, class Params>
void dispatch_float(DType dtype, const Params& p, const char* what) {
  switch (dtype) {
    case DType::bf16:
      return Run<__nv_bfloat16>::run(p);
    case DType::f16:
      return Run<__half>::run(p);
    case DType::f32:
      return Run<float>::run(p);
    case DType::f64:
      return Run<double>::run(p);
    default:
      throw Error(str(what, " on CUDA: dtype ", dtype_name(dtype), " is not a float dtype"));
  }
}

}  // namespace longnet::kernels::cuda
