// Hopper (sm_90) synchronisation primitives of the warp-specialised kernels (and of the
// LayerNorm backward's row pipeline): shared-memory mbarriers that track cp.async and bulk
// copies (a producer fills a ring of stages, consumers wait for a stage's "full" barrier
// and release it through its "empty" one), named barriers that order the consumer
// warpgroups' matrix products, and the register reallocation between the two roles
// (setmaxnreg, sm_90a).
//
// Phases: a barrier used for the k-th time (k = 0, 1, ...) completes phase k; waiting for
// parity (k & 1) waits for that completion. A fresh barrier counts its phase "-1" as
// complete, so a producer that waits for parity ((k & 1) ^ 1) on an empty barrier passes
// at once in the first round of the ring.
#pragma once

#include <cstdint>

#include "kernels/cuda/mma_sm80.cuh"

namespace longnet::kernels::cuda {

__device__ __forceinline__ void mbarrier_init(std::uint64_t* barrier, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(arrivals) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(barrier)) : "memory");
}

// One arrival on `barrier` once every cp.async this thread issued so far has landed. The
// barrier's arrival count must include it (.noinc: the pending count is not raised first).
__device__ __forceinline__ void mbarrier_arrive_on_copies(std::uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(shared_address(barrier)) : "memory");
}

// One arrival that also expects `bytes` of bulk copies (below) to land before the phase
// completes.
__device__ __forceinline__ void mbarrier_arrive_expect_bytes(std::uint64_t* barrier, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(bytes)
               : "memory");
}

// Bulk copy (sm_90's cp.async.bulk, one instruction for a contiguous run): `bytes` (a
// multiple of 16; both addresses 16-byte aligned) from global into shared memory, counted
// against `barrier`'s expected bytes as they land.
__device__ __forceinline__ void bulk_copy_to_shared(void* shared, const void* global, unsigned bytes,
                                                    std::uint64_t* barrier) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(shared)),
               "l"(global), "r"(bytes), "r"(shared_address(barrier))
               : "memory");
}

// Orders this thread's earlier shared-memory accesses (generic proxy) before its later
// bulk copies into the same memory (async proxy).
__device__ __forceinline__ void fence_shared_before_bulk_copies() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void mbarrier_wait(std::uint64_t* barrier, unsigned parity) {
  const std::uint32_t address = shared_address(barrier);
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred complete;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2;\n"
        "selp.u32 %0, 1, 0, complete;\n}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
  } while (done == 0);
}

// A position in a ring of kStages stages and the phase of its barriers.
template <int kStages>
struct RingPosition {
  int stage = 0;
  unsigned phase = 0;
  __device__ __forceinline__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
  // This thread is done with the stage: arrive on its "empty" barrier, move on.
  __device__ __forceinline__ void release(std::uint64_t* empty) {
    mbarrier_arrive(empty + stage);
    advance();
  }
};

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads, whole warps.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Waits for every cp.async this thread issued (a producer before it exits).
// A turn counter in global memory, across CTAs: wait until it reads `mine` (acquire), and
// hand the turn on (release) after this CTA's writes are fenced.
__device__ __forceinline__ void wait_for_turn(const int* turn, int mine) {
  int value;
  for (;;) {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(value) : "l"(turn) : "memory");
    if (value == mine) return;
    __nanosleep(64);
  }
}
__device__ __forceinline__ void pass_turn(int* turn, int next) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(turn), "r"(next) : "memory");
}

__device__ __forceinline__ void copy_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Register reallocation of a warpgroup (sm_90a; the kernel needs a register cap at entry,
// __launch_bounds__(threads, 1)): the producer gives registers back, consumers take them.
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

// Programmatic dependent launch (sm_90): a launch made with programmatic stream
// serialization may start while the launch before it in the stream finishes.
// allow_dependent_launch: this CTA lets the next such launch start (it does once every CTA
// of this grid has called it or exited). wait_for_previous_launch: blocks until the launch
// before this one has completed and its writes are visible; a no-op for other launches.
// A dependent grid must call it before it reads or writes what the previous one wrote, and
// every CTA calls it before exiting, so that this grid's completion implies the previous
// one's (what an ordinary launch after it waits for).
__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
__device__ __forceinline__ void wait_for_previous_launch() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// The first statement of a kernel that may be launched programmatically (launch_model in
// model_kernels_common.cuh): waits for the launch before it, then lets the next launch's
// CTAs start as this grid's finish. Every CTA runs it before touching memory, as
// wait_for_previous_launch asks. Nothing before sm_90, where no launch is programmatic.
__device__ __forceinline__ void begin_dependent_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  wait_for_previous_launch();
  allow_dependent_launch();
#endif
}

// Launches `kernel` on `stream`, with programmatic stream serialization when `overlap`
// (the previous launch in the stream may still be running; see wait_for_previous_launch).
template <class Kernel, class... Args>
void launch_after_previous(Kernel kernel, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                           bool overlap, Args... args) {
  if (!overlap) {
    kernel<<<grid, block, shared_bytes, stream>>>(args...);
    return;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  cudaLaunchKernelEx(&config, kernel, args...);
}

}  // namespace longnet::kernels::cuda
