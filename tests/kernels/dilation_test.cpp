// The shared pattern math: offsets and head groups as DESIGN 2.1/2.2 define them, and
// virtual sequences that cover exactly the active positions.
#include "longnet/kernels/dilation.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "support/dilated_oracle.hpp"
#include "support/random_problems.hpp"

namespace longnet::kernels {
namespace {

TEST(Dilation, LongNetOffsetsSplitHeadsIntoRContiguousGroups) {
  // H = 8, r = 4: groups of 2 heads.
  const std::int64_t expected[8] = {0, 0, 1, 1, 2, 2, 3, 3};
  for (int h = 0; h < 8; ++h) EXPECT_EQ(longnet_offset(h, 8, 4), expected[h]);
  // H = 12, r = 16 > H: head h gets offset h.
  for (int h = 0; h < 12; ++h) EXPECT_EQ(longnet_offset(h, 12, 16), h);
  // H = 5, r = 3: ceil(5/3) = 2 heads per group, offsets 0,0,1,1,2.
  const std::int64_t uneven[5] = {0, 0, 1, 1, 2};
  for (int h = 0; h < 5; ++h) EXPECT_EQ(longnet_offset(h, 5, 3), uneven[h]);
  // H = 7, r = 4: ceil(7/4) = 2, offsets 0,0,1,1,2,2,3 (every offset used); H = 9, r = 4:
  // ceil(9/4) = 3, offsets 0,0,0,1,1,1,2,2,2: offset 3 gets no head.
  EXPECT_EQ(longnet_offset(6, 7, 4), 3);
  EXPECT_EQ(longnet_offset(8, 9, 4), 2);
  EXPECT_EQ(longnet_offset(0, 1, 1), 0);
}

TEST(Dilation, HeadGroupsAreContiguousFirstOnesLarger) {
  // H = 8, G = 3: sizes 3, 3, 2.
  const std::int64_t expected[8] = {0, 0, 0, 1, 1, 1, 2, 2};
  for (int h = 0; h < 8; ++h) EXPECT_EQ(head_group_of(h, 8, 3), expected[h]);
  for (std::int64_t H = 1; H <= 20; ++H) {
    for (std::int64_t G = 1; G <= H; ++G) {
      std::vector<std::int64_t> sizes(static_cast<std::size_t>(G), 0);
      std::int64_t previous = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t g = head_group_of(h, H, G);
        ASSERT_GE(g, previous);
        ASSERT_LT(g, G);
        previous = g;
        ++sizes[static_cast<std::size_t>(g)];
      }
      for (std::int64_t g = 0; g < G; ++g) {
        EXPECT_EQ(sizes[static_cast<std::size_t>(g)], H / G + (g < H % G ? 1 : 0)) << "H=" << H << " G=" << G;
      }
    }
  }
  EXPECT_EQ(pattern_offset(DilatedMode::head_groups, 2, 3, 2, 7, 8), 0);   // group 2, offset 2 mod 2
  EXPECT_EQ(pattern_offset(DilatedMode::head_groups, 1, 3, 4, 7, 8), -1);  // head 7 is not in group 1
}

// The CUDA kernels' 32-bit forms against the 64-bit ones, huge rates and segments included
// (a dense pattern's w is huge).
TEST(Dilation, ThirtyTwoBitFormsMatch) {
  const std::int64_t huge = std::int64_t{1} << 40;
  for (const DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups}) {
    for (std::int64_t H = 1; H <= 20; ++H) {
      for (std::int64_t G = 1; G <= 6; ++G) {
        for (const std::int64_t r : {std::int64_t{1}, std::int64_t{2}, std::int64_t{3}, std::int64_t{5}, std::int64_t{12},
                                     std::int64_t{40}, huge}) {
          for (std::int64_t i = 0; i < G; ++i) {
            for (std::int64_t h = 0; h < H; ++h) {
              ASSERT_EQ(pattern_offset_32(mode, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(G), rate_32(r),
                                          static_cast<std::uint32_t>(h), static_cast<std::uint32_t>(H)),
                        pattern_offset(mode, i, G, r, h, H))
                  << "H=" << H << " G=" << G << " r=" << r << " i=" << i << " h=" << h;
            }
          }
        }
      }
    }
  }
  for (const std::int64_t N : {std::int64_t{1}, std::int64_t{7}, std::int64_t{100}, std::int64_t{65537}}) {
    for (const std::int64_t w : {std::int64_t{1}, std::int64_t{3}, std::int64_t{64}, std::int64_t{5000}, huge}) {
      for (const std::int64_t r : {std::int64_t{1}, std::int64_t{2}, std::int64_t{7}, std::int64_t{64}, huge}) {
        if (r > w) continue;
        for (std::int64_t o = 0; o < std::min<std::int64_t>(r, 9); ++o) {
          for (std::int64_t s = 0; s < std::min<std::int64_t>(segment_count(N, w), 4); ++s) {
            const std::int64_t start = s * w;
            const auto rows = static_cast<std::uint32_t>(std::min(N - start, w));
            ASSERT_EQ(virtual_length_32(rows, static_cast<std::uint32_t>(o), rate_32(r)),
                      virtual_sequence(N, DilationPattern{w, r}, o, s).length)
                << "N=" << N << " w=" << w << " r=" << r << " o=" << o << " s=" << s;
          }
        }
      }
    }
  }
}

TEST(Dilation, VirtualSequencesCoverActivePositionsExactlyOnce) {
  for (std::int64_t N : {1, 2, 7, 16, 33, 100}) {
    for (std::int64_t w : {1, 2, 3, 5, 16, 64, 200}) {
      for (std::int64_t r = 1; r <= std::min<std::int64_t>(w, 7); ++r) {
        for (std::int64_t o = 0; o < r; ++o) {
          std::multiset<std::int64_t> covered;
          const DilationPattern pattern{w, r};
          for (std::int64_t s = 0; s < segment_count(N, w); ++s) {
            const VirtualSequence vs = virtual_sequence(N, pattern, o, s);
            for (std::int64_t j = 0; j < vs.length; ++j) {
              const std::int64_t row = vs.first_row + j * vs.row_step;
              ASSERT_LT(row, N);
              ASSERT_EQ(row / w, s) << "row leaves its segment";
              covered.insert(row);
            }
          }
          std::multiset<std::int64_t> active;
          for (std::int64_t p = 0; p < N; ++p) {
            if ((p % w) % r == o) active.insert(p);
          }
          ASSERT_EQ(covered, active) << "N=" << N << " w=" << w << " r=" << r << " o=" << o;
        }
      }
    }
  }
}

TEST(Dilation, HugeSegmentLengthIsOneSegment) {
  EXPECT_EQ(segment_count(1000, INT64_MAX), 1);
  const VirtualSequence vs = virtual_sequence(1000, {INT64_MAX, 1}, 0, 0);
  EXPECT_EQ(vs.length, 1000);
  EXPECT_EQ(ceil_div(7, 2), 4);
  EXPECT_EQ(ceil_div(0, 5), 0);
}

TEST(Dilation, AttendedPairsMatchTheOracleCountMatrix) {
  for (std::uint64_t seed = 0; seed < 60; ++seed) {
    testing::ProblemLimits limits;
    limits.max_seq_len = 90;
    const testing::DilatedProblem p = testing::random_problem(seed, limits);
    for (std::int64_t h = 0; h < p.heads; ++h) {
      const auto count = testing::dilated_count_matrix(p, h);
      std::int64_t total = 0;
      for (int c : count) total += c;
      EXPECT_EQ(attended_pairs_per_head(p.seq_len, p.heads, h, p.patterns.data(),
                                        static_cast<std::int64_t>(p.patterns.size()), p.mode, p.causal),
                total)
          << testing::describe(p) << " head " << h;
    }
  }
}

// The rows the forward's work items write zeros to (unreached_rows_of_item): over the items
// of every non-empty virtual sequence of a segment, exactly the rows the head's pattern
// does not reach, each once, whatever the segment, rate, offset and item size.
TEST(Dilation, WorkItemsZeroEveryUnreachedRowOnce) {
  std::uint64_t state = 12345;
  auto next = [&](std::int64_t bound) {  // xorshift, uniform enough for sizes
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<std::int64_t>(state % static_cast<std::uint64_t>(bound));
  };
  for (int trial = 0; trial < 400; ++trial) {
    const std::int64_t rate = 1 + next(9);
    const std::int64_t w = rate + next(700);
    const std::int64_t N = 1 + next(3 * w);
    const std::int64_t offset = next(rate);
    const std::int64_t block_m = trial % 2 == 0 ? 128 : 192;
    const DilationPattern pattern{w, rate};
    for (std::int64_t segment = 0; segment < segment_count(N, w); ++segment) {
      const VirtualSequence vs = virtual_sequence(N, pattern, offset, segment);
      if (vs.length == 0) continue;  // no items: the host fills such outputs instead
      const std::int64_t start = segment * w, rows = std::min(w, N - start);
      std::vector<int> zeroed(static_cast<std::size_t>(rows), 0);
      for (std::int64_t q = 0; q < vs.length; q += block_m) {
        const UnreachedRowsOfItem u = unreached_rows_of_item(q, std::min(vs.length, q + block_m), rate, offset);
        for (std::uint32_t i = 0; i < u.count; ++i) {
          const std::int64_t t = u.row(i);
          ASSERT_GE(t, 0);
          if (t < rows) ++zeroed[static_cast<std::size_t>(t)];
        }
      }
      for (std::int64_t t = 0; t < rows; ++t) {
        const int expected = t % rate == offset ? 0 : 1;  // reached rows are written by the attention
        ASSERT_EQ(zeroed[static_cast<std::size_t>(t)], expected)
            << "N " << N << " w " << w << " r " << rate << " offset " << offset << " segment " << segment << " row " << t;
      }
    }
  }
}

// longest_virtual_length: the longest of a pattern's virtual sequences (every segment, every
// offset below the rate), including a last segment shorter than the rest and segments
// longer than the sequence.
TEST(Dilation, LongestVirtualLengthIsTheLongestVirtualSequence) {
  for (const std::int64_t seq_len : {1, 7, 64, 100, 2048, 2049}) {
    for (const std::int64_t segment : {1, 3, 64, 1000, 4096}) {
      for (const std::int64_t rate : {1, 2, 3, 12, 4096}) {
        if (rate > segment) continue;  // a pattern has r <= w
        const DilationPattern pattern{segment, rate};
        std::int64_t longest = 0;
        for (std::int64_t s = 0; s < segment_count(seq_len, segment); ++s) {
          for (std::int64_t offset = 0; offset < rate; ++offset) {
            longest = std::max(longest, virtual_sequence(seq_len, pattern, offset, s).length);
          }
        }
        EXPECT_EQ(longest_virtual_length(seq_len, pattern), longest)
            << "seq_len " << seq_len << ", segment " << segment << ", rate " << rate;
      }
    }
  }
}

// consumer_key_tiles (the Hopper forward's warpgroups of 64 rows in items of 192 or 128,
// tiles of 128 keys), against the pairs each warpgroup attends: every key a valid row of it
// attends lies in its tiles, its last tile holds one (causal: no tile is all masked), it
// never exceeds the item's tiles, and rows all past the sequence take one tile.
TEST(Dilation, ConsumerKeyTilesCoverExactlyTheKeysTheirRowsAttend) {
  constexpr int kRows = 64, kBlockN = 128;
  for (const bool causal : {false, true}) {
    for (const int consumers : {2, 3}) {
      const int block_m = kRows * consumers;
      for (const int length : {1, 63, 64, 65, 127, 128, 129, 191, 192, 193, 320, 2048, 2731}) {
        for (int q_begin = 0; q_begin < length; q_begin += block_m) {
          const int key_end = causal ? std::min(length, q_begin + block_m) : length;
          const int item_tiles = (key_end + kBlockN - 1) / kBlockN;
          for (int c = 0; c < consumers; ++c) {
            const int first = q_begin + c * kRows;
            const int tiles = consumer_key_tiles(causal, length, first, kRows, item_tiles, kBlockN);
            SCOPED_TRACE(::testing::Message()
                         << "causal " << causal << ", length " << length << ", rows from " << first);
            EXPECT_GE(tiles, 1);
            EXPECT_LE(tiles, item_tiles);
            int last_key = -1;  // the last key a valid row of the warpgroup attends
            for (int row = first; row < std::min(length, first + kRows); ++row) {
              last_key = std::max(last_key, causal ? row : length - 1);
            }
            if (last_key < 0) {
              EXPECT_EQ(tiles, 1);
            } else {
              EXPECT_EQ(tiles, last_key / kBlockN + 1);
            }
          }
        }
      }
    }
  }
}

// The causal forward's cost order (cost_ordered_item): every (sequence, tile) once; the
// items of a group of `group` consecutive sequences (the last group shorter) come before the
// next group's, heaviest tile first and sequences in order within a tile; one group (0, or
// a group as large as the launch) is the order across all sequences that the kernel used
// before groups: sequence local % sequences, tile tiles - 1 - local / sequences.
TEST(Dilation, CostOrderedItemsTakeEachTileOnceGroupByGroup) {
  for (const std::int64_t sequences : {1, 5, 12, 32, 33, 192}) {
    for (const std::int64_t tiles : {1, 3, 11}) {
      for (const std::int64_t group : {0, 1, 4, 32, 200}) {
        const std::int64_t size = group <= 0 || group > sequences ? sequences : group;
        std::vector<int> seen(static_cast<std::size_t>(sequences * tiles), 0);
        for (std::int64_t local = 0; local < sequences * tiles; ++local) {
          const CostOrderedItem item = cost_ordered_item(local, sequences, tiles, group);
          ASSERT_GE(item.sequence, 0);
          ASSERT_LT(item.sequence, sequences);
          ASSERT_GE(item.tile, 0);
          ASSERT_LT(item.tile, tiles);
          ++seen[static_cast<std::size_t>(item.sequence * tiles + item.tile)];
          const std::int64_t first = item.sequence / size * size;  // the item's group
          const std::int64_t members = std::min(size, sequences - first);
          const std::int64_t rank = (tiles - 1 - item.tile) * members + (item.sequence - first);
          EXPECT_EQ(local, first * tiles + rank) << sequences << " sequences, " << tiles << " tiles, group " << group;
          if (size == sequences) {
            EXPECT_EQ(item.sequence, local % sequences);
            EXPECT_EQ(item.tile, tiles - 1 - local / sequences);
          }
        }
        for (const int n : seen) EXPECT_EQ(n, 1);
      }
    }
  }
}

TEST(Dilation, ForwardCostGroupsAreEqualL2SizedGroupsOnlyWhereKAndVExceedL2) {
  constexpr std::int64_t MB = std::int64_t{1} << 20;
  // The training configuration (head dim 64, 16-bit K and V): the first two patterns' K and
  // V exceed 32 MB and take groups of 32 sequences (16 MB); the others' fit and take none.
  const std::int64_t rows_2048 = 2 * 2048 * 64 * 2, rows_2731 = 2 * 2731 * 64 * 2;
  EXPECT_EQ(forward_cost_group(rows_2048, 192), 32);  // w 2048, r 1: 96 MB
  EXPECT_EQ(forward_cost_group(rows_2048, 96), 32);   // w 4096, r 2: 48 MB
  EXPECT_EQ(forward_cost_group(rows_2048, 48), 0);    // w 8192, r 4: 24 MB
  EXPECT_EQ(forward_cost_group(rows_2731, 24), 0);    // w 16384, r 6: 16.8 MB
  EXPECT_EQ(forward_cost_group(rows_2731, 12), 0);    // w 32768, r 12
  EXPECT_EQ(forward_cost_group(0, 100), 0);
  EXPECT_EQ(forward_cost_group(MB, 1), 0);
  for (const std::int64_t bytes : {std::int64_t{1000}, std::int64_t{300} * 1024, MB / 2, MB, 5 * MB, 40 * MB}) {
    for (const std::int64_t sequences : {2, 7, 33, 48, 97, 192, 1000, 4096}) {
      const std::int64_t group = forward_cost_group(bytes, sequences);
      if (bytes * sequences <= 32 * MB) {
        EXPECT_EQ(group, 0) << bytes << " bytes, " << sequences << " sequences";
        continue;
      }
      const std::int64_t most = std::max<std::int64_t>(1, 16 * MB / bytes);
      const std::int64_t fewest_groups = (sequences + most - 1) / most;
      if (fewest_groups == 1) {
        EXPECT_EQ(group, 0) << bytes << " bytes, " << sequences << " sequences";
        continue;
      }
      ASSERT_GT(group, 0) << bytes << " bytes, " << sequences << " sequences";
      EXPECT_LE(group, most) << bytes << " bytes, " << sequences << " sequences";
      // As few groups as fit, of sizes within one group count of each other.
      const std::int64_t groups = (sequences + group - 1) / group;
      EXPECT_EQ(groups, fewest_groups) << bytes << " bytes, " << sequences << " sequences";
      const std::int64_t last = sequences - (groups - 1) * group;
      EXPECT_GE(last, group - groups + 1) << bytes << " bytes, " << sequences << " sequences";
    }
  }
}

}  // namespace
}  // namespace longnet::kernels
