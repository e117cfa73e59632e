// CPU threading for kernels: a parallel loop over independent work items with a static,
// deterministic partition (the same items go to the same chunk on every run, so results
// do not depend on scheduling). Implemented with OpenMP; the thread count defaults to the
// machine's cores or LONGNET_NUM_THREADS.
#pragma once

#include <cstdint>
#include <functional>

namespace longnet {

int num_threads();
// n >= 1; throws Error otherwise.
void set_num_threads(int n);

// Calls body(begin, end) on disjoint chunks covering [0, count), each of at least `grain`
// items (except the last), in parallel. An exception thrown by any chunk is rethrown on
// the calling thread after all chunks finished. Nested calls run serially.
void parallel_for(std::int64_t count, std::int64_t grain,
                  const std::function<void(std::int64_t begin, std::int64_t end)>& body);

// Index of the calling thread inside parallel_for (0 outside), and the number of threads
// parallel_for may use: for per-thread scratch buffers.
int thread_index();

}  // namespace longnet
