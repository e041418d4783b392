// `strided`: the Sparse Transformer's strided pattern (Child et al. 2019). Query t sees the keys at a
// multiple of the stride s from it (dilated), and optionally a local band:
//   S(t) = {j : (t − j) mod s = 0} ∪ W_l(t)   (causal: j ≤ t in both)
// where W_l is `local`'s window of l = local_window keys (l = s causal is the paper's pattern:
// A⁽¹⁾ = {t − s, …, t}, A⁽²⁾ = {j : (t − j) mod s = 0}, both in one head). Time O(B·n·(n/s + l)·d); with
// the default s = ⌈√max_len⌉ that is O(n√n), the paper's cost.
#include <cmath>
#include <vector>

#include "attention/options.h"
#include "attention/sparse_pattern.h"

namespace lf {
namespace {

const AttentionKindInfo& strided_info() {
  static const AttentionKindInfo info{
      "strided", "Sparse Transformer strided attention: keys every s positions plus a local band, O(n·(n/s + l))",
      sparse_pattern_support(),
      // The entry-by-entry path of its strided keys: the benchmarks stop at 8192.
      /*quadratic_memory=*/false, /*bench_options=*/json::object(), /*bench_max_len=*/8192};
  return info;
}

// ⌈√x⌉ for x ≥ 1, exactly.
int64_t ceil_sqrt(int64_t x) {
  int64_t r = int64_t(std::sqrt(double(x)));
  while (r * r < x) ++r;
  while (r > 1 && (r - 1) * (r - 1) >= x) --r;
  return r;
}

SparseKindConfig parse_strided(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("strided", options);
  const int64_t stride = r.get_int("stride", ceil_sqrt(dims.max_len));
  LF_REQUIRE(stride >= 1, r.where("stride"), " must be >= 1, got ", stride);
  const int64_t local_window = r.get_int("local_window", stride);
  LF_REQUIRE(local_window >= 0, r.where("local_window"), " must be >= 0 (0: no local band), got ", local_window);
  const bool causal = dims.causal;
  return finish_sparse_kind(r, resolved, [stride, local_window, causal](int64_t n) -> RowKeys {
    return [=](int64_t t, std::vector<int32_t>& keys) {
      for (int64_t j = t % stride; j < (causal ? t + 1 : n); j += stride) keys.push_back(int32_t(j));
      if (local_window > 0) append_window(t, n, local_window, 1, causal, keys);
    };
  });
}

}  // namespace

void register_strided_attention(AttentionRegistry& registry) {
  register_sparse_pattern_kind(registry, strided_info(), parse_strided);
}

}  // namespace lf
