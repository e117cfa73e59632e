// Dilated attention over an explicit list of virtual-sequence tasks: the kernel of
// sequence parallelism (DESIGN 2.6). A rank holds some rows of the sequence (its *local*
// rows) and has received some key/value rows from other ranks (its *gathered* rows); a
// task says which local query rows of one virtual sequence attend to which key pieces,
// each piece a contiguous range of the same virtual sequence in the local or the gathered
// rows. The results are those of DESIGN 2.1/2.2 restricted to the local query rows, and
// the exact gradients of 2.3, split into what belongs to local rows and what belongs to
// gathered rows (the caller sends the latter back to their owners).
//
// Shapes (L = local rows, R = gathered rows):
//   q, out, dout (B, L, H, D); k, v (B, L, Hk, D); lse (B, H, L) contiguous, lse_dtype(dtype);
//   k_gathered, v_gathered: R rows of B x D each (one kv head per row, the task's);
//   backward writes dq (B, L, H, D), dk, dv (B, L, Hk, D) and dk_gathered, dv_gathered
//   (R rows) in the *accumulation* dtype lse_dtype(dtype), because the gathered rows'
//   gradients are summed on their owners with the local ones before any rounding.
// Rows are addressed by element strides like RowTensor (the head_dim axis contiguous);
// gathered tensors ignore head_stride.
//
// Plain structs of pointers, sizes and strides, so that a CUDA version can take the same
// parameters (with the task arrays copied to the device).
#pragma once

#include <cstdint>

#include "longnet/core/dtype.hpp"
#include "longnet/kernels/dilated_attention.hpp"
#include "longnet/kernels/dilation.hpp"

namespace longnet::kernels {

enum class RowSource : std::int32_t { local = 0, gathered = 1 };

// Rows first_row + row_step * j, j in [0, count), of the local or the gathered rows.
struct RowRange {
  RowSource source = RowSource::local;
  std::int64_t first_row = 0;
  std::int64_t row_step = 1;
  std::int64_t count = 0;
};

// A contiguous range of a virtual sequence's keys (and values). `diagonal`: the piece is
// the query range's own rows (same virtual indices), so the causal mask applies inside
// it; any other piece is attended in full (the planner never lists keys after a query).
struct KeyPiece {
  RowRange keys;
  bool diagonal = false;
};

// A contiguous range of a virtual sequence's queries in the local rows (row step: the
// pattern's dilation rate) and its key pieces [piece_begin, piece_end).
struct QueryRange {
  std::int64_t first_row = 0;
  std::int64_t count = 0;
  std::int64_t piece_begin = 0;
  std::int64_t piece_end = 0;
};

// One virtual sequence (pattern, offset, kv head, segment) as seen by one rank: the query
// heads of `kv_head` whose offset under `pattern` is `offset` attend with query ranges
// [range_begin, range_end). With repeats > 1 the task stands for `repeats` copies shifted
// by repeat_rows local rows each (segments inside one local block); then every piece is local.
struct SequenceTask {
  std::int64_t pattern = 0;
  std::int64_t offset = 0;
  std::int64_t kv_head = 0;
  std::int64_t range_begin = 0;
  std::int64_t range_end = 0;
  std::int64_t repeats = 1;
  std::int64_t repeat_rows = 0;
};

// Local rows [first_row, first_row + rows) that are whole segments of pattern `pattern`
// (they start at a segment boundary and end at one, or at the sequence's end): their
// queries attend only keys among them, exactly as single-process dilated attention of
// those rows alone. The CUDA kernel runs such slices on the single-GPU engine's kernels
// and skips the tasks they cover (the CPU kernel runs the tasks).
struct EngineSlice {
  std::int64_t pattern = 0;
  std::int64_t first_row = 0;
  std::int64_t rows = 0;
};

// Which key pieces a CUDA call attends (to overlap the exchange of rows with the work
// that needs none of them).
enum class TaskPieces : std::int32_t { all = 0, local = 1, gathered = 2 };

struct DilatedAttentionTasksParams {
  std::int64_t batch = 0;
  std::int64_t local_rows = 0;  // L
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  const DilationPattern* patterns = nullptr;
  std::int64_t num_patterns = 0;
  DilatedMode mode = DilatedMode::longnet;
  bool causal = false;  // the tasks' diagonal pieces say it too; the engine slices need it
  double scale = 1.0;
  DType dtype = DType::f32;  // q, k, v, out, dout, k_gathered, v_gathered

  // Sorted by pattern (patterns are merged in order, as the single-process engine does).
  // Within a pattern no two tasks share query rows or key rows of the same kv head.
  const SequenceTask* tasks = nullptr;
  std::int64_t num_tasks = 0;
  const QueryRange* ranges = nullptr;
  const KeyPiece* pieces = nullptr;

  RowTensor q, k, v;
  RowTensor out;                   // forward: written; backward: read
  void* lse = nullptr;             // forward: written; backward: read
  RowTensor dout;                  // backward: read
  std::int64_t gathered_rows = 0;  // R
  RowTensor k_gathered, v_gathered;
  RowTensor dq, dk, dv;                // backward: written, accumulation dtype
  RowTensor dk_gathered, dv_gathered;  // backward: written, accumulation dtype

  // CUDA only: a call may attend one source's pieces. Then `start` says whether it is
  // the first call (forward: fills out_accumulator with 0 and lse with -inf; backward:
  // zeroes the outputs) and `finish` whether it is the last (forward: writes out from
  // the accumulator). out_accumulator: fp32 (B, L, H, D) contiguous, the caller's, kept
  // between the calls (the forward needs it whenever pieces != all or !finish).
  TaskPieces pieces_to_run = TaskPieces::all;
  bool start = true, finish = true;
  void* out_accumulator = nullptr;

  // CUDA only: slices run on the engine's kernels (with the local pieces), on the host.
  const EngineSlice* engine_slices = nullptr;
  std::int64_t num_engine_slices = 0;
};

// CPU: fp32 compute for f32/bf16/f16, fp64 for f64; parallel over independent tasks;
// deterministic. Rows of the local tensors that no task covers get out = 0, lse = -inf
// (forward) and zero gradients (backward).
void dilated_attention_tasks_forward_cpu(const DilatedAttentionTasksParams& params);
void dilated_attention_tasks_backward_cpu(const DilatedAttentionTasksParams& params);

// CUDA (every pointer on the current device except the patterns and the task arrays,
// which stay on the host): bf16 or f16 on tensor cores with fp32 accumulation, head_dim a
// multiple of 8 up to 128 and 16-byte aligned rows; lse and the backward's outputs f32.
// Work on the current stream. The backward adds with fp32 atomics (a key row can be a
// piece of several query ranges), so it is exact to rounding but not bitwise repeatable.
void dilated_attention_tasks_forward_cuda(const DilatedAttentionTasksParams& params);
void dilated_attention_tasks_backward_cuda(const DilatedAttentionTasksParams& params);

// The rows one rank sends (sequence parallelism's exchange buffers): rows first_row +
// row_step * j, j < count, of kv head `kv_head` of a (B, L, Hk, D) tensor, stored from
// row buffer_row of a contiguous (rows, B, D) buffer.
struct KvRowRunParams {
  std::int64_t buffer_row = 0, first_row = 0, row_step = 1, count = 0, kv_head = 0;
};

struct KvRowsParams {
  std::int64_t batch = 0, head_dim = 0;
  DType dtype = DType::f32;
  RowTensor local;                       // (B, L, Hk, D)
  void* buffer = nullptr;                // (buffer_rows, B, D) contiguous
  std::int64_t buffer_rows = 0;
  const KvRowRunParams* runs = nullptr;  // on the host
  std::int64_t num_runs = 0;
};

// CUDA: buffer rows = local rows (any float dtype); and local rows += buffer rows (f32 or
// f64; atomically, since a row can be sent to several peers).
void pack_kv_rows_cuda(const KvRowsParams& params);
void scatter_add_kv_rows_cuda(const KvRowsParams& params);

}  // namespace longnet::kernels
