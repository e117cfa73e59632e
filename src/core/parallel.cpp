// parallel_for on OpenMP with a static partition: chunk c always covers the same items.
#include "longnet/core/parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <mutex>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

int initial_threads() {
  if (const char* env = std::getenv("LONGNET_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  return std::max(1, omp_get_num_procs());
}

int& thread_count() {
  static int count = initial_threads();
  return count;
}

}  // namespace

int num_threads() { return thread_count(); }

void set_num_threads(int n) {
  require(n >= 1, "num_threads = ", n, ": must be >= 1");
  thread_count() = n;
}

int thread_index() { return omp_in_parallel() ? omp_get_thread_num() : 0; }

void parallel_for(std::int64_t count, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body) {
  if (count <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t max_chunks = (count + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<std::int64_t>(thread_count(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) {
    body(0, count);
    return;
  }
  std::exception_ptr failure;
  std::mutex failure_mutex;
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t t = omp_get_thread_num();
    const std::int64_t n = omp_get_num_threads();
    const std::int64_t begin = count * t / n;
    const std::int64_t end = count * (t + 1) / n;
    if (begin < end) {
      try {
        body(begin, end);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace longnet
