// `longformer` (Beltagy et al. 2020): a sliding window, optionally dilated, plus global positions that
// attend to all and are attended by all:
//   S(t) = all keys (t ∈ G),  G ∪ {t + k·δ : |k| ≤ ⌊w/2⌋} (t ∉ G)   (causal: {t − k·δ : 0 ≤ k ≤ w}, j ≤ t)
// with w = window, δ = dilation, G = the first `global_tokens` positions and the `global_indices`.
// The key padding mask hides padded keys (global or not) from every query. Time O(B·n·(w + g)·d + B·g·n·d).
#include <algorithm>
#include <vector>

#include "attention/options.h"
#include "attention/sparse_pattern.h"

namespace lf {
namespace {

const AttentionKindInfo& longformer_info() {
  static const AttentionKindInfo info{
      "longformer", "Longformer: (dilated) sliding window plus global tokens, O(n·(w + g))", sparse_pattern_support()};
  return info;
}

SparseKindConfig parse_longformer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("longformer", options);
  const int64_t window = r.get_int("window", std::min<int64_t>(256, dims.max_len));
  LF_REQUIRE(window >= 0, r.where("window"), " must be >= 0, got ", window);
  const int64_t dilation = r.get_int("dilation", 1);
  LF_REQUIRE(dilation >= 1, r.where("dilation"), " must be >= 1 (1: no gaps), got ", dilation);
  const std::vector<int64_t> globals = read_global_positions(r, dims, 1);  // [CLS], as in the paper's tasks
  const bool causal = dims.causal;
  // Without global positions a causal query sees back window·dilation positions at most.
  return finish_sparse_kind(
      r, resolved,
      [globals, window, dilation, causal](int64_t n) -> RowKeys {
        return global_rows(n, globals, [=](int64_t t, std::vector<int32_t>& keys) {
          append_window(t, n, window, dilation, causal, keys);
        });
      },
      /*decode_window=*/globals.empty() ? window * dilation : -1);
}

}  // namespace

void register_longformer_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, longformer_info(), parse_longformer);
}

}  // namespace lf
