// BlockMask and the generators: validation with clear errors, the CSR and transposed
// lists, element-level semantics against the oracle's definition, every generator
// against a brute-force statement of its rule (causal and not, Bq != Bk, N not a multiple
// of the block sizes), reproducible random masks, unions, and the mask file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "attention/block_sparse_oracle.hpp"
#include "longnet/attention/block_patterns.hpp"
#include "longnet/io/safetensors.hpp"

namespace longnet::testing {
namespace {

// Every element decision of `mask` for query head `head` as the oracle defines it, and
// allows() agrees with it.
std::vector<bool> checked_allowed(const BlockMask& mask, std::int64_t head) {
  const std::vector<bool> allowed = block_sparse_allowed(mask, head);
  const std::int64_t N = mask.seq_len();
  std::int64_t count = 0;
  for (std::int64_t q = 0; q < N; ++q) {
    for (std::int64_t k = 0; k < N; ++k) {
      EXPECT_EQ(mask.allows(head, q, k), allowed[static_cast<std::size_t>(q * N + k)]) << "q=" << q << " k=" << k;
      count += allowed[static_cast<std::size_t>(q * N + k)];
    }
  }
  EXPECT_EQ(mask.attended_pairs(head), count) << mask.describe();
  return allowed;
}

template <class Rule>
void expect_rule(const BlockMask& mask, std::int64_t heads, Rule&& rule, const std::string& what) {
  const std::int64_t N = mask.seq_len();
  for (std::int64_t h = 0; h < heads; ++h) {
    const std::vector<bool> allowed = checked_allowed(mask, h);
    for (std::int64_t q = 0; q < N; ++q) {
      for (std::int64_t k = 0; k < N; ++k) {
        const bool expected = rule(h, q, k) && (!mask.grid().causal || k <= q);
        ASSERT_EQ(allowed[static_cast<std::size_t>(q * N + k)], expected)
            << what << ": head " << h << " q=" << q << " k=" << k << " (" << mask.describe() << ")";
      }
    }
  }
}

TEST(BlockMask, ListsAreValidatedWithClearErrors) {
  const BlockGrid grid{100, 32, 32, false};  // 4 x 4 blocks, the last ones 4 positions long
  auto lists = [](std::vector<std::vector<std::int64_t>> rows) { return BlockMask::Lists{std::move(rows)}; };
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{0}, {1}, {4}, {}}));
            }).find("key block 4 is out of range [0, 4)"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{0, 1, 0}, {}, {}, {}}));
            }).find("key block 0 is listed twice"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{0}, {}}));
            }).find("2 query blocks listed"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{-1}, {}, {}, {}}));
            }).find("key block -1"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{0, 1}, {}, {}, {}}), {}, BlockMask::Flags{{{true}, {}, {}, {}}});
            }).find("1 partial flags for 2 key blocks"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists({0, 32, 32, false}, lists({}));
            }).find("seq_len = 0"),
            std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists({10, 0, 32, false}, lists({{}}));
            }).find("block_q = 0"),
            std::string::npos);
  EXPECT_NE(message([&] { BlockMask::from_lists(grid, {}); }).find("no heads"), std::string::npos);
  EXPECT_NE(message([&] {
              BlockMask::from_lists(grid, lists({{}, {}, {}, {}}), ElementMask{5, 2, {}});
            }).find("min_distance must be <= max_distance"),
            std::string::npos);
  // Any order in, sorted out; the transposed lists agree.
  const BlockMask mask = BlockMask::from_lists(grid, lists({{3, 0, 2}, {1}, {}, {0, 3}}));
  const auto row0 = mask.key_blocks_of(0, 0);
  EXPECT_EQ(std::vector<std::int32_t>(row0.begin(), row0.end()), (std::vector<std::int32_t>{0, 2, 3}));
  const auto column3 = mask.query_blocks_of(0, 3);
  EXPECT_EQ(std::vector<std::int32_t>(column3.begin(), column3.end()), (std::vector<std::int32_t>{0, 3}));
  EXPECT_EQ(mask.listed_blocks(), 6);
  EXPECT_DOUBLE_EQ(mask.density(), 6.0 / 16.0);
  // Pairs: blocks of 32 except the last (4 positions): rows 32 x (32 + 32 + 4) + 32 x 32 + 4 x (32 + 4).
  EXPECT_EQ(mask.attended_pairs(0), 32 * 68 + 32 * 32 + 4 * 36);
}

TEST(BlockMask, TransposedListsAreTheTransposeOnRandomMasks) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 40; ++trial) {
    const std::int64_t N = std::uniform_int_distribution<std::int64_t>(1, 300)(rng);
    const std::int64_t Bq = std::uniform_int_distribution<std::int64_t>(1, 64)(rng);
    const std::int64_t Bk = std::uniform_int_distribution<std::int64_t>(1, 64)(rng);
    const BlockMask mask = random_block_mask(rng, N, 3, Bq, Bk);
    std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t, int>> rows, columns;
    for (std::int64_t h = 0; h < mask.heads(); ++h) {
      for (std::int64_t i = 0; i < mask.query_blocks(); ++i) {
        const auto keys = mask.key_blocks_of(h, i);
        EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
        for (std::size_t n = 0; n < keys.size(); ++n) rows.insert({h, i, keys[n], mask.key_partial_of(h, i)[n]});
      }
      for (std::int64_t j = 0; j < mask.key_blocks(); ++j) {
        const auto queries = mask.query_blocks_of(h, j);
        EXPECT_TRUE(std::is_sorted(queries.begin(), queries.end()));
        for (std::size_t n = 0; n < queries.size(); ++n) {
          columns.insert({h, queries[n], j, mask.query_partial_of(h, j)[n]});
        }
      }
    }
    EXPECT_EQ(rows, columns);
    for (std::int64_t h = 0; h < mask.heads(); ++h) checked_allowed(mask, h);
  }
}

TEST(BlockMask, CausalDropsBlocksAfterTheDiagonalAndMasksThePairsOnIt) {
  const BlockGrid grid{70, 16, 32, true};  // 5 query blocks, 3 key blocks
  const BlockMask mask = BlockMask::dense(grid);
  for (std::int64_t i = 0; i < mask.query_blocks(); ++i) {
    for (const std::int32_t j : mask.key_blocks_of(0, i)) EXPECT_LE(j * 32, (i + 1) * 16 - 1);
  }
  expect_rule(
      mask, 1, [](std::int64_t, std::int64_t, std::int64_t) { return true; }, "dense causal");
  EXPECT_EQ(mask.attended_pairs(0), 70 * 71 / 2);
}

TEST(BlockMask, ThePredicateAppliesToPartialBlocksOnly) {
  const BlockGrid grid{40, 8, 8, false};
  BlockMask::Lists lists(1);
  BlockMask::Flags flags(1);
  lists[0].push_back({0});
  flags[0].push_back({false});
  for (std::int64_t i = 1; i < 5; ++i) {
    lists[0].push_back({0, i});
    flags[0].push_back({false, true});  // block 0 full (a global column), the diagonal partial
  }
  ElementMask element;
  element.predicate = [](std::int64_t head, std::int64_t q, std::int64_t k) { return (q + k + head) % 3 != 0; };
  const BlockMask mask = BlockMask::from_lists(grid, lists, element, flags);
  expect_rule(
      mask, 2,
      [](std::int64_t h, std::int64_t q, std::int64_t k) { return k < 8 || (k / 8 == q / 8 && (q + k + h) % 3 != 0); },
      "predicate");
  // Without flags, a predicate makes every listed block partial.
  const BlockMask all_partial = BlockMask::from_lists(grid, lists, element);
  for (const std::uint8_t f : all_partial.row_partial()) EXPECT_EQ(f, 1);
}

TEST(BlockPatterns, LocalWindow) {
  for (const bool causal : {false, true}) {
    const BlockMask square = local_window_blocks({150, 16, 16, causal}, 2);
    expect_rule(
        square, 1, [](std::int64_t, std::int64_t q, std::int64_t k) { return std::abs(q / 16 - k / 16) <= 2; },
        "local 16x16");
    // Bq != Bk: key blocks overlapping [first - w Bk, last + w Bk] of the query block.
    const BlockMask uneven = local_window_blocks({150, 24, 16, causal}, 1);
    expect_rule(
        uneven, 1,
        [](std::int64_t, std::int64_t q, std::int64_t k) {
          const std::int64_t first = q / 24 * 24, last = std::min<std::int64_t>(first + 23, 149);
          const std::int64_t k0 = k / 16 * 16, k1 = k0 + 15;
          return k1 >= first - 16 && k0 <= last + 16;
        },
        "local 24x16");
  }
  EXPECT_THROW(local_window_blocks({10, 4, 4, false}, -1), Error);
}

TEST(BlockPatterns, SlidingWindowIsTokenExact) {
  for (const bool causal : {false, true}) {
    const BlockMask mask = sliding_window_blocks({130, 16, 32, causal}, 20, 5);
    expect_rule(
        mask, 1, [](std::int64_t, std::int64_t q, std::int64_t k) { return k >= q - 20 && k <= q + 5; },
        "sliding window");
  }
  EXPECT_THROW(sliding_window_blocks({10, 4, 4, false}, -1, 0), Error);
}

TEST(BlockPatterns, DilatedBlocksFollowLongNetsOffsets) {
  for (const bool causal : {false, true}) {
    const std::int64_t H = 3;
    const BlockMask per_head = dilated_blocks({200, 8, 8, causal}, {6, 3}, H);
    EXPECT_EQ(per_head.heads(), H);
    expect_rule(
        per_head, H,
        [&](std::int64_t h, std::int64_t q, std::int64_t k) {
          const std::int64_t offset = h / ((H + 2) / 3);  // floor(h / ceil(H / r)), r = 3
          const std::int64_t i = q / 8, j = k / 8;
          return j / 6 == i / 6 && (j % 6) % 3 == offset;
        },
        "dilated per head");
    const BlockMask shared = dilated_blocks({200, 8, 8, causal}, {0, 4});
    expect_rule(
        shared, 1, [](std::int64_t, std::int64_t, std::int64_t k) { return (k / 8) % 4 == 0; },
        "dilated over the sequence");
  }
  EXPECT_THROW(dilated_blocks({10, 4, 4, false}, {2, 3}), Error);  // stride > segment
  EXPECT_THROW(dilated_blocks({10, 4, 4, false}, {2, 0}), Error);
}

TEST(BlockPatterns, GlobalTokensAddRowsAndColumns) {
  for (const bool causal : {false, true}) {
    const BlockMask mask = global_blocks({100, 16, 8, causal}, {0, 37, 5000});  // 5000 >= N: ignored
    expect_rule(
        mask, 1,
        [](std::int64_t, std::int64_t q, std::int64_t k) {
          const bool global_row = q / 16 == 0 || q / 16 == 37 / 16;
          const bool global_column = k / 8 == 0 || k / 8 == 37 / 8;
          return global_row || global_column;
        },
        "global");
  }
  EXPECT_THROW(global_blocks({10, 4, 4, false}, {-3}), Error);
}

TEST(BlockPatterns, RandomBlocksAreReproducibleAndDistinct) {
  for (const bool causal : {false, true}) {
    const BlockGrid grid{300, 16, 16, causal};
    const BlockMask a = random_blocks(grid, 4, 42, 2), b = random_blocks(grid, 4, 42, 2),
                    c = random_blocks(grid, 4, 43, 2);
    EXPECT_EQ(a.lists(), b.lists());
    EXPECT_NE(a.lists(), c.lists());
    EXPECT_NE(a.lists()[0], a.lists()[1]);  // a draw per head
    for (std::int64_t h = 0; h < 2; ++h) {
      for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
        const std::int64_t allowed = causal ? i + 1 : grid.key_blocks();
        EXPECT_EQ(static_cast<std::int64_t>(a.key_blocks_of(h, i).size()), std::min<std::int64_t>(4, allowed));
      }
      checked_allowed(a, h);
    }
  }
  // Every block is eventually drawn: the draws cover the range.
  const BlockMask wide = random_blocks({64 * 40, 64, 64, false}, 3, 7);
  std::set<std::int32_t> seen(wide.column_indices().begin(), wide.column_indices().end());
  EXPECT_GT(seen.size(), 30u);
}

TEST(BlockPatterns, HierarchicalIsTheUnionOfItsLevels) {
  const std::vector<DilatedBlockLevel> levels = hierarchical_preset("three_level");
  EXPECT_EQ(levels, (std::vector<DilatedBlockLevel>{{8, 1}, {64, 8}, {512, 64}}));
  for (const bool causal : {false, true}) {
    const BlockGrid grid{16 * 130, 16, 16, causal};
    const BlockMask mask = hierarchical_blocks(grid, {{4, 1}, {16, 4}, {0, 32}}, 2);
    std::vector<BlockMask> levels_masks = {dilated_blocks(grid, {4, 1}, 2), dilated_blocks(grid, {16, 4}, 2),
                                           dilated_blocks(grid, {0, 32}, 2)};
    for (std::int64_t h = 0; h < 2; ++h) {
      const std::vector<bool> allowed = checked_allowed(mask, h);
      for (std::int64_t q = 0; q < grid.seq_len; q += 7) {
        for (std::int64_t k = 0; k < grid.seq_len; ++k) {
          bool any = false;
          for (const BlockMask& level : levels_masks) any = any || level.allows(h, q, k);
          ASSERT_EQ(allowed[static_cast<std::size_t>(q * grid.seq_len + k)], any) << "q=" << q << " k=" << k;
        }
      }
    }
  }
  for (const std::string& name : hierarchical_preset_names()) EXPECT_FALSE(hierarchical_preset(name).empty());
  EXPECT_THROW(hierarchical_preset("nope"), Error);
  EXPECT_THROW(hierarchical_blocks({10, 4, 4, false}, {}), Error);
}

TEST(BlockPatterns, UnionsAreElementwiseOrs) {
  std::mt19937_64 rng(5);
  for (const bool causal : {false, true}) {
    const BlockGrid grid{170, 16, 32, causal};
    const std::vector<BlockMask> parts = {local_window_blocks(grid, 1), global_blocks(grid, {3}),
                                          random_blocks(grid, 2, 9, 3), sliding_window_blocks(grid, 40, 10)};
    const BlockMask all = union_of(parts);
    EXPECT_EQ(all.heads(), 3);
    for (std::int64_t h = 0; h < 3; ++h) {
      const std::vector<bool> allowed = checked_allowed(all, h);
      for (std::int64_t q = 0; q < grid.seq_len; ++q) {
        for (std::int64_t k = 0; k < grid.seq_len; ++k) {
          bool any = false;
          for (const BlockMask& part : parts) any = any || part.allows(h, q, k);
          ASSERT_EQ(allowed[static_cast<std::size_t>(q * grid.seq_len + k)], any) << "q=" << q << " k=" << k;
        }
      }
    }
  }
  // Errors: different grids, head counts, element masks.
  EXPECT_THROW(union_of({local_window_blocks({100, 16, 16, false}, 1), local_window_blocks({101, 16, 16, false}, 1)}),
               Error);
  EXPECT_THROW(union_of({random_blocks({100, 16, 16, false}, 1, 0, 2), random_blocks({100, 16, 16, false}, 1, 0, 3)}),
               Error);
  EXPECT_THROW(
      union_of({sliding_window_blocks({100, 16, 16, false}, 5, 0), sliding_window_blocks({100, 16, 16, false}, 6, 0)}),
      Error);
  EXPECT_THROW(union_of({}), Error);
  // A config's patterns: build_block_mask is their union.
  const BlockGrid grid{200, 32, 32, true};
  const BlockMask built = build_block_mask(
      grid, {BlockPattern::local_window(1), BlockPattern::global({0}), BlockPattern::random(2, 3, true)}, 4);
  const BlockMask expected =
      union_of({local_window_blocks(grid, 1), global_blocks(grid, {0}), random_blocks(grid, 2, 3, 4)});
  EXPECT_EQ(built.lists(), expected.lists());
  EXPECT_EQ(built.partial_flags(), expected.partial_flags());
}

TEST(BlockPatterns, PatternSpecsValidateAndDescribe) {
  EXPECT_EQ(parse_block_pattern_kind("hierarchical"), BlockPatternKind::hierarchical);
  EXPECT_THROW(parse_block_pattern_kind("bigbird", "--pattern"), Error);
  try {
    parse_block_pattern_kind("bigbird", "--pattern");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--pattern = 'bigbird'"), std::string::npos);
  }
  EXPECT_THROW(BlockPattern::local_window(-1).validate(), Error);
  EXPECT_THROW(BlockPattern::random(-2, 0).validate(), Error);
  EXPECT_THROW(BlockPattern::hierarchical({}).validate(), Error);
  EXPECT_THROW(BlockPattern::dilated({4, 5}).validate(), Error);
  EXPECT_THROW(BlockPattern::global({-1}).validate(), Error);
  EXPECT_THROW(BlockPattern::sliding_window(3, -1).validate(), Error);
  EXPECT_EQ(BlockPattern::dilated({8, 2}, true).describe(), "dilated(segment_blocks=8, stride=2, per head)");
  EXPECT_THROW(build_block_mask({10, 4, 4, false}, {}, 1), Error);
}

TEST(BlockMaskFile, RoundTripAndCorruptFiles) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "longnet_block_mask_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "mask.safetensors").string();
  const BlockGrid grid{300, 32, 16, true};
  const BlockMask mask = union_of({sliding_window_blocks(grid, 50, 0), random_blocks(grid, 3, 1, 2)});
  save_block_mask(path, mask);
  const BlockMask loaded = load_block_mask(path);
  EXPECT_EQ(loaded.grid(), mask.grid());
  EXPECT_EQ(loaded.heads(), 2);
  EXPECT_EQ(loaded.lists(), mask.lists());
  EXPECT_EQ(loaded.partial_flags(), mask.partial_flags());
  EXPECT_EQ(loaded.element_mask().min_distance, mask.element_mask().min_distance);
  EXPECT_EQ(loaded.element_mask().max_distance, mask.element_mask().max_distance);

  auto expect_error = [&](const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                          const std::string& fragment) {
    const std::string bad = (dir / "bad.safetensors").string();
    save_safetensors(bad, tensors, metadata);
    try {
      load_block_mask(bad);
      ADD_FAILURE() << "no error, expected " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  const std::map<std::string, std::string> meta = {{"seq_len", "40"}, {"block_q", "16"}, {"block_k", "16"}};
  expect_error({{"layout", Tensor::zeros({1, 3, 3}, DType::f32)}}, meta, "must be u8");
  expect_error({{"layout", Tensor::zeros({1, 3, 2}, DType::u8)}}, meta, "need (heads, 3, 3)");
  expect_error({{"layout", Tensor::full({1, 3, 3}, 3, DType::u8)}}, meta, "must be 0 (not listed), 1 (full) or 2");
  expect_error({{"layout", Tensor::zeros({1, 3, 3}, DType::u8)}}, {{"seq_len", "40"}, {"block_q", "16"}},
               "metadata 'block_k' is missing");
  expect_error({{"layout", Tensor::zeros({1, 3, 3}, DType::u8)}},
               {{"seq_len", "40"}, {"block_q", "x"}, {"block_k", "16"}}, "must be an integer");
  expect_error({{"mask", Tensor::zeros({1, 3, 3}, DType::u8)}}, meta, "layout");
  ElementMask with_predicate;
  with_predicate.predicate = [](std::int64_t, std::int64_t, std::int64_t) { return true; };
  EXPECT_THROW(save_block_mask(path, BlockMask::from_lists({10, 4, 4, false}, {{{0}, {1}, {2}}}, with_predicate)),
               Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace longnet::testing
