// `bigbird` (Zaheer et al. 2020): block-sparse attention. Positions are cut into blocks of b (the last
// one may be shorter); query block β sees whole key blocks:
//   global blocks [0, g) see every block; the others see the g global blocks, a window of w blocks
//   centred on β (causal: β and the w − 1 before it) and r random blocks drawn, per query block and
//   without replacement, from the blocks not already seen (causal: the earlier ones only)
// then causality (j ≤ t) and the key padding mask apply per position. The random blocks are a pure
// function of (seed, n): Philox draws, the same for every run, thread count, head, batch item and
// layer with that seed. Time O(B·n·b·(w + g + r)·d + B·g·b·n·d).
#include <algorithm>
#include <memory>
#include <vector>

#include "attention/options.h"
#include "attention/sparse_pattern.h"
#include "linformer/rng.h"

namespace lf {
namespace {

// The random blocks are drawn for the padded length: a padded text's pattern is not its own.
AttentionSupport bigbird_support() {
  AttentionSupport s = sparse_pattern_support();
  s.padding_invariant = false;
  return s;
}

const AttentionKindInfo& bigbird_info() {
  static const AttentionKindInfo info{
      "bigbird", "BigBird: block-sparse window + global + random blocks, O(n·b·(w + g + r))", bigbird_support()};
  return info;
}

struct BigBirdOptions {
  int64_t block = 64, window_blocks = 3, global_blocks = 1, random_blocks = 3;
  uint64_t seed = 0;
  bool causal = false;
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
    if (qb < o.global_blocks) {
      for (int64_t kb = 0; kb <= last; ++kb) blocks.push_back(int32_t(kb));
      continue;
    }
    std::fill(seen.begin(), seen.end(), uint8_t(0));
    for (int64_t kb = 0; kb < std::min(o.global_blocks, nb); ++kb) seen[size_t(kb)] = 1;
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
  o.global_blocks = r.get_int("global_blocks", 1);
  LF_REQUIRE(o.global_blocks >= 0 && o.global_blocks <= max_blocks, r.where("global_blocks"), " must be in [0, ",
             max_blocks, "] (the blocks of max_len), got ", o.global_blocks);
  o.random_blocks = r.get_int("random_blocks", 3);
  LF_REQUIRE(o.random_blocks >= 0, r.where("random_blocks"), " must be >= 0, got ", o.random_blocks);
  const int64_t seed = r.get_int("seed", 0);
  LF_REQUIRE(seed >= 0, r.where("seed"), " must be >= 0, got ", seed);
  o.seed = uint64_t(seed);
  return finish_sparse_kind(r, resolved, [o](int64_t n) -> RowKeys {
    const int64_t nb = (n + o.block - 1) / o.block;
    auto layout = std::make_shared<const std::vector<std::vector<int32_t>>>(bigbird_layout(o, nb));
    return [layout, n, block = o.block](int64_t t, std::vector<int32_t>& keys) {
      for (int32_t kb : (*layout)[size_t(t / block)])
        for (int64_t j = int64_t(kb) * block; j < std::min(n, (int64_t(kb) + 1) * block); ++j) keys.push_back(int32_t(j));
    };
  });
}

}  // namespace

void register_bigbird_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, bigbird_info(), parse_bigbird);
}

}  // namespace lf
