// Warp-level building blocks of the tensor-core attention kernels (sm_80 instructions,
// which sm_90 runs): asynchronous global->shared copies, ldmatrix fragment loads,
// m16n8k16 bf16/f16 MMAs with fp32 accumulation, and the XOR swizzle of shared tiles.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 * group + thread_in_group):
//   A (16x16): a0 = (group,   2t..2t+1)  a1 = (group+8, 2t..)  a2 = (group, 8+2t..)  a3 = (group+8, 8+2t..)
//   B (16x8):  b0 = (k = 2t..2t+1, n = group)  b1 = (k = 8+2t.., n = group)
//   C (16x8):  c0,c1 = (group, 2t..2t+1)  c2,c3 = (group+8, 2t..2t+1)
// so the C fragments of two adjacent n-tiles are exactly the A fragment of one k-step:
// the softmax probabilities go from the QK^T accumulators to the PV MMA without shuffles.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace longnet::kernels::cuda {

// ---- shared-memory tiles: rows of kHeadDim 16-bit elements in 16-byte chunks ---------
// Chunk c of row r is stored at chunk (c ^ (r & 7)): the 8 rows an ldmatrix reads at one
// logical chunk land in 8 different bank groups.
template <int kHeadDim>
__device__ __forceinline__ int swizzled_offset(int row, int chunk) {
  constexpr int kChunks = kHeadDim / 8;
  return row * kHeadDim + ((chunk ^ (row & 7)) & (kChunks - 1)) * 8;
}

__device__ __forceinline__ std::uint32_t shared_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16-byte async copy; `valid` false writes zeros (rows past the end of a sequence).
__device__ __forceinline__ void copy_async_16(void* shared, const void* global, bool valid) {
  const int source_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}

// 4-byte async copy (through L1: .cg takes 16 bytes only); `valid` false writes a zero.
__device__ __forceinline__ void copy_async_4(void* shared, const void* global, bool valid) {
  const int source_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}

__device__ __forceinline__ void copy_async_8(void* shared, const void* global, bool valid) {
  const int source_bytes = valid ? 8 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}

__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void load_matrix_x4(std::uint32_t (&out)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(out[0]), "=r"(out[1]), "=r"(out[2]), "=r"(out[3])
               : "r"(shared_address(shared)));
}

// stmatrix (sm_90): four 8 x 8 b16 matrices; register i holds this lane's two elements
// (row lane / 4, columns 2 (lane % 4), + 1) of matrix i, and lane 8 i + j gives the address
// of row j of matrix i (16 bytes).
__device__ __forceinline__ void store_matrix_x4(std::uint32_t shared, const std::uint32_t (&in)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(shared), "r"(in[0]),
               "r"(in[1]), "r"(in[2]), "r"(in[3])
               : "memory");
}

__device__ __forceinline__ void load_matrix_x4_transposed(std::uint32_t (&out)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(out[0]), "=r"(out[1]), "=r"(out[2]), "=r"(out[3])
               : "r"(shared_address(shared)));
}

// ---- MMA: C (16x8 fp32) += A (16x16) * B (16x8) -------------------------------------
template <class Element>
struct Mma;

template <>
struct Mma<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&v);
  }
  __device__ __forceinline__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ __forceinline__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct Mma<__half> {
  __device__ __forceinline__ static void run(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static std::uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&v);
  }
  __device__ __forceinline__ static float to_float(__half x) { return __half2float(x); }
  __device__ __forceinline__ static __half from_float(float x) { return __float2half_rn(x); }
};

// ---- small helpers -------------------------------------------------------------------
__device__ __forceinline__ float warp_group_max(float x) {  // over the 4 lanes of a row group
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}

__device__ __forceinline__ float warp_group_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// 2^x with the special-function unit (about 2 ulp; -inf gives +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// A row's log-sum-exp as the backward copies it (natural log) in the log2 units of
// fast_exp2; a block-sparse row without keys (lse = -inf) gets +inf, so its P is 0.
__device__ __forceinline__ float lse_in_log2(float lse) {
  constexpr float kLog2e = 1.4426950408889634f;
  return lse == -INFINITY ? INFINITY : lse * kLog2e;
}

}  // namespace longnet::kernels::cuda
