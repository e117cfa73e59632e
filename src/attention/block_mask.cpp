// BlockMask: construction from lists with validation, the transposed lists, unions, exact
// pair counts and the safetensors mask file (see block_mask.hpp).
#include "longnet/attention/block_mask.hpp"

#include <algorithm>
#include <limits>

#include "longnet/core/error.hpp"
#include "longnet/io/safetensors.hpp"

namespace longnet {
namespace {

constexpr std::int64_t kMaxBlocks = std::numeric_limits<std::int32_t>::max();

std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
std::int64_t larger(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

// How the band treats the pairs of query rows [q0, q1) x key rows [k0, k1): 0 = none
// allowed, 1 = all allowed, 2 = some allowed. Distances range over [q0 - k1 + 1, q1 - 1 - k0].
int band_coverage(const ElementMask& mask, std::int64_t q0, std::int64_t q1, std::int64_t k0, std::int64_t k1) {
  const std::int64_t lowest = q0 - (k1 - 1), highest = (q1 - 1) - k0;
  if (highest < mask.min_distance || lowest > mask.max_distance) return 0;
  if (lowest >= mask.min_distance && highest <= mask.max_distance) return 1;
  return 2;
}

// Keys k in [k0, k1) with min_distance <= q - k <= max_distance: how many (bands are
// normalised by from_lists, so q - bound cannot overflow).
std::int64_t band_keys(const ElementMask& mask, std::int64_t q, std::int64_t k0, std::int64_t k1) {
  const std::int64_t lo = mask.max_distance == ElementMask::kUnbounded ? k0 : larger(k0, q - mask.max_distance);
  const std::int64_t hi =
      mask.min_distance == -ElementMask::kUnbounded ? k1 - 1 : smaller(k1 - 1, q - mask.min_distance);
  return hi >= lo ? hi - lo + 1 : 0;
}

// The same band with bounds beyond any distance of a sequence of N positions (|q - k| < N)
// written as unbounded, and the others clamped to [-N, N].
void normalise_band(ElementMask& mask, std::int64_t N) {
  mask.min_distance = mask.min_distance <= -(N - 1) ? -ElementMask::kUnbounded : smaller(mask.min_distance, N);
  mask.max_distance = mask.max_distance >= N - 1 ? ElementMask::kUnbounded : larger(mask.max_distance, -N);
}

std::string bound_text(std::int64_t value) {
  if (value == ElementMask::kUnbounded) return "inf";
  if (value == -ElementMask::kUnbounded) return "-inf";
  return std::to_string(value);
}

std::int64_t parse_bound(const std::string& text, const std::string& what) {
  if (text == "inf") return ElementMask::kUnbounded;
  if (text == "-inf") return -ElementMask::kUnbounded;
  std::size_t used = 0;
  std::int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == text.size() && !text.empty(), what, " = '", text, "': must be an integer, inf or -inf");
  return value;
}

}  // namespace

void BlockGrid::validate() const {
  require(seq_len >= 1, "seq_len = ", seq_len, ": must be >= 1");
  require(block_q >= 1, "block_q = ", block_q, ": must be >= 1");
  require(block_k >= 1, "block_k = ", block_k, ": must be >= 1");
  require(query_blocks() <= kMaxBlocks && key_blocks() <= kMaxBlocks, "seq_len = ", seq_len, " with blocks ", block_q,
          " x ", block_k, ": more than 2^31 - 1 blocks");
}

std::string ElementMask::describe() const {
  const std::string text = has_band()
                               ? str("band ", bound_text(min_distance), " <= query - key <= ", bound_text(max_distance))
                               : std::string("none");
  return predicate ? text + " and a predicate" : text;
}

BlockMask BlockMask::from_lists(const BlockGrid& grid, const Lists& key_blocks, ElementMask element_mask,
                                const Flags& partial) {
  grid.validate();
  require(element_mask.min_distance <= element_mask.max_distance, "element mask band [",
          bound_text(element_mask.min_distance), ", ", bound_text(element_mask.max_distance),
          "]: min_distance must be <= max_distance");
  normalise_band(element_mask, grid.seq_len);
  const auto heads = static_cast<std::int64_t>(key_blocks.size());
  require(heads >= 1, "block mask lists: no heads (give one list per head, or one shared by all)");
  require(partial.empty() || static_cast<std::int64_t>(partial.size()) == heads,
          "block mask partial flags: ", partial.size(), " heads, but the lists have ", heads);
  const std::int64_t Qb = grid.query_blocks(), Kb = grid.key_blocks();
  // What a partial block may attend: the band, and causal's band.
  ElementMask partial_band;
  partial_band.min_distance = grid.causal ? larger(element_mask.min_distance, 0) : element_mask.min_distance;
  partial_band.max_distance = element_mask.max_distance;
  const ElementMask causal_band = grid.causal ? ElementMask{0, ElementMask::kUnbounded, {}} : ElementMask{};

  BlockMask mask;
  mask.grid_ = grid;
  mask.heads_ = heads;
  mask.element_mask_ = std::move(element_mask);
  const ElementMask& band = mask.element_mask_;
  std::vector<std::pair<std::int32_t, std::uint8_t>> row;
  for (std::int64_t h = 0; h < heads; ++h) {
    const auto& head_lists = key_blocks[static_cast<std::size_t>(h)];
    require(static_cast<std::int64_t>(head_lists.size()) == Qb, "block mask head ", h, ": ", head_lists.size(),
            " query blocks listed, but seq_len ", grid.seq_len, " / block_q ", grid.block_q, " gives ", Qb);
    for (std::int64_t i = 0; i < Qb; ++i) {
      const auto& list = head_lists[static_cast<std::size_t>(i)];
      const std::vector<bool>* flags = partial.empty() ? nullptr : &partial[static_cast<std::size_t>(h)].at(i);
      require(!flags || flags->size() == list.size(), "block mask head ", h, " query block ", i, ": ",
              flags ? flags->size() : 0, " partial flags for ", list.size(), " key blocks");
      const std::int64_t q0 = grid.query_begin(i), q1 = grid.query_end(i);
      row.clear();
      for (std::size_t n = 0; n < list.size(); ++n) {
        const std::int64_t j = list[n];
        require(j >= 0 && j < Kb, "block mask head ", h, " query block ", i, ": key block ", j, " is out of range [0, ",
                Kb, ")");
        const std::int64_t k0 = grid.key_begin(j), k1 = grid.key_end(j);
        const bool is_partial =
            flags ? static_cast<bool>((*flags)[n]) : band.predicate || band_coverage(band, q0, q1, k0, k1) == 2;
        if (band_coverage(is_partial ? partial_band : causal_band, q0, q1, k0, k1) == 0) continue;  // nothing left
        row.emplace_back(static_cast<std::int32_t>(j), is_partial ? 1 : 0);
      }
      std::sort(row.begin(), row.end());
      for (std::size_t n = 1; n < row.size(); ++n) {
        require(row[n].first != row[n - 1].first, "block mask head ", h, " query block ", i, ": key block ",
                row[n].first, " is listed twice");
      }
      for (const auto& [j, is_partial] : row) {
        mask.column_indices_.push_back(j);
        mask.row_partial_.push_back(is_partial);
      }
      mask.row_offsets_.push_back(static_cast<std::int64_t>(mask.column_indices_.size()));
    }
  }
  // Transposed lists: per (head, key block), the query blocks in increasing order.
  std::vector<std::int64_t> counts(static_cast<std::size_t>(heads * Kb) + 1, 0);
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < Qb; ++i) {
      for (const std::int32_t j : mask.key_blocks_of(h, i)) ++counts[static_cast<std::size_t>(h * Kb + j) + 1];
    }
  }
  for (std::size_t n = 1; n < counts.size(); ++n) counts[n] += counts[n - 1];
  mask.column_offsets_ = counts;
  mask.row_indices_.resize(mask.column_indices_.size());
  mask.column_partial_.resize(mask.column_indices_.size());
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < Qb; ++i) {
      const std::int64_t begin = mask.row_offsets_[static_cast<std::size_t>(h * Qb + i)];
      const std::int64_t end = mask.row_offsets_[static_cast<std::size_t>(h * Qb + i) + 1];
      for (std::int64_t n = begin; n < end; ++n) {
        const auto slot = static_cast<std::size_t>(
            counts[static_cast<std::size_t>(h * Kb + mask.column_indices_[static_cast<std::size_t>(n)])]++);
        mask.row_indices_[slot] = static_cast<std::int32_t>(i);
        mask.column_partial_[slot] = mask.row_partial_[static_cast<std::size_t>(n)];
      }
    }
  }
  return mask;
}

BlockMask BlockMask::dense(const BlockGrid& grid) {
  grid.validate();
  std::vector<std::int64_t> all(static_cast<std::size_t>(grid.key_blocks()));
  for (std::size_t j = 0; j < all.size(); ++j) all[j] = static_cast<std::int64_t>(j);
  const Lists lists(1, std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(grid.query_blocks()), all));
  return from_lists(grid, lists);
}

std::span<const std::int32_t> BlockMask::key_blocks_of(std::int64_t h, std::int64_t i) const {
  const auto row = static_cast<std::size_t>(h * query_blocks() + i);
  return {column_indices_.data() + row_offsets_[row], column_indices_.data() + row_offsets_[row + 1]};
}

std::span<const std::uint8_t> BlockMask::key_partial_of(std::int64_t h, std::int64_t i) const {
  const auto row = static_cast<std::size_t>(h * query_blocks() + i);
  return {row_partial_.data() + row_offsets_[row], row_partial_.data() + row_offsets_[row + 1]};
}

std::span<const std::int32_t> BlockMask::query_blocks_of(std::int64_t h, std::int64_t j) const {
  const auto column = static_cast<std::size_t>(h * key_blocks() + j);
  return {row_indices_.data() + column_offsets_[column], row_indices_.data() + column_offsets_[column + 1]};
}

std::span<const std::uint8_t> BlockMask::query_partial_of(std::int64_t h, std::int64_t j) const {
  const auto column = static_cast<std::size_t>(h * key_blocks() + j);
  return {column_partial_.data() + column_offsets_[column], column_partial_.data() + column_offsets_[column + 1]};
}

double BlockMask::density() const {
  const double all =
      static_cast<double>(heads_) * static_cast<double>(query_blocks()) * static_cast<double>(key_blocks());
  return all > 0 ? static_cast<double>(listed_blocks()) / all : 0.0;
}

bool BlockMask::allows(std::int64_t head, std::int64_t q, std::int64_t k) const {
  const std::int64_t h = mask_head(head);
  const std::span<const std::int32_t> keys = key_blocks_of(h, q / grid_.block_q);
  const auto found = std::lower_bound(keys.begin(), keys.end(), static_cast<std::int32_t>(k / grid_.block_k));
  if (found == keys.end() || *found != k / grid_.block_k) return false;
  if (grid_.causal && k > q) return false;
  const bool is_partial = key_partial_of(h, q / grid_.block_q)[static_cast<std::size_t>(found - keys.begin())] != 0;
  return !is_partial || element_mask_.allows(head, q, k);
}

std::int64_t BlockMask::attended_pairs(std::int64_t head) const {
  const std::int64_t h = mask_head(head);
  ElementMask partial_band = element_mask_;  // the band and causal's, for partial blocks
  partial_band.predicate = nullptr;
  if (grid_.causal) partial_band.min_distance = larger(partial_band.min_distance, 0);
  const ElementMask causal_band = grid_.causal ? ElementMask{0, ElementMask::kUnbounded, {}} : ElementMask{};
  std::int64_t pairs = 0;
  for (std::int64_t i = 0; i < query_blocks(); ++i) {
    const std::span<const std::int32_t> keys = key_blocks_of(h, i);
    const std::span<const std::uint8_t> flags = key_partial_of(h, i);
    const std::int64_t q0 = grid_.query_begin(i), q1 = grid_.query_end(i);
    for (std::size_t n = 0; n < keys.size(); ++n) {
      const std::int64_t k0 = grid_.key_begin(keys[n]), k1 = grid_.key_end(keys[n]);
      const ElementMask& band = flags[n] ? partial_band : causal_band;
      if (band_coverage(band, q0, q1, k0, k1) == 1 && !(flags[n] && element_mask_.predicate)) {
        pairs += (q1 - q0) * (k1 - k0);
        continue;
      }
      for (std::int64_t q = q0; q < q1; ++q) {
        if (!(flags[n] && element_mask_.predicate)) {
          pairs += band_keys(band, q, k0, k1);
          continue;
        }
        for (std::int64_t k = k0; k < k1; ++k) pairs += allows(head, q, k) ? 1 : 0;
      }
    }
  }
  return pairs;
}

BlockMask::Lists BlockMask::lists() const {
  Lists out(static_cast<std::size_t>(heads_));
  for (std::int64_t h = 0; h < heads_; ++h) {
    for (std::int64_t i = 0; i < query_blocks(); ++i) {
      const std::span<const std::int32_t> keys = key_blocks_of(h, i);
      out[static_cast<std::size_t>(h)].emplace_back(keys.begin(), keys.end());
    }
  }
  return out;
}

BlockMask::Flags BlockMask::partial_flags() const {
  Flags out(static_cast<std::size_t>(heads_));
  for (std::int64_t h = 0; h < heads_; ++h) {
    for (std::int64_t i = 0; i < query_blocks(); ++i) {
      const std::span<const std::uint8_t> flags = key_partial_of(h, i);
      out[static_cast<std::size_t>(h)].emplace_back(flags.begin(), flags.end());
    }
  }
  return out;
}

std::string BlockMask::describe() const {
  return str("N = ", seq_len(), ", blocks ", block_q(), " x ", block_k(), ", ",
             shared() ? std::string("shared by all heads") : str(heads_, " heads"), ", ", listed_blocks(), " of ",
             heads_ * query_blocks() * key_blocks(), " blocks listed (", 100.0 * density(), "%)",
             grid_.causal ? ", causal" : "", ", element mask of partial blocks ", element_mask_.describe());
}

BlockMask union_of(const std::vector<BlockMask>& masks) {
  require(!masks.empty(), "union_of: no masks");
  const BlockGrid& grid = masks[0].grid();
  std::int64_t heads = 1;
  const ElementMask* element_mask = nullptr;  // of the masks with partial blocks
  for (std::size_t m = 0; m < masks.size(); ++m) {
    const BlockMask& mask = masks[m];
    require(mask.grid() == grid, "union_of: mask ", m, " has grid N = ", mask.seq_len(), ", blocks ", mask.block_q(),
            " x ", mask.block_k(), mask.grid().causal ? ", causal" : "", " but mask 0 has N = ", grid.seq_len,
            ", blocks ", grid.block_q, " x ", grid.block_k, grid.causal ? ", causal" : "", ": they must be equal");
    require(mask.heads() == 1 || heads == 1 || mask.heads() == heads, "union_of: mask ", m, " has ", mask.heads(),
            " heads but another has ", heads, ": head counts must be equal or 1");
    heads = std::max(heads, mask.heads());
    const bool has_partial =
        std::find(mask.row_partial().begin(), mask.row_partial().end(), std::uint8_t{1}) != mask.row_partial().end();
    if (!has_partial) continue;
    const ElementMask& e = mask.element_mask();
    if (!element_mask) {
      element_mask = &e;
      continue;
    }
    require(!e.predicate && !element_mask->predicate && e.min_distance == element_mask->min_distance &&
                e.max_distance == element_mask->max_distance,
            "union_of: mask ", m, " has element mask ", e.describe(), " but another has ", element_mask->describe(),
            ": masks with partial blocks must share one element mask (without a predicate)");
  }
  // Per (head, query block): the masks' key blocks merged in order; a full listing wins.
  BlockMask::Lists lists(static_cast<std::size_t>(heads),
                         std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(grid.query_blocks())));
  BlockMask::Flags flags(static_cast<std::size_t>(heads),
                         std::vector<std::vector<bool>>(static_cast<std::size_t>(grid.query_blocks())));
  std::vector<std::pair<std::int32_t, std::uint8_t>> row;  // (key block, partial)
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < grid.query_blocks(); ++i) {
      row.clear();
      for (const BlockMask& mask : masks) {
        const std::span<const std::int32_t> keys = mask.key_blocks_of(mask.mask_head(h), i);
        const std::span<const std::uint8_t> partial = mask.key_partial_of(mask.mask_head(h), i);
        for (std::size_t n = 0; n < keys.size(); ++n) row.emplace_back(keys[n], partial[n]);
      }
      std::sort(row.begin(), row.end());  // a block's full listing (0) sorts before its partial one
      auto& list = lists[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
      auto& list_flags = flags[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
      for (std::size_t n = 0; n < row.size(); ++n) {
        if (n > 0 && row[n].first == row[n - 1].first) continue;
        list.push_back(row[n].first);
        list_flags.push_back(row[n].second != 0);
      }
    }
  }
  return BlockMask::from_lists(grid, lists, element_mask ? *element_mask : ElementMask{}, flags);
}

void save_block_mask(const std::string& path, const BlockMask& mask) {
  require(!mask.element_mask().predicate, "save_block_mask: the mask has a predicate, which a file cannot hold");
  const std::int64_t Qb = mask.query_blocks(), Kb = mask.key_blocks();
  Tensor layout = Tensor::zeros({mask.heads(), Qb, Kb}, DType::u8);
  std::uint8_t* cells = layout.data<std::uint8_t>();
  for (std::int64_t h = 0; h < mask.heads(); ++h) {
    for (std::int64_t i = 0; i < Qb; ++i) {
      const std::span<const std::int32_t> keys = mask.key_blocks_of(h, i);
      const std::span<const std::uint8_t> partial = mask.key_partial_of(h, i);
      for (std::size_t n = 0; n < keys.size(); ++n) cells[(h * Qb + i) * Kb + keys[n]] = partial[n] ? 2 : 1;
    }
  }
  save_safetensors(path, {{"layout", layout}},
                   {{"format", "longnet block mask"},
                    {"seq_len", std::to_string(mask.seq_len())},
                    {"block_q", std::to_string(mask.block_q())},
                    {"block_k", std::to_string(mask.block_k())},
                    {"causal", mask.grid().causal ? "true" : "false"},
                    {"min_distance", bound_text(mask.element_mask().min_distance)},
                    {"max_distance", bound_text(mask.element_mask().max_distance)}});
}

BlockMask load_block_mask(const std::string& path) {
  const SafetensorsReader file(path);
  const SafetensorsEntry& entry = file.entry("layout");
  require(entry.dtype == DType::u8 && entry.shape.size() == 3, "tensor 'layout' in ", file.name(), " is ",
          dtype_name(entry.dtype), " ", shape_to_string(entry.shape), ": must be u8 (heads, query_blocks, key_blocks)");
  auto field = [&](const char* key) -> std::string {
    const auto found = file.metadata().find(key);
    require(found != file.metadata().end(), file.name(), ": metadata '", key, "' is missing (a block mask file has ",
            "seq_len, block_q, block_k and optionally causal, min_distance, max_distance)");
    return found->second;
  };
  auto integer = [&](const char* key) {
    const std::string text = field(key);
    const std::int64_t value = parse_bound(text, str(file.name(), ": metadata ", key));
    require(value >= 1 && value != ElementMask::kUnbounded, file.name(), ": metadata ", key, " = ", text,
            ": must be a positive integer");
    return value;
  };
  BlockGrid grid;
  grid.seq_len = integer("seq_len");
  grid.block_q = integer("block_q");
  grid.block_k = integer("block_k");
  const auto metadata = file.metadata();
  if (metadata.count("causal")) {
    const std::string causal = metadata.at("causal");
    require(causal == "true" || causal == "false", file.name(), ": metadata causal = '", causal,
            "': must be true or false");
    grid.causal = causal == "true";
  }
  grid.validate();
  ElementMask element_mask;
  if (metadata.count("min_distance")) {
    element_mask.min_distance = parse_bound(metadata.at("min_distance"), file.name() + ": metadata min_distance");
  }
  if (metadata.count("max_distance")) {
    element_mask.max_distance = parse_bound(metadata.at("max_distance"), file.name() + ": metadata max_distance");
  }
  const std::int64_t heads = entry.shape[0], Qb = grid.query_blocks(), Kb = grid.key_blocks();
  require(heads >= 1 && entry.shape[1] == Qb && entry.shape[2] == Kb, "tensor 'layout' in ", file.name(), " has shape ",
          shape_to_string(entry.shape), ": seq_len ", grid.seq_len, " and blocks ", grid.block_q, " x ", grid.block_k,
          " need (heads, ", Qb, ", ", Kb, ")");
  const Tensor layout = file.load("layout");
  const std::uint8_t* cells = layout.data<std::uint8_t>();
  BlockMask::Lists lists(static_cast<std::size_t>(heads),
                         std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(Qb)));
  BlockMask::Flags flags(static_cast<std::size_t>(heads), std::vector<std::vector<bool>>(static_cast<std::size_t>(Qb)));
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t i = 0; i < Qb; ++i) {
      for (std::int64_t j = 0; j < Kb; ++j) {
        const std::uint8_t cell = cells[(h * Qb + i) * Kb + j];
        require(cell <= 2, "tensor 'layout' in ", file.name(), " at (", h, ", ", i, ", ", j, ") = ", int{cell},
                ": must be 0 (not listed), 1 (full) or 2 (partial)");
        if (cell == 0) continue;
        lists[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)].push_back(j);
        flags[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)].push_back(cell == 2);
      }
    }
  }
  return BlockMask::from_lists(grid, lists, element_mask, flags);
}

}  // namespace longnet
