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
// Engine slices (whole segments inside the local rows, most of the work for LongNet
// patterns) run on the single-GPU engine's kernels (Hopper wgmma where built) over the
// slice's rows as a sequence of their own, with the local pieces; their outputs merge into
// the accumulator by log-sum-exp, their gradients (from the final out and lse) are added;
// the tasks they cover are left out of the work lists.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
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

// Whether copy `shift` of task t lies inside an engine slice of its pattern (every range's
// rows inside it, every piece local): the engine's kernels compute it.
bool covered_by_engine(const DilatedAttentionTasksParams& p, const SequenceTask& t, std::int64_t shift) {
  const std::int64_t rate = p.patterns[t.pattern].dilation_rate;
  for (std::int64_t r = t.range_begin; r < t.range_end; ++r) {
    for (std::int64_t i = p.ranges[r].piece_begin; i < p.ranges[r].piece_end; ++i) {
      if (p.pieces[i].keys.source != RowSource::local) return false;
    }
  }
  for (std::int64_t r = t.range_begin; r < t.range_end; ++r) {
    const QueryRange& range = p.ranges[r];
    if (range.count == 0) continue;
    const std::int64_t first = range.first_row + shift, last = first + (range.count - 1) * rate;
    bool inside = false;
    for (std::int64_t s = 0; s < p.num_engine_slices && !inside; ++s) {
      const EngineSlice& slice = p.engine_slices[s];
      inside = slice.pattern == t.pattern && first >= slice.first_row && last < slice.first_row + slice.rows;
    }
    if (!inside) return false;
  }
  return true;
}

WorkLists work_lists(const DilatedAttentionTasksParams& p) {
  WorkLists w;
  for (std::int64_t ti = 0; ti < p.num_tasks; ++ti) {
    const SequenceTask& task = p.tasks[ti];
    const std::int64_t rate = p.patterns[task.pattern].dilation_rate;
    const std::vector<HeadMask> heads = task_heads(p, task);
    for (std::int64_t repeat = 0; repeat < task.repeats; ++repeat) {
      const std::int64_t shift = repeat * task.repeat_rows;
      if (p.num_engine_slices > 0 && covered_by_engine(p, task, shift)) continue;
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

// ---- engine slices ---------------------------------------------------------------------

// The single-GPU engine's launch of pattern slice.pattern over local rows [first_row,
// first_row + rows) as a sequence of its own (as dilated_attention_cuda.cu builds one).
cuda::PatternLaunch engine_launch(const DilatedAttentionTasksParams& p, const EngineSlice& slice, int rows_per_cta) {
  cuda::PatternLaunch l = task_launch(p).base;
  const DilationPattern pattern = p.patterns[slice.pattern];
  l.merge = false;
  l.seq_len = slice.rows;
  l.pattern = pattern;
  l.pattern_index = static_cast<int>(slice.pattern);
  l.causal = p.causal;
  const cuda::HeadRange heads = cuda::pattern_heads(p.mode, slice.pattern, p.num_patterns, p.heads);
  l.head_begin = heads.begin;
  l.head_count = heads.count;
  l.segments = segment_count(slice.rows, pattern.segment_length);
  l.tiles_per_segment = ceil_div(longest_virtual_length(slice.rows, pattern), rows_per_cta);
  auto shifted = [&](cuda::DeviceRows rows) {
    rows.data = static_cast<char*>(rows.data) + slice.first_row * rows.seq_stride * static_cast<std::int64_t>(dtype_size(p.dtype));
    return rows;
  };
  l.q = shifted(l.q);
  l.k = shifted(l.k);
  l.v = shifted(l.v);
  l.out = shifted(l.out);
  l.dout = shifted(l.dout);
  return l;
}

RowTensor shifted_rows(RowTensor t, std::int64_t first_row, DType dtype) {
  t.data = static_cast<char*>(t.data) + first_row * t.seq_stride * static_cast<std::int64_t>(dtype_size(dtype));
  return t;
}

// Whether t is a contiguous (B, rows, heads, D) tensor.
bool dense_rows(const RowTensor& t, std::int64_t B, std::int64_t rows, std::int64_t heads, std::int64_t D) {
  return t.head_stride == D && t.seq_stride == heads * D && (B == 1 || t.batch_stride == rows * heads * D);
}

// acc, lse (the call's accumulators, rows [first_row, first_row + n) of L) merged by
// log-sum-exp with a slice's normalised part (B, n, H, D) and part_lse (B, H, n): a warp per row.
__global__ void merge_slice_kernel(float* acc, float* lse, const float* part, const float* part_lse, std::int64_t batch,
                                   std::int64_t L, std::int64_t n, int heads, int head_dim, std::int64_t first_row) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= batch * heads * n) return;
  const std::int64_t j = row % n, h = (row / n) % heads, b = row / (n * heads);
  float* lse_slot = lse + (b * heads + h) * L + first_row + j;
  const float old_lse = *lse_slot, new_lse = part_lse[(b * heads + h) * n + j];
  __syncwarp();
  if (new_lse == -INFINITY) return;
  float old_weight = 0.0f, new_weight = 1.0f, merged = new_lse;
  if (old_lse != -INFINITY) {
    merged = fmaxf(old_lse, new_lse) + log1pf(__expf(-fabsf(old_lse - new_lse)));
    old_weight = __expf(old_lse - merged);
    new_weight = __expf(new_lse - merged);
  }
  float* out = acc + ((b * L + first_row + j) * heads + h) * head_dim;
  const float* in = part + ((b * n + j) * heads + h) * head_dim;
  for (int d = lane; d < head_dim; d += 32) out[d] = out[d] * old_weight + in[d] * new_weight;
  if (lane == 0) *lse_slot = merged;
}

// dst rows [first_row, first_row + n) += src (B, n, heads, D) contiguous: a warp per row
// (64-bit index arithmetic once per row, 32-bit inside it).
__global__ void add_slice_kernel(cuda::DeviceRows dst, const float* src, std::int64_t batch, std::int64_t n, int heads,
                                 int head_dim, std::int64_t first_row) {
  const int lane = threadIdx.x % 32;
  const int width = heads * head_dim;
  for (std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32; row < batch * n;
       row += static_cast<std::int64_t>(gridDim.x) * blockDim.x / 32) {
    const std::int64_t j = row % n, b = row / n;
    float* out = dst.row<float>(b, first_row + j, 0);
    const float* in = src + row * width;
    for (int e = lane; e < width; e += 32) {
      const int h = e / head_dim, d = e - h * head_dim;
      out[h * dst.head_stride + d] += in[e];
    }
  }
}

// The forward of every engine slice, merged into the call's accumulator and lse.
template <class Element>
void forward_engine_slices(const DilatedAttentionTasksParams& p, void* accumulator, cudaStream_t stream) {
  const Device device = cuda::current_device();
  const std::int64_t B = p.batch, H = p.heads, D = p.head_dim;
  for (std::int64_t s = 0; s < p.num_engine_slices; ++s) {
    const EngineSlice& slice = p.engine_slices[s];
    const std::int64_t n = slice.rows;
    // A slice of all local rows has the accumulators' layout: the engine's epilogue merges
    // straight into them. Otherwise into a fresh part, merged afterwards.
    const bool direct = n == p.local_rows;
    const Tensor part = direct ? Tensor() : Tensor::zeros({B, n, H, D}, DType::f32, device);
    const Tensor part_lse = direct ? Tensor() : Tensor::full({B, H, n}, -INFINITY, DType::f32, device);
    cuda::PatternLaunch l = engine_launch(p, slice, cuda::forward_rows_per_cta(p.head_dim));
    l.merge = true;
    l.out_accumulator = direct ? accumulator : part.data();
    l.lse = direct ? p.lse : part_lse.data();
    cuda::append_slot(l, l);
    require(l.total_ctas <= kMaxGridX, "sequence-parallel attention on CUDA: a slice of ", n,
            " rows needs too many thread blocks for one launch");
    cuda::launch_forward<Element>(l, true, stream);
    LONGNET_CHECK(cudaGetLastError());
    if (direct) continue;
    merge_slice_kernel<<<cuda::grid_for(B * H * n * 32, 256), 256, 0, stream>>>(
        static_cast<float*>(accumulator), static_cast<float*>(p.lse), part.data<float>(), part_lse.data<float>(), B,
        p.local_rows, n, static_cast<int>(H), static_cast<int>(D), slice.first_row);
    LONGNET_CHECK(cudaGetLastError());
  }
}

// The backward of every engine slice from the final out and lse, added to dq, dk, dv.
template <class Element>
void backward_engine_slices(const DilatedAttentionTasksParams& p, cudaStream_t stream) {
  const Device device = cuda::current_device();
  const std::int64_t B = p.batch, H = p.heads, Hk = p.kv_heads, D = p.head_dim, L = p.local_rows;
  const Tensor lse_all = Tensor::from_blob(p.lse, {B, H, L}, DType::f32, device);
  for (std::int64_t s = 0; s < p.num_engine_slices; ++s) {
    const EngineSlice& slice = p.engine_slices[s];
    const std::int64_t n = slice.rows;
    const Tensor lse = lse_all.slice(2, slice.first_row, slice.first_row + n).contiguous();
    const Tensor delta = cuda::output_deltas<Element, float>(shifted_rows(p.out, slice.first_row, p.dtype),
                                                             shifted_rows(p.dout, slice.first_row, p.dtype), B, n, H,
                                                             D, stream);
    // The engine adds into contiguous (B, n, heads, D) fp32 accumulators: the outputs
    // themselves from the slice's first row when that is their layout (one batch element,
    // or the slice is every local row), else fresh ones added afterwards.
    const bool direct = (B == 1 || n == L) && dense_rows(p.dq, B, L, H, D) && dense_rows(p.dk, B, L, Hk, D) &&
                        dense_rows(p.dv, B, L, Hk, D);
    auto accumulator = [&](std::int64_t heads) {
      return direct ? Tensor() : Tensor::zeros({B, n, heads, D}, DType::f32, device);
    };
    const Tensor dq = accumulator(H), dk = accumulator(Hk), dv = accumulator(Hk);
    cuda::PatternLaunch l = engine_launch(p, slice, cuda::kFlashBackwardRows);
    l.lse = lse.data();
    l.delta = delta.data();
    l.dq_accumulator = direct ? shifted_rows(p.dq, slice.first_row, DType::f32).data : dq.data();
    l.dk_accumulator = direct ? shifted_rows(p.dk, slice.first_row, DType::f32).data : dk.data();
    l.dv_accumulator = direct ? shifted_rows(p.dv, slice.first_row, DType::f32).data : dv.data();
    l.direct_kv = false;
    l.deterministic = false;
    cuda::launch_backward<Element>(l, l.tiles_per_segment, true, stream);
    LONGNET_CHECK(cudaGetLastError());
    if (direct) continue;
    auto add = [&](const Tensor& part, const RowTensor& target, std::int64_t heads) {
      add_slice_kernel<<<cuda::grid_for(B * n * 32, 256), 256, 0, stream>>>(
          cuda::device_rows(target), part.data<float>(), B, n, static_cast<int>(heads), static_cast<int>(D),
          slice.first_row);
      LONGNET_CHECK(cudaGetLastError());
    };
    add(dq, p.dq, H);
    add(dk, p.dk, Hk);
    add(dv, p.dv, Hk);
  }
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
  if (p.pieces_to_run != TaskPieces::gathered) forward_engine_slices<Element>(p, accumulator, stream);
  const WorkLists w = work_lists(p);
  const Tensor pieces = cuda::upload_words(w.pieces.data(), static_cast<std::int64_t>(w.pieces.size()));
  const Tensor tiles = cuda::upload_words(w.query_tiles.data(), static_cast<std::int64_t>(w.query_tiles.size()));
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
  cuda::convert_accumulator<Element, float>(static_cast<const float*>(accumulator), p.out, B, L, H, D, stream,
                                           t.base.output_scale);
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
  if (p.pieces_to_run != TaskPieces::gathered) backward_engine_slices<Element>(p, stream);
  const WorkLists w = work_lists(p);
  if (w.key_tiles.empty()) return;
  const Tensor delta = cuda::output_deltas<Element, float>(p.out, p.dout, B, L, H, D, stream);
  require(static_cast<std::int64_t>(w.key_tiles.size()) <= kMaxGridX,
          "sequence-parallel attention on CUDA: too many key tiles for one launch");
  const Tensor pieces = cuda::upload_words(w.pieces.data(), static_cast<std::int64_t>(w.pieces.size()));
  const Tensor tiles = cuda::upload_words(w.key_tiles.data(), static_cast<std::int64_t>(w.key_tiles.size()));
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
