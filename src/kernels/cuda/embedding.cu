// Token embedding on CUDA (embedding.hpp): the table in the accumulation precision (the
// f32 master table under bf16 activations), rows written in the activations' dtype.
// Backward, a deterministic segmented sum over the rows sorted by token (no atomics): the
// sorted positions are cut into fixed chunks of kPositionsPerChunk; pass 1 sums, per
// column, each piece (a token's run within one chunk) in sorted order; pass 2 adds each
// token's pieces in order and adds scale * sum to its table row. The order depends only on
// the tokens, not on the launch, and the work is spread evenly however skewed the tokens
// are (one thread per token and column made the most frequent token's run serial).
// Bytes: dout read once, (runs + chunks) * dim partial sums written and read: at 3 TB/s
// about 20 us for 32768 x 768 bf16.

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/embedding.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

// Thread i: P consecutive columns of one token's row (one 16-byte pack of the output when
// P = kPack<T>: a scalar bf16 store an element, with a 64-bit division each, took a 32768
// x 768 lookup 93 us on an H100 in the training step; packs, 35 us).
template <class T, int P>
__global__ void forward_kernel(EmbeddingParams p) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const C* table = static_cast<const C*>(p.table);
  T* out = static_cast<T*>(p.out);
  const std::int64_t groups = p.dim / P;
  const C scale = static_cast<C>(p.scale);
  LONGNET_GRID_STRIDE(i, p.count * groups) {
    const std::int64_t token = i / groups, g = i % groups;
    const C* row = table + static_cast<std::int64_t>(p.tokens[token]) * p.dim + g * P;
    if constexpr (P == 1) {
      out[i] = from_compute<T>(row[0] * scale);
    } else {
      Pack<T> pack;
#pragma unroll
      for (int e = 0; e < P; ++e) pack.v[e] = from_compute<T>(row[e] * scale);
      store_pack(out, i, pack);  // pack i: token * dim + g * P
    }
  }
}

constexpr std::int64_t kPositionsPerChunk = 64;

// Piece (run u, chunk k) is stored at slot u + k: for a fixed run the slots grow with k,
// and run u + 1 starts in (or after) the chunk where run u ends, so slots never collide;
// there are at most runs + chunks of them.

// The run holding sorted position s: the last u with run_starts[u] <= s.
__device__ std::int64_t run_of(const std::int64_t* run_starts, std::int64_t runs, std::int64_t s) {
  std::int64_t lo = 0, hi = runs - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (run_starts[mid] <= s) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Thread (chunk k, group g of P columns): the chunk's sorted positions in order.
template <class T, int P>
__global__ void backward_piece_sums_kernel(EmbeddingParams p, Compute<T>* partial) {
  begin_dependent_kernel();
  using C = Compute<T>;
  const T* dout = static_cast<const T*>(p.dout);
  const std::int64_t groups = p.dim / P, chunks = (p.count + kPositionsPerChunk - 1) / kPositionsPerChunk;
  LONGNET_GRID_STRIDE(i, chunks * groups) {
    const std::int64_t chunk = i / groups, g = i % groups;
    const std::int64_t begin = chunk * kPositionsPerChunk, end = min(p.count, begin + kPositionsPerChunk);
    std::int64_t run = run_of(p.run_starts, p.runs, begin);
    C sum[P] = {};
    for (std::int64_t s = begin; s < end; ++s) {
      const T* row = dout + static_cast<std::int64_t>(p.order[s]) * p.dim;
      if constexpr (P == 1) {
        sum[0] += to_compute(row[g]);
      } else {
        const Pack<T> pack = load_pack(row, g);
        for (int e = 0; e < P; ++e) sum[e] += to_compute(pack.v[e]);
      }
      if (s + 1 == end || s + 1 == p.run_starts[run + 1]) {  // the piece ends
        for (int e = 0; e < P; ++e) {
          partial[(run + chunk) * p.dim + g * P + e] = sum[e];
          sum[e] = 0;
        }
        ++run;
      }
    }
  }
}

// Thread (run u, column c): u's pieces in order, into the token's table row.
template <class T>
__global__ void backward_run_totals_kernel(EmbeddingParams p, const Compute<T>* partial) {
  begin_dependent_kernel();
  using C = Compute<T>;
  C* dtable = static_cast<C*>(p.dtable);
  LONGNET_GRID_STRIDE(i, p.runs * p.dim) {
    const std::int64_t run = i / p.dim, c = i % p.dim;
    const std::int64_t first = p.run_starts[run] / kPositionsPerChunk;
    const std::int64_t last = (p.run_starts[run + 1] - 1) / kPositionsPerChunk;
    C sum = 0;
#pragma unroll 8
    for (std::int64_t chunk = first; chunk <= last; ++chunk) sum += partial[(run + chunk) * p.dim + c];
    dtable[static_cast<std::int64_t>(p.tokens[p.order[p.run_starts[run]]]) * p.dim + c] +=
        sum * static_cast<C>(p.scale);
  }
}

}  // namespace

void embedding_forward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  dispatch_activation(p.dtype, "embedding_forward", [&](auto tag) {
    using T = decltype(tag);
    const cudaStream_t stream = current_cuda_stream();
    if (p.dim % kPack<T> == 0 && aligned16(p.out)) {
      launch_model(forward_kernel<T, kPack<T>>, grid_for(p.count * p.dim / kPack<T>), kThreads, 0, stream, p);
    } else {
      launch_model(forward_kernel<T, 1>, grid_for(p.count * p.dim), kThreads, 0, stream, p);
    }
  });
  check_launch();
}

void embedding_backward_cuda(const EmbeddingParams& p) {
  if (p.count == 0) return;
  require(p.order != nullptr && p.run_starts != nullptr, "embedding_backward on CUDA needs order and run_starts");
  dispatch_activation(p.dtype, "embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    using C = Compute<T>;
    const cudaStream_t stream = current_cuda_stream();
    const std::int64_t chunks = (p.count + kPositionsPerChunk - 1) / kPositionsPerChunk;
    const Tensor partial =
        Tensor::empty({(p.runs + chunks) * p.dim}, dtype_of<C>::value, Device::cuda(current_device()));
    // dout rows are contiguous: 16-byte packs when the rows are whole packs.
    if (p.dim % kPack<T> == 0 && aligned16(p.dout)) {
      launch_model(backward_piece_sums_kernel<T, kPack<T>>, grid_for(chunks * p.dim / kPack<T>), kThreads, 0, stream, p,
                   partial.data<C>());
    } else {
      launch_model(backward_piece_sums_kernel<T, 1>, grid_for(chunks * p.dim), kThreads, 0, stream, p,
                   partial.data<C>());
    }
    launch_model(backward_run_totals_kernel<T>, grid_for(p.runs * p.dim), kThreads, 0, stream, p, partial.data<C>());
  });
  check_launch();
}

}  // namespace longnet::kernels
