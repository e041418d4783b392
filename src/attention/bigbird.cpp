// `bigbird` (Zaheer et al. 2020): block-sparse attention. Positions are cut into blocks of b (the last
// one may be shorter); query block β sees whole key blocks:
//   the g global blocks see every block: by default the first ⌈g/2⌉ and the last ⌊g/2⌋ (g = 2: the
//   first and the last, the paper's ITC as google-research/bigbird builds it), or with
//   global_placement "first" (and always when causal) the first g; the others see the global blocks,
//   a window of w blocks centred on β (causal: β and the w − 1 before it) and r random blocks drawn, per query block and
//   without replacement, from the blocks not already seen (causal: the earlier ones only)
// then causality (j ≤ t) and the key padding mask apply per position. The random blocks are a pure
// function of (seed, n): Philox draws, the same for every run, thread count, head and batch item. With
// random_per_layer (the default) the layer's parameter prefix is mixed into the seed, so every layer
// draws its own (a layer without a prefix, as in the tests and tools, draws with the seed itself). The
// pattern depends on n beyond clipping (the last block, the draws): under a key padding mask each
// sample takes the pattern of its real length, so a padded sample sees what it sees alone.
// Time O(B·n·b·(w + g + r)·d + B·g·b·n·d).
#include <algorithm>
#include <memory>
#include <vector>

#include "attention/kind_rules.h"
#include "attention/options.h"
#include "attention/sparse_pattern.h"
#include "linformer/rng.h"

namespace lf {
namespace {

const AttentionKindInfo& bigbird_info() {
  static const AttentionKindInfo info{
      "bigbird", "BigBird: block-sparse window + global + random blocks, O(n·b·(w + g + r))", sparse_pattern_support()};
  return info;
}

struct BigBirdOptions {
  int64_t block = 64, window_blocks = 3, global_blocks = 2, random_blocks = 3;
  bool global_at_ends = true;  // global_placement "ends" (first and last blocks) or "first"
  uint64_t seed = 0;
  bool per_layer = true;  // random_per_layer: the layer's prefix is mixed into the seed
  bool causal = false;
  bool is_global(int64_t kb, int64_t nb) const {
    // Causal: the first g. A last block no earlier query may see is no global summary, and a row's keys
    // would follow the sequence's length, which decoding does not know.
    const int64_t head = global_at_ends && !causal ? (global_blocks + 1) / 2 : global_blocks;
    return kb < head || kb >= nb - (global_blocks - head);
  }
};

// The key blocks of every query block of a sequence of nb blocks, each list sorted.
std::vector<std::vector<int32_t>> bigbird_layout(const BigBirdOptions& o, int64_t nb) {
  const uint64_t stream = stream_id("bigbird.random_blocks");
  std::vector<std::vector<int32_t>> layout(static_cast<size_t>(nb));
  std::vector<uint8_t> seen(static_cast<size_t>(nb));
  std::vector<int32_t> candidates;
  for (int64_t qb = 0; qb < nb; ++qb) {
    std::vector<int32_t>& blocks = layout[size_t(qb)];
    const int64_t last = o.causal ? qb : nb - 1;  // later blocks are all in the future
    if (o.is_global(qb, nb)) {
      for (int64_t kb = 0; kb <= last; ++kb) blocks.push_back(int32_t(kb));
      continue;
    }
    for (int64_t kb = 0; kb < nb; ++kb) seen[size_t(kb)] = o.is_global(kb, nb);
    const int64_t lo = o.causal ? qb - (o.window_blocks - 1) : qb - o.window_blocks / 2;
    const int64_t hi = o.causal ? qb : qb + o.window_blocks / 2;
    for (int64_t kb = std::max<int64_t>(lo, 0); kb <= std::min(hi, nb - 1); ++kb) seen[size_t(kb)] = 1;
    // r of the remaining blocks, by a partial Fisher-Yates shuffle on Philox draws keyed by (qb, k).
    candidates.clear();
    for (int64_t kb = 0; kb <= last; ++kb)
      if (!seen[size_t(kb)]) candidates.push_back(int32_t(kb));
    const int64_t draws = std::min<int64_t>(o.random_blocks, int64_t(candidates.size()));
    for (int64_t k = 0; k < draws; ++k) {
      const double u = uniform01_f64(o.seed, stream, (uint64_t(qb) << 32) | uint64_t(k));
      const int64_t pick = k + std::min<int64_t>(int64_t(u * double(int64_t(candidates.size()) - k)),
                                                 int64_t(candidates.size()) - k - 1);
      std::swap(candidates[size_t(k)], candidates[size_t(pick)]);
      seen[size_t(candidates[size_t(k)])] = 1;
    }
    for (int64_t kb = 0; kb < nb; ++kb)
      if (seen[size_t(kb)]) blocks.push_back(int32_t(kb));
  }
  return layout;
}

// The rows of every length: whole key blocks of the layout.
PatternFamily bigbird_family(const BigBirdOptions& o) {
  return [o](int64_t n) -> RowKeys {
    const int64_t nb = (n + o.block - 1) / o.block;
    auto layout = std::make_shared<const std::vector<std::vector<int32_t>>>(bigbird_layout(o, nb));
    return [layout, n, block = o.block](int64_t t, std::vector<int32_t>& keys) {
      for (int32_t kb : (*layout)[size_t(t / block)])
        for (int64_t j = int64_t(kb) * block; j < std::min(n, (int64_t(kb) + 1) * block); ++j) keys.push_back(int32_t(j));
    };
  };
}

SparseKindConfig parse_bigbird(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("bigbird", options);
  BigBirdOptions o;
  o.causal = dims.causal;
  // 64 from max_len 512 up; below, an eighth of max_len, so that short models still have 8 blocks.
  o.block = r.get_int("block", std::clamp<int64_t>(dims.max_len / 8, 1, 64));
  LF_REQUIRE(o.block >= 1 && o.block <= dims.max_len, r.where("block"), " must be in [1, max_len = ", dims.max_len,
             "], got ", o.block);
  const int64_t max_blocks = (dims.max_len + o.block - 1) / o.block;
  o.window_blocks = r.get_int("window_blocks", 3);
  LF_REQUIRE(o.window_blocks >= 1, r.where("window_blocks"), " must be >= 1 (1: the query's own block), got ",
             o.window_blocks);
  LF_REQUIRE(dims.causal || o.window_blocks % 2 == 1, r.where("window_blocks"),
             " must be odd without a causal mask (the window is centred on the query's block), got ", o.window_blocks);
  o.global_blocks = r.get_int("global_blocks", std::min<int64_t>(2, max_blocks));
  LF_REQUIRE(o.global_blocks >= 0 && o.global_blocks <= max_blocks, r.where("global_blocks"), " must be in [0, ",
             max_blocks, "] (the blocks of max_len), got ", o.global_blocks);
  o.global_at_ends = r.get_choice("global_placement", "ends", {"ends", "first"}) == "ends";
  o.random_blocks = r.get_int("random_blocks", 3);
  LF_REQUIRE(o.random_blocks >= 0, r.where("random_blocks"), " must be >= 0, got ", o.random_blocks);
  const int64_t seed = r.get_int("seed", 0);
  LF_REQUIRE(seed >= 0, r.where("seed"), " must be >= 0, got ", seed);
  o.seed = uint64_t(seed);
  o.per_layer = r.get_bool("random_per_layer", true);
  SparseKindConfig config = finish_sparse_kind(r, resolved, bigbird_family(o));
  config.length_dependent = true;
  // Each layer its own random blocks: its prefix mixed into the seed (a layer without a prefix, as in
  // the tests and tools, draws with the seed itself).
  if (o.per_layer)
    config.layer_family = [o](const std::string& prefix) {
      BigBirdOptions layer = o;
      if (!prefix.empty()) layer.seed = o.seed + stream_id("bigbird.layer " + prefix);
      return bigbird_family(layer);
    };
  return config;
}

}  // namespace

void register_bigbird_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, bigbird_info(), parse_bigbird);
  set_attention_kind_rules("bigbird", {"window_blocks odd unless causal (a bidirectional window is centred)",
                                      "global_placement = ends makes the first and the last blocks global only "
                                      "without a causal mask (causal: the first global_blocks)"});
}

}  // namespace lf
