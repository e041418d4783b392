// `local`: sliding-window attention. Query t sees the keys within ⌊window/2⌋ positions on either side
// (bidirectional) or the `window` previous keys and itself (causal), never an n×n matrix:
//   O_t = softmax_{j ∈ W(t)}(q_t · k_j / √d_h) V,  W(t) = {j : |t − j| ≤ ⌊w/2⌋}  or  {j : t − w ≤ j ≤ t}
// Time O(B·n·w·d), memory O(B·h·n·w) for the kept probabilities (sparse_pattern.h is the core).
#include <algorithm>
#include <vector>

#include "attention/options.h"
#include "attention/sparse_pattern.h"

namespace lf {
namespace {

const AttentionKindInfo& local_info() {
  static const AttentionKindInfo info{"local", "sliding-window softmax attention (w neighbours per query), O(n·w)",
                                      sparse_pattern_support()};
  return info;
}

SparseKindConfig parse_local(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("local", options);
  const int64_t window = r.get_int("window", std::min<int64_t>(256, dims.max_len));
  LF_REQUIRE(window >= 0, r.where("window"), " must be >= 0 (0: each position sees only itself), got ", window);
  const bool causal = dims.causal;
  return finish_sparse_kind(
      r, resolved,
      [window, causal](int64_t n) -> RowKeys {
        return [=](int64_t t, std::vector<int32_t>& keys) { append_window(t, n, window, 1, causal, keys); };
      },
      /*decode_window=*/window);
}

}  // namespace

void register_local_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, local_info(), parse_local);
}

}  // namespace lf
