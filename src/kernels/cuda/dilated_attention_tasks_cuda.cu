// The CUDA driver of sequence parallelism's task kernel (kernels/dilated_attention_tasks.hpp,
// kernels in flash_tasks.cuh): the host turns the plan's tasks into work lists — one
// entry per forward CTA (64 queries of a range, one head) and per backward CTA (64 keys
// of a piece, the task's heads) — with the tasks' repeats expanded into shifted copies of
// their pieces, uploads them, and launches:
//   forward:  out accumulator = 0, lse = -inf; one launch per pattern (merging by
//             log-sum-exp, in pattern order, like the single-GPU engine); then out =
//             alpha * accumulator in the inputs' dtype;
//   backward: delta = rowsum(dO * O); outputs zeroed; one launch over every task (all
//             additions are fp32 atomics, so patterns need no order).
// A call may take only the local or only the gathered pieces (TaskPieces), so that the
// exchange of rows overlaps the work that needs none: the forward then merges into the
// caller's accumulator across calls (start fills it, finish converts it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cuda/attention_driver.cuh"
#include "kernels/cuda/flash_tasks.cuh"
#include "longnet/core/tensor.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet::kernels {
namespace {

using cuda::TaskKeyTile;
using cuda::TaskLaunch;
using cuda::TaskPieceRows;
using cuda::TaskQueryTile;

constexpr std::int64_t kMaxGridX = (std::int64_t{1} << 31) - 1;
constexpr std::int64_t kMaxGridYZ = 65535;
constexpr int kHeadsPerMask = 64;

void validate(const DilatedAttentionTasksParams& p, std::initializer_list<RowTensor> operands) {
  require(p.dtype == DType::bf16 || p.dtype == DType::f16, "sequence-parallel dilated attention on CUDA: dtype ",
          dtype_name(p.dtype), " is not supported (bf16 or f16; run f32/f64 on the CPU)");
  require(cuda::tensor_core_operands(p.dtype, p.head_dim, operands), "sequence-parallel dilated attention on CUDA: head_dim = ",
          p.head_dim, " must be a multiple of 8 up to 128, with 16-byte aligned rows of every operand");
  require(p.batch <= kMaxGridYZ, "batch = ", p.batch, ": sequence-parallel attention on CUDA supports batch <= ",
          kMaxGridYZ);
  require(p.heads % p.kv_heads == 0, "heads = ", p.heads, " is not a multiple of kv_heads = ", p.kv_heads);
}

// The parameters every launch shares: sizes, scales, local operands, lse (B, H, L).
TaskLaunch task_launch(const DilatedAttentionTasksParams& p) {
  TaskLaunch t;
  cuda::PatternLaunch& l = t.base;
  l.batch = p.batch;
  l.seq_len = p.local_rows;
  l.heads = static_cast<int>(p.heads);
  l.kv_heads = static_cast<int>(p.kv_heads);
  l.head_dim = static_cast<int>(p.head_dim);
  l.mode = p.mode;
  l.num_patterns = static_cast<int>(p.num_patterns);
  l.scale = static_cast<float>(p.scale);
  l.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  l.scale_exact = p.scale;
  const double alpha = p.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(p.num_patterns) : 1.0;
  l.output_scale = static_cast<float>(alpha);
  l.output_scale_exact = alpha;
  l.q = cuda::device_rows(p.q);
  l.k = cuda::device_rows(p.k);
  l.v = cuda::device_rows(p.v);
  l.out = cuda::device_rows(p.out);
  l.dout = cuda::device_rows(p.dout);
  l.dq = cuda::device_rows(p.dq);
  l.dk = cuda::device_rows(p.dk);
  l.dv = cuda::device_rows(p.dv);
  l.lse = p.lse;
  l.merge = true;
  t.k_gathered = cuda::device_rows(p.k_gathered);
  t.v_gathered = cuda::device_rows(p.v_gathered);
  t.dk_gathered = cuda::device_rows(p.dk_gathered);
  t.dv_gathered = cuda::device_rows(p.dv_gathered);
  return t;
}

// Query heads of task t's kv head that use its offset, as bit masks of kHeadsPerMask
// heads from head_base.
struct HeadMask {
  std::int64_t head_base;
  std::uint64_t bits;
};

std::vector<HeadMask> task_heads(const DilatedAttentionTasksParams& p, const SequenceTask& t) {
  const std::int64_t group = p.heads / p.kv_heads;
  const std::int64_t rate = p.patterns[t.pattern].dilation_rate;
  std::vector<HeadMask> masks;
  for (std::int64_t h = t.kv_head * group; h < (t.kv_head + 1) * group; ++h) {
    if (pattern_offset(p.mode, t.pattern, p.num_patterns, rate, h, p.heads) != t.offset) continue;
    const std::int64_t base = h - (h - t.kv_head * group) % kHeadsPerMask;
    if (masks.empty() || masks.back().head_base != base) masks.push_back({base, 0});
    masks.back().bits |= std::uint64_t{1} << (h - base);
  }
  return masks;
}

// The work lists of all tasks: pieces with repeats applied, forward CTAs grouped by
// pattern (phase_begin[i] .. phase_begin[i + 1]), backward CTAs.
struct WorkLists {
  std::vector<TaskPieceRows> pieces;
  std::vector<TaskQueryTile> query_tiles;
  std::vector<std::int64_t> phase_begin{0};
  std::vector<TaskKeyTile> key_tiles;
};

bool selected(TaskPieces which, RowSource source) {
  return which == TaskPieces::all || (which == TaskPieces::local) == (source == RowSource::local);
}

WorkLists work_lists(const DilatedAttentionTasksParams& p) {
  WorkLists w;
  for (std::int64_t ti = 0; ti < p.num_tasks; ++ti) {
    const SequenceTask& task = p.tasks[ti];
    const std::int64_t rate = p.patterns[task.pattern].dilation_rate;
    const std::vector<HeadMask> heads = task_heads(p, task);
    for (std::int64_t repeat = 0; repeat < task.repeats; ++repeat) {
      const std::int64_t shift = repeat * task.repeat_rows;
      for (std::int64_t r = task.range_begin; r < task.range_end; ++r) {
        const QueryRange& range = p.ranges[r];
        const auto piece_begin = static_cast<std::int64_t>(w.pieces.size());
        for (std::int64_t i = range.piece_begin; i < range.piece_end; ++i) {
          const KeyPiece& k = p.pieces[i];
          if (!selected(p.pieces_to_run, k.keys.source)) continue;
          const bool gathered = k.keys.source == RowSource::gathered;
          w.pieces.push_back({k.keys.first_row + (gathered ? 0 : shift), k.keys.row_step, k.keys.count,
                              gathered ? 1 : 0, k.diagonal ? 1 : 0});
        }
        const auto piece_end = static_cast<std::int64_t>(w.pieces.size());
        if (piece_end == piece_begin) continue;  // nothing of this range in this call
        for (const HeadMask& m : heads) {
          for (std::uint64_t bits = m.bits; bits != 0; bits &= bits - 1) {
            const std::int64_t h = m.head_base + __builtin_ctzll(bits);
            for (std::int64_t q = 0; q < range.count; q += cuda::kTaskTile) {
              w.query_tiles.push_back(
                  {range.first_row + shift, rate, range.count, q, piece_begin, piece_end, h, task.kv_head});
            }
          }
          for (std::int64_t i = piece_begin; i < piece_end; ++i) {
            for (std::int64_t k = 0; k < w.pieces[static_cast<std::size_t>(i)].count; k += cuda::kTaskTile) {
              w.key_tiles.push_back({i, k, range.first_row + shift, rate, range.count, task.kv_head, m.head_base,
                                     static_cast<std::int64_t>(m.bits)});
            }
          }
        }
      }
    }
    const bool last_of_pattern = ti + 1 == p.num_tasks || p.tasks[ti + 1].pattern != task.pattern;
    if (last_of_pattern) w.phase_begin.push_back(static_cast<std::int64_t>(w.query_tiles.size()));
  }
  return w;
}

// A host list of int64-only structs as an i64 tensor on the current device.
template <class T>
Tensor upload(const std::vector<T>& items) {
  static_assert(sizeof(T) % sizeof(std::int64_t) == 0);
  constexpr std::int64_t kWords = sizeof(T) / sizeof(std::int64_t);
  const auto count = static_cast<std::int64_t>(items.size());
  std::vector<std::int64_t> words(static_cast<std::size_t>(count * kWords));
  if (count > 0) std::memcpy(words.data(), items.data(), words.size() * sizeof(std::int64_t));
  if (words.empty()) words.push_back(0);  // a valid (unused) allocation
  return Tensor::from_vector(words, {static_cast<std::int64_t>(words.size())}).to(cuda::current_device());
}

template <class Element, int kHeadDim>
void launch_forward_phase(const TaskLaunch& t, std::int64_t ctas, std::int64_t batch, cudaStream_t stream) {
  constexpr int kShared = cuda::task_forward_shared_bytes<kHeadDim>();
  auto kernel = cuda::flash_tasks_forward_kernel<Element, kHeadDim>;
  if (kShared > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared);
  kernel<<<dim3(static_cast<unsigned>(ctas), static_cast<unsigned>(batch)), cuda::kTaskThreads, kShared, stream>>>(t);
}

template <class Element, int kHeadDim>
void launch_backward_all(const TaskLaunch& t, std::int64_t ctas, std::int64_t batch, cudaStream_t stream) {
  constexpr int kShared = cuda::BackwardTile<kHeadDim>::kSharedBytes;
  auto kernel = cuda::flash_tasks_backward_kernel<Element, kHeadDim>;
  if (kShared > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared);
  kernel<<<dim3(static_cast<unsigned>(ctas), static_cast<unsigned>(batch)), cuda::kTaskThreads, kShared, stream>>>(t);
}

Tensor device_view(const RowTensor& t, DType dtype, std::int64_t B, std::int64_t rows, std::int64_t heads,
                   std::int64_t D) {
  return Tensor::from_blob(t.data, {B, rows, heads, D}, dtype, cuda::current_device(),
                           {t.batch_stride, t.seq_stride, heads == 1 ? 0 : t.head_stride, 1});
}

template <class Element>
void forward(const DilatedAttentionTasksParams& p) {
  validate(p, {p.q, p.k, p.v, p.out, p.k_gathered, p.v_gathered});
  const cudaStream_t stream = cuda::current_cuda_stream();
  const Device device = cuda::current_device();
  const std::int64_t B = p.batch, L = p.local_rows, H = p.heads, D = p.head_dim;
  const bool own_accumulator = p.pieces_to_run == TaskPieces::all && p.start && p.finish;
  require(own_accumulator || p.out_accumulator != nullptr,
          "sequence-parallel attention on CUDA: a forward in several calls needs out_accumulator");
  const Tensor own = own_accumulator ? Tensor::empty({B, L, H, D}, DType::f32, device) : Tensor();
  void* accumulator = own_accumulator ? own.data() : p.out_accumulator;
  if (p.start) {
    cuda::fill<float>(accumulator, B * L * H * D, 0.0f, stream);
    cuda::fill<float>(p.lse, B * H * L, -INFINITY, stream);
  }
  const WorkLists w = work_lists(p);
  const Tensor pieces = upload(w.pieces), tiles = upload(w.query_tiles);
  TaskLaunch t = task_launch(p);
  t.base.out_accumulator = accumulator;
  t.pieces = static_cast<const TaskPieceRows*>(pieces.data());
  for (std::size_t phase = 0; phase + 1 < w.phase_begin.size(); ++phase) {
    const std::int64_t begin = w.phase_begin[phase], ctas = w.phase_begin[phase + 1] - begin;
    if (ctas == 0) continue;
    require(ctas <= kMaxGridX, "sequence-parallel attention on CUDA: ", ctas, " query tiles are too many for one launch");
    t.query_tiles = static_cast<const TaskQueryTile*>(tiles.data()) + begin;
    if (D <= 64) {
      launch_forward_phase<Element, 64>(t, ctas, B, stream);
    } else {
      launch_forward_phase<Element, 128>(t, ctas, B, stream);
    }
    LONGNET_CHECK(cudaGetLastError());
  }
  if (!p.finish) return;
  cuda::convert_accumulator_kernel<Element, float><<<cuda::grid_for(B * L * H * D, 256), 256, 0, stream>>>(
      static_cast<const float*>(accumulator), cuda::device_rows(p.out), B, L, static_cast<int>(H),
      static_cast<int>(D), t.base.output_scale);
  LONGNET_CHECK(cudaGetLastError());
}

template <class Element>
void backward(const DilatedAttentionTasksParams& p) {
  validate(p, {p.q, p.k, p.v, p.out, p.dout, p.k_gathered, p.v_gathered});
  const cudaStream_t stream = cuda::current_cuda_stream();
  const std::int64_t B = p.batch, L = p.local_rows, H = p.heads, Hk = p.kv_heads, D = p.head_dim;
  const std::int64_t R = p.gathered_rows;
  if (p.start) {
    device_view(p.dq, DType::f32, B, L, H, D).zero();
    device_view(p.dk, DType::f32, B, L, Hk, D).zero();
    device_view(p.dv, DType::f32, B, L, Hk, D).zero();
  }
  if (p.start && R > 0) {
    device_view(p.dk_gathered, DType::f32, B, R, 1, D).zero();
    device_view(p.dv_gathered, DType::f32, B, R, 1, D).zero();
  }
  const Tensor delta = cuda::output_deltas<Element, float>(p.out, p.dout, B, L, H, D, stream);
  const WorkLists w = work_lists(p);
  if (w.key_tiles.empty()) return;
  require(static_cast<std::int64_t>(w.key_tiles.size()) <= kMaxGridX,
          "sequence-parallel attention on CUDA: too many key tiles for one launch");
  const Tensor pieces = upload(w.pieces), tiles = upload(w.key_tiles);
  TaskLaunch t = task_launch(p);
  t.base.delta = delta.data();
  t.pieces = static_cast<const TaskPieceRows*>(pieces.data());
  t.key_tiles = static_cast<const TaskKeyTile*>(tiles.data());
  const auto ctas = static_cast<std::int64_t>(w.key_tiles.size());
  if (D <= 64) {
    launch_backward_all<Element, 64>(t, ctas, B, stream);
  } else {
    launch_backward_all<Element, 128>(t, ctas, B, stream);
  }
  LONGNET_CHECK(cudaGetLastError());
}

}  // namespace

void dilated_attention_tasks_forward_cuda(const DilatedAttentionTasksParams& params) {
  if (params.dtype == DType::f16) return forward<__half>(params);
  forward<__nv_bfloat16>(params);  // (other dtypes: validate says which are supported)
}

void dilated_attention_tasks_backward_cuda(const DilatedAttentionTasksParams& params) {
  if (params.dtype == DType::f16) return backward<__half>(params);
  backward<__nv_bfloat16>(params);
}

}  // namespace longnet::kernels
