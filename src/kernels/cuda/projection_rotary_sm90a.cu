// The fused q/k/v projection with its rotary map on Hopper (projection_rotary.hpp; sm_90a).
//
// A persistent warp-specialised GEMM, y = x W^T + b, both operands K-major (x's rows and
// W's rows hold the reduced dimension contiguous):
//   - tiles of 128 rows x 256 output columns, taken in order tile = blockIdx.x + i * grid
//     with the column tiles of one row block consecutive (the SMs working at once share
//     x's rows in L2; W, 3.5 MB in issue 5, stays there);
//   - a producer warpgroup whose one thread fills a ring of kStages stages (x's 128 x 64
//     and W's 256 x 64 slices of the reduced dimension) by tensor-map copies with 128-byte
//     swizzle, the layout the tensor cores read; it runs ahead into the next tile while
//     the consumers write the last one;
//   - two consumer warpgroups of 64 rows each, two m64n128k16 products a 16-wide step, one
//     product group in flight while the stage before it is released;
//   - the epilogue: the bias (its pair loaded at the tile's start, so the main loop hides
//     the load), then the rotary pairs of the query and key columns in fp32 (each
//     thread's accumulator holds adjacent column pairs, (2j, 2j + 1): a pair is one
//     thread's), rounded once to bf16 into 128-byte-swizzled boxes that tensor-map stores
//     write out while the next tile multiplies (rows and columns past the tensor clipped).
// Factors: a thread's pairs within a head are j = 4 q + (lane mod 4), q = 0..7, the same in
// every head and tile. A warpgroup's 64 rows inside one sequence take their first row's
// factors (rotary_factors::fast_from_constants: query and key maps from one angle) times
// stepped ones, zeta_j^(+-k / scale_base) e^(i k theta_j) for row offsets k = 8 a + b
// (tables made on the host in double: device-side double pow and sincos made ptxas run
// for minutes at 20 GB); rows across a sequence's end take each row's own angle.
// Measured against cuBLASLt plus the rotary pass: docs/benchmarks.md, twenty-ninth session.
#include <cudaTypedefs.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "core/status_cuda.hpp"
#include "kernels/cuda/projection_rotary_launch.hpp"
#include "kernels/cuda/rotary_factors.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace longnet::kernels::cuda {
namespace {

constexpr int kBlockM = 128, kBlockN = 256, kBlockK = 64;
constexpr int kStages = 3;
constexpr int kConsumers = 2;                                                    // warpgroups of 64 rows
constexpr int kThreads = 128 * (1 + kConsumers);                                 // producer warpgroup first
constexpr int kStageA = kBlockM * kBlockK * 2, kStageB = kBlockN * kBlockK * 2;  // bytes
constexpr int kPairsPerThread = 8;  // of a head of 64 columns: j = 4 q + lane % 4
constexpr int kHeadDim = 64;        // the epilogue's pair layout (lane % 4 + 4 q) is for 64-column heads

struct alignas(1024) SharedStorage {
  __nv_bfloat16 a[kStages][kBlockM * kBlockK];  // 1024-byte aligned stages: the swizzle's period
  __nv_bfloat16 b[kStages][kBlockN * kBlockK];
  // The output tile for the tensor-map stores: per consumer, four boxes of 64 rows x 64
  // columns, 128-byte swizzled (conflict-free writes from the accumulators' layout).
  __nv_bfloat16 out[kConsumers][kBlockN / 64][64 * 64];
  std::uint32_t bias[kConsumers][kBlockN / 2];  // the tile's bias pairs, per consumer
  std::uint64_t full[kStages];
  std::uint64_t empty[kStages];
  double theta[kHeadDim / 2];  // the pairs' constants (rotary_factors::fast): theta_j
  float log2_zeta[kHeadDim / 2];
  // The maps' steps: row offset k of pair j is a complex factor zeta_j^(+-k / scale_base)
  // e^(i k theta_j) (query: +, key: -), for k = 8 a (level 0) and k = b (level 1), a, b < 8.
  float4 step[2][8][kHeadDim / 2];        // (query re, query im, key re, key im)
  float4 base[kConsumers][kHeadDim / 2];  // the factors of a consumer's first row
};

struct KernelParams {
  std::int64_t rows, out_features;
  int k_blocks, tiles_n, tiles;  // tiles: of kCluster row blocks (a cluster's) x one column block
  const __nv_bfloat16* bias;
  __nv_bfloat16* y;
  std::int64_t y_row_stride;
  std::int64_t query_columns, key_end;  // key columns: [query_columns, key_end)
  bool rotate;
  int seq_len;
  const float4* steps;  // SharedStorage::step's values (step_table)
  int stagger;          // k-blocks the second consumer starts behind the first (0..min(kStages, k_blocks))
  RotaryParams map;
};

__device__ __forceinline__ void tensor_copy_2d(void* shared, const CUtensorMap* map, int inner, int outer,
                                               std::uint64_t* barrier) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          shared_address(shared)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(inner), "r"(outer), "r"(shared_address(barrier))
      : "memory");
}

// The same copy landing in every CTA of the cluster in `mask` (same shared offsets, each
// CTA's own barrier at `barrier`'s offset counting the bytes).
__device__ __forceinline__ void tensor_copy_2d_multicast(void* shared, const CUtensorMap* map, int inner, int outer,
                                                         std::uint64_t* barrier, std::uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(shared_address(shared)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(inner), "r"(outer), "r"(shared_address(barrier)), "h"(mask)
      : "memory");
}

// One arrival on the barrier at `barrier`'s offset in cluster CTA `cta` (this one included).
__device__ __forceinline__ void mbarrier_arrive_in_cta(std::uint64_t* barrier, unsigned cta) {
  std::uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(shared_address(barrier)), "r"(cta));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}

// The 64 x 64 box at (inner, outer) of `map` from shared memory, in this thread's bulk group.
__device__ __forceinline__ void tensor_store_2d(const CUtensorMap* map, int inner, int outer, const void* shared) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                   reinterpret_cast<std::uint64_t>(map)),
               "r"(inner), "r"(outer), "r"(shared_address(shared))
               : "memory");
}

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}

__device__ __forceinline__ unsigned cluster_rank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// Rotates the pair (x0, x1) by the factors (cs, sn), as rotary.cu's kernel does.
__device__ __forceinline__ void rotate_pair(float& x0, float& x1, float cs, float sn) {
  const float a = x0, b = x1;
  x0 = a * cs - b * sn;
  x1 = b * cs + a * sn;
}

// kCluster CTAs (a cluster) take kCluster row blocks of the same column block: each loads
// its own rows of x and 1 / kCluster of W's tile, multicast to all of them, so each CTA
// reads 16 + 32 / kCluster KB a stage from L2 instead of 48 (the 128 x 256 tile's 85
// FLOP a byte of L2 traffic alone would need ~11.6 TB/s at the tensor cores' rate).
template <int kCluster>
__global__ void __launch_bounds__(kThreads, 1)
    projection_rotary_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                             const __grid_constant__ CUtensorMap y_map, const KernelParams p) {
  extern __shared__ unsigned char shared_raw[];
  auto& sm =
      *reinterpret_cast<SharedStorage*>((reinterpret_cast<std::uintptr_t>(shared_raw) + 1023) & ~std::uintptr_t{1023});
  const int warpgroup = static_cast<int>(threadIdx.x) / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&sm.full[s], 1);
      mbarrier_init(&sm.empty[s], 4 * kConsumers * kCluster);  // each consumer warp of the cluster
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  const unsigned rank = kCluster > 1 ? cluster_rank() : 0;
  const int cluster = static_cast<int>(blockIdx.x) / kCluster, clusters = static_cast<int>(gridDim.x) / kCluster;
  if (p.rotate && threadIdx.x < kHeadDim / 2) {
    // As the bf16 rotary kernel's packs of four pairs take them (rotary.cu: fast<4>).
    const int j = static_cast<int>(threadIdx.x);
    const rotary_factors::PairThetas thetas = rotary_factors::pair_thetas(p.map, j - j % 4);
    double theta = thetas.first;
    for (int i = j - j % 4; i < j; ++i) theta *= thetas.step;
    sm.theta[j] = theta;
    sm.log2_zeta[j] = rotary_factors::pair_log2_zeta(j, p.map.head_dim);
  }
  if (p.rotate) {
    for (int e = static_cast<int>(threadIdx.x); e < 2 * 8 * (kHeadDim / 2); e += kThreads) {
      (&sm.step[0][0][0])[e] = p.steps[e];
    }
  }
  if constexpr (kCluster > 1) {
    cluster_sync();  // every CTA's barriers initialised before any copy or arrival reaches them
  } else {
    __syncthreads();
  }

  if (warpgroup == 0) {  // producer
    release_registers<40>();
    if (threadIdx.x == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(&x_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(&w_map)) : "memory");
      RingPosition<kStages> ring;
      constexpr int kSliceRows = kBlockN / kCluster;  // of W's tile, this CTA's to load
      for (int tile = cluster; tile < p.tiles; tile += clusters) {
        const int m0 = ((tile / p.tiles_n) * kCluster + static_cast<int>(rank)) * kBlockM;
        const int n0 = (tile % p.tiles_n) * kBlockN;
        for (int kb = 0; kb < p.k_blocks; ++kb) {
          mbarrier_wait(&sm.empty[ring.stage], ring.phase ^ 1);  // free in every CTA of the cluster
          mbarrier_arrive_expect_bytes(&sm.full[ring.stage], kStageA + kStageB);
          tensor_copy_2d(sm.a[ring.stage], &x_map, kb * kBlockK, m0, &sm.full[ring.stage]);
          if constexpr (kCluster > 1) {
            tensor_copy_2d_multicast(sm.b[ring.stage] + rank * kSliceRows * kBlockK, &w_map, kb * kBlockK,
                                     n0 + static_cast<int>(rank) * kSliceRows, &sm.full[ring.stage],
                                     static_cast<std::uint16_t>((1u << kCluster) - 1));
          } else {
            tensor_copy_2d(sm.b[ring.stage], &w_map, kb * kBlockK, n0, &sm.full[ring.stage]);
          }
          ring.advance();
        }
      }
    }
  } else {
    claim_registers<232>();
    const int consumer = warpgroup - 1;
    const int thread = static_cast<int>(threadIdx.x) % 128, warp = thread / 32, lane = thread % 32;
    RingPosition<kStages> ring;
    float acc[2][64];
    // A stage is released in every CTA of the cluster: each one's copies wrote into all.
    const auto release = [&](int stage) {
      __syncwarp();
      if (lane == 0) {
        if constexpr (kCluster > 1) {
          for (unsigned cta = 0; cta < kCluster; ++cta) mbarrier_arrive_in_cta(&sm.empty[stage], cta);
        } else {
          mbarrier_arrive(&sm.empty[stage]);
        }
      }
    };
    for (int tile = cluster; tile < p.tiles; tile += clusters) {
      const int m0 = ((tile / p.tiles_n) * kCluster + static_cast<int>(rank)) * kBlockM;
      const int n0 = (tile % p.tiles_n) * kBlockN;
      const bool first_tile = tile == cluster;
      // Staggered consumers: the second starts its first tile `stagger` k-blocks behind the
      // first, so one's epilogue can run while the other multiplies (at most kStages: the
      // first needs the second's releases for more).
      if (first_tile && consumer == 1 && p.stagger > 0) named_barrier_sync(3, 256);
      // The tile's bias pair `thread` (its columns 2 thread, 2 thread + 1), loaded now so the
      // main loop hides the load's latency; into shared memory for the epilogue.
      std::uint32_t bias_pair = 0;
      if (p.bias != nullptr && n0 + 2 * thread < p.out_features) {
        bias_pair = *reinterpret_cast<const std::uint32_t*>(p.bias + n0 + 2 * thread);
      }
      // Main loop: one group of products in flight; the stage before it released.
      int pending_stage = -1;
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbarrier_wait(&sm.full[ring.stage], ring.phase);
        const std::uint64_t a_desc = matrix_descriptor(sm.a[ring.stage] + consumer * 64 * kBlockK, 16, 1024);
        const std::uint64_t b_desc = matrix_descriptor(sm.b[ring.stage], 16, 1024);
        wgmma_fence_registers(acc[0]);
        wgmma_fence_registers(acc[1]);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < kBlockK / 16; ++ks) {
          const int accumulate = kb > 0 || ks > 0;
          wgmma_ss_m64n128k16<__nv_bfloat16, 0, 0>(acc[0], descriptor_at(a_desc, ks * 32),
                                                   descriptor_at(b_desc, ks * 32), accumulate);
          wgmma_ss_m64n128k16<__nv_bfloat16, 0, 0>(acc[1], descriptor_at(a_desc, ks * 32),
                                                   descriptor_at(b_desc, 128 * kBlockK * 2 + ks * 32), accumulate);
        }
        wgmma_commit();
        wgmma_wait<1>();
        wgmma_fence_registers(acc[0]);
        wgmma_fence_registers(acc[1]);
        if (pending_stage >= 0) release(pending_stage);
        pending_stage = ring.stage;
        ring.advance();
        if (first_tile && consumer == 0 && p.stagger > 0 && kb == p.stagger - 1) {
          named_barrier_arrive(3, 256);
        }
      }
      wgmma_wait<0>();
      wgmma_fence_registers(acc[0]);
      wgmma_fence_registers(acc[1]);
      if (pending_stage >= 0) release(pending_stage);

      // Epilogue. This thread's rows: local r0 = 64 consumer + 16 warp + lane / 4 and r0 + 8;
      // columns 8 c + 2 (lane % 4) (+1) of acc[h], c = 0..15, plus 128 h.
      const int r0 = consumer * 64 + warp * 16 + lane / 4;
      if (thread == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");  // the last tile's stores read
      sm.bias[consumer][thread] = bias_pair;
      // This warpgroup's 64 rows in one sequence (positions first_position + 0..63): their
      // factors are its first row's times the steps; otherwise each row's from its own angle.
      const int first_position = (m0 + 64 * consumer) % p.seq_len;
      const bool rotated = p.rotate && n0 < p.key_end;
      const bool stepped = first_position + 63 < p.seq_len;
      if (rotated && stepped && thread < kHeadDim / 2) {
        float4 f;
        rotary_factors::fast_from_constants(p.map, sm.theta[thread], sm.log2_zeta[thread], first_position, f.x, f.y,
                                            &f.z, &f.w);
        sm.base[consumer][thread] = f;
      }
      named_barrier_sync(1 + consumer, 128);
      if (p.bias != nullptr) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
          for (int c = 0; c < 16; ++c) {
            const std::uint32_t bits = sm.bias[consumer][64 * h + 4 * c + lane % 4];
            const float b0 = __uint_as_float(bits << 16), b1 = __uint_as_float(bits & 0xFFFF0000u);
            acc[h][4 * c] += b0, acc[h][4 * c + 1] += b1, acc[h][4 * c + 2] += b0, acc[h][4 * c + 3] += b1;
          }
        }
      }
      if (rotated) {
        // Pair j = 4 q + lane % 4 of each of the tile's four heads sits in column group
        // c = 8 (head % 2) + q of acc[head / 2]; row half s in its elements 2 s, 2 s + 1.
        // Rows 16 warp + lane / 4 + 8 s of the warpgroup's 64: offset 8 (2 warp + s) + lane / 4.
#pragma unroll
        for (int q = 0; q < kPairsPerThread; ++q) {
          const int j = 4 * q + lane % 4;
          // (base x step b) x step 8 a, complex products (query's, key's) when stepped.
          float4 f = sm.base[consumer][j];
          const float4 b = sm.step[1][lane / 4][j];
          f = make_float4(f.x * b.x - f.y * b.y, f.y * b.x + f.x * b.y, f.z * b.z - f.w * b.w, f.w * b.z + f.z * b.w);
#pragma unroll
          for (int s = 0; s < 2; ++s) {
            float cs, sn, key_cs, key_sn;
            if (stepped) {
              const float4 a = sm.step[0][2 * warp + s][j];
              cs = f.x * a.x - f.y * a.y, sn = f.y * a.x + f.x * a.y;
              key_cs = f.z * a.z - f.w * a.w, key_sn = f.w * a.z + f.z * a.w;
            } else {
              const int n = (m0 + r0 + 8 * s) % p.seq_len;
              rotary_factors::fast_from_constants(p.map, sm.theta[j], sm.log2_zeta[j], n, cs, sn, &key_cs, &key_sn);
            }
#pragma unroll
            for (int head = 0; head < kBlockN / kHeadDim; ++head) {
              const std::int64_t column = n0 + head * kHeadDim;
              float& x0 = acc[head / 2][4 * (8 * (head % 2) + q) + 2 * s];
              float& x1 = acc[head / 2][4 * (8 * (head % 2) + q) + 2 * s + 1];
              if (column < p.query_columns) {
                rotate_pair(x0, x1, cs, sn);
              } else if (column < p.key_end) {
                rotate_pair(x0, x1, key_cs, key_sn);
              }
            }
          }
        }
      }
      // bf16 into the swizzled boxes (16-byte chunk k of box row r at chunk k ^ (r mod 8)).
      const int row_in_box = warp * 16 + lane / 4;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int c = 0; c < 16; ++c) {
          const int box = 2 * h + c / 8, chunk = c % 8;
          char* base = reinterpret_cast<char*>(sm.out[consumer][box]) + 4 * (lane % 4);
          *reinterpret_cast<std::uint32_t*>(base + row_in_box * 128 + 16 * (chunk ^ (row_in_box % 8))) =
              pack_bf16(acc[h][4 * c], acc[h][4 * c + 1]);
          *reinterpret_cast<std::uint32_t*>(base + (row_in_box + 8) * 128 + 16 * (chunk ^ ((row_in_box + 8) % 8))) =
              pack_bf16(acc[h][4 * c + 2], acc[h][4 * c + 3]);
        }
      }
      fence_proxy_async();  // the writes above are read next by the tensor-map stores
      named_barrier_sync(1 + consumer, 128);
      if (thread == 0) {  // rows and columns past the tensor's are not written
        for (int box = 0; box < kBlockN / 64; ++box) {
          tensor_store_2d(&y_map, n0 + 64 * box, m0 + 64 * consumer, sm.out[consumer][box]);
        }
        asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
      }
    }
    if (thread == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
  }
  if constexpr (kCluster > 1) {
    __syncwarp();
    cluster_sync();  // no CTA leaves while another may still copy into it or arrive on its barriers
  }
}

// SharedStorage::step for `map` on the device, made once per map (in double on the host) and
// kept for the process: a few maps, 8 KB each.
const float4* step_table(const RotaryParams& map, cudaStream_t stream) {
  using Key = std::tuple<int, double, double, std::int64_t>;
  static std::mutex mutex;
  static std::map<std::pair<int, Key>, float4*> tables;
  int device = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  const Key key{static_cast<int>(map.kind), map.base, map.scale_base, map.head_dim};
  const std::lock_guard<std::mutex> lock(mutex);
  float4*& table = tables[{device, key}];
  if (table == nullptr) {
    constexpr int kPairs = kHeadDim / 2;
    std::vector<float4> host(2 * 8 * kPairs);
    for (int level = 0; level < 2; ++level) {
      for (int k = 0; k < 8; ++k) {
        for (int j = 0; j < kPairs; ++j) {
          const double offset = level == 0 ? 8.0 * k : static_cast<double>(k);
          const double angle = offset * rotary_theta(map.base, j, map.head_dim);
          const double scale =
              map.kind == RotaryKind::xpos ? std::pow(xpos_zeta(j, map.head_dim), offset / map.scale_base) : 1.0;
          host[static_cast<std::size_t>((level * 8 + k) * kPairs + j)] =
              make_float4(static_cast<float>(scale * std::cos(angle)), static_cast<float>(scale * std::sin(angle)),
                          static_cast<float>(std::cos(angle) / scale), static_cast<float>(std::sin(angle) / scale));
        }
      }
    }
    void* memory = nullptr;
    LONGNET_CHECK(cudaMalloc(&memory, host.size() * sizeof(float4)));
    // A pageable cudaMemcpy may return before its DMA lands, and the kernel can run on a
    // non-blocking stream that would not wait for it; so the copy goes on the launch's stream
    // and is waited for, once per table, so that later launches on any stream find it there.
    LONGNET_CHECK(cudaMemcpyAsync(memory, host.data(), host.size() * sizeof(float4), cudaMemcpyHostToDevice, stream));
    LONGNET_CHECK(cudaStreamSynchronize(stream));
    table = static_cast<float4*>(memory);
  }
  return table;
}

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found{};
    LONGNET_CHECK(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &found));
    if (found == cudaDriverEntryPointSuccess) encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  });
  require(encode != nullptr, "projection_rotary_cuda: the driver offers no cuTensorMapEncodeTiled");
  return encode;
}

// A 2-D tensor map of bf16 rows (`columns` contiguous, `row_stride` elements apart), boxes
// of kBlockK columns x box_rows rows, 128-byte swizzle, zeros outside.
CUtensorMap rows_map(const void* data, std::int64_t rows, std::int64_t columns, std::int64_t row_stride, int box_rows) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(columns), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(row_stride) * 2};
  const cuuint32_t box[2] = {kBlockK, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult status =
      tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(data), dims, strides, box,
                           element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  require(status == CUDA_SUCCESS, "projection_rotary_cuda: cuTensorMapEncodeTiled failed (CUresult ",
          static_cast<int>(status), ") for ", rows, " x ", columns, " rows of stride ", row_stride);
  return map;
}

// Launches the kernel in clusters of kCluster CTAs, as many as are resident at once (an
// SM's CTA each), at most one a tile.
template <int kCluster>
void launch(const CUtensorMap& x_map, const CUtensorMap& w_map, const CUtensorMap& y_map, const KernelParams& k,
            int max_ctas, cudaStream_t stream) {
  constexpr std::size_t shared_bytes = sizeof(SharedStorage) + 1024;  // + the alignment's slack
  // Every launch, as the other sm90 kernels: the attribute belongs to the current device.
  LONGNET_CHECK(cudaFuncSetAttribute(projection_rotary_kernel<kCluster>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(shared_bytes)));
  cudaLaunchConfig_t config{};
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = kCluster, attribute.val.clusterDim.y = 1, attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  // Resident clusters, counted once per device.
  static std::mutex mutex;
  static std::map<int, int> resident_on;
  int device = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  int resident = 0;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = resident_on.find(device);
    if (found != resident_on.end()) {
      resident = found->second;
    } else {
      config.gridDim = dim3(static_cast<unsigned>(max_ctas / kCluster * kCluster));
      LONGNET_CHECK(cudaOccupancyMaxActiveClusters(&resident, projection_rotary_kernel<kCluster>, &config));
      resident_on.emplace(device, resident);
    }
  }
  const int clusters = std::max(1, std::min(k.tiles, resident));
  config.gridDim = dim3(static_cast<unsigned>(clusters * kCluster));
  LONGNET_CHECK(cudaLaunchKernelEx(&config, projection_rotary_kernel<kCluster>, x_map, w_map, y_map, k));
}

}  // namespace

bool projection_rotary_head_dim_supported_sm90(std::int64_t head_dim) { return head_dim == kHeadDim; }

void launch_projection_rotary_sm90(const ProjectionRotaryParams& p, cudaStream_t stream) {
  // One CTA a cluster: pairs multicasting W measured no faster (0.2395-0.2400 against
  // 0.2343-0.2354 ms with xPos on an H200; docs/benchmarks.md, twenty-ninth session), the
  // kernel is not L2-bound. LONGNET_PROJECTION_CLUSTER=2 runs the pairs, for measurement.
  static const int cluster = [] {
    const char* value = std::getenv("LONGNET_PROJECTION_CLUSTER");
    return value != nullptr && std::string_view(value) == "2" ? 2 : 1;
  }();
  // LONGNET_PROJECTION_STAGGER=1..3: the consumers' stagger in k-blocks (0, none, by
  // default), for measurement: whether the epilogues overlap the other's products.
  static const int stagger = [] {
    const char* value = std::getenv("LONGNET_PROJECTION_STAGGER");
    const int n = value != nullptr ? std::atoi(value) : 0;
    return std::clamp(n, 0, kStages);
  }();
  KernelParams k{};
  k.rows = p.rows, k.out_features = p.out_features;
  k.k_blocks = static_cast<int>((p.in_features + kBlockK - 1) / kBlockK);
  k.tiles_n = static_cast<int>((p.out_features + kBlockN - 1) / kBlockN);
  const std::int64_t row_blocks = (p.rows + kBlockM * cluster - 1) / (kBlockM * cluster);
  const std::int64_t tiles = row_blocks * k.tiles_n;
  require(tiles <= (std::int64_t{1} << 30), "projection_rotary_cuda: ", p.rows, " rows make too many tiles");
  k.tiles = static_cast<int>(tiles);
  k.bias = static_cast<const __nv_bfloat16*>(p.bias);
  k.y = static_cast<__nv_bfloat16*>(p.y);
  k.y_row_stride = p.y_row_stride;
  k.query_columns = p.query_columns, k.key_end = p.query_columns + p.key_columns;
  k.rotate = k.key_end > 0;
  k.map = p.query_map;
  require(p.rows + 2 * kBlockM < (std::int64_t{1} << 31), "projection_rotary_cuda: rows = ", p.rows,
          " exceeds the kernel's 32-bit row indices");
  k.seq_len = static_cast<int>(std::max<std::int64_t>(1, p.query_map.seq_len));
  k.steps = k.rotate ? step_table(p.query_map, stream) : nullptr;
  k.stagger = std::min(stagger, k.k_blocks);  // an arrival for the wait: none without k-blocks
  if (k.tiles == 0) return;
  const CUtensorMap x_map = rows_map(p.x, p.rows, p.in_features, p.x_row_stride, kBlockM);
  const CUtensorMap w_map = rows_map(p.weight, p.out_features, p.in_features, p.in_features, kBlockN / cluster);
  const CUtensorMap y_map = rows_map(p.y, p.rows, p.out_features, p.y_row_stride, 64);
  int device = 0, sms = 0;
  LONGNET_CHECK(cudaGetDevice(&device));
  LONGNET_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (cluster == 2) {
    launch<2>(x_map, w_map, y_map, k, sms, stream);
  } else {
    launch<1>(x_map, w_map, y_map, k, sms, stream);
  }
}

}  // namespace longnet::kernels::cuda
