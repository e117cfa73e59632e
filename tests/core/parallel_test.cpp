// parallel_for covers every item once, partitions deterministically and propagates errors.
#include "longnet/core/parallel.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <vector>

#include "longnet/core/error.hpp"

namespace longnet {
namespace {

TEST(Parallel, EveryItemExactlyOnce) {
  for (std::int64_t count : {0, 1, 7, 1000, 12345}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
    parallel_for(count, 3, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(Parallel, PartitionIsDeterministic) {
  auto chunks = [] {
    std::set<std::pair<std::int64_t, std::int64_t>> out;
    std::mutex m;
    parallel_for(1000, 1, [&](std::int64_t b, std::int64_t e) {
      const std::lock_guard<std::mutex> lock(m);
      out.insert({b, e});
    });
    return out;
  };
  EXPECT_EQ(chunks(), chunks());
}

TEST(Parallel, ExceptionsReachTheCaller) {
  EXPECT_THROW(parallel_for(100, 1,
                            [](std::int64_t b, std::int64_t e) {
                              if (b <= 50 && 50 < e) throw Error("item 50 failed");
                            }),
               Error);
}

TEST(Parallel, ThreadCountValidation) {
  const int saved = num_threads();
  EXPECT_THROW(set_num_threads(0), Error);
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  set_num_threads(saved);
}

}  // namespace
}  // namespace longnet
