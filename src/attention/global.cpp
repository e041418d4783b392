// `global`: a set G of global positions that attend to every key and that every query attends to; the
// other positions see G and their own neighbourhood (`window`, as in `local`; 0: themselves only):
//   S(t) = all keys (t ∈ G),  G ∪ W(t) (t ∉ G)   (causal: j ≤ t in both)
// G is the first `global_tokens` positions and/or the listed `global_indices`. Time O(B·(g·n + n·(g + w))·d).
#include <algorithm>
#include <vector>

#include "attention/options.h"
#include "attention/sparse_pattern.h"

namespace lf {
namespace {

const AttentionKindInfo& global_info() {
  static const AttentionKindInfo info{
      "global", "global tokens attend to all and are attended by all; the others see them and a window, O(n·g)",
      sparse_pattern_support()};
  return info;
}

SparseKindConfig parse_global(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("global", options);
  // 16 global tokens from max_len 256 up; about one in 16 positions below.
  const std::vector<int64_t> globals =
      read_global_positions(r, dims, std::min<int64_t>(16, (dims.max_len + 15) / 16));
  LF_REQUIRE(!globals.empty(), "attention kind 'global' needs at least one global position (options 'global_tokens' "
             "or 'global_indices')");
  const int64_t window = r.get_int("window", 0);
  LF_REQUIRE(window >= 0, r.where("window"), " must be >= 0 (0: the other positions see only themselves and G), got ",
             window);
  const bool causal = dims.causal;
  return finish_sparse_kind(r, resolved, [globals, window, causal](int64_t n) -> RowKeys {
    return global_rows(n, globals, [=](int64_t t, std::vector<int32_t>& keys) {
      append_window(t, n, window, 1, causal, keys);
    });
  });
}

}  // namespace

void register_global_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, global_info(), parse_global);
}

}  // namespace lf
