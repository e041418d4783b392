// A fixed sparse attention pattern and the shape of a call over it: the data the sparse-pattern kinds
// (src/attention/sparse_pattern.h), the ops (src/ops/sparse_attention.h) and every backend's kernels
// share. The pattern is index metadata on the host (CSR, and its transpose for the backward), the same
// for every batch item and head.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace lf {

// Appends to `keys` the keys row t may see, in any order; build_sparse_pattern() sorts them, removes
// duplicates and keys outside [0, m), and (causal) keys after t.
using RowKeys = std::function<void(int64_t t, std::vector<int32_t>& keys)>;

struct SparsePattern {
  int64_t n = 0, m = 0;  // queries, keys
  std::vector<int64_t> row_ptr;    // (n + 1): row t is entries [row_ptr[t], row_ptr[t + 1])
  std::vector<int32_t> cols;       // (nnz): the key of each entry, sorted within a row
  // The transpose (CSC), built for the backward: key j's entries are [col_ptr[j], col_ptr[j + 1]),
  // each with its query (col_rows, ascending) and its entry index in the CSR order (col_entry).
  std::vector<int64_t> col_ptr;    // (m + 1), empty without the transpose
  std::vector<int32_t> col_rows;   // (nnz)
  std::vector<int32_t> col_entry;  // (nnz)

  int64_t nnz() const { return int64_t(cols.size()); }
  bool has_transpose() const { return !col_ptr.empty(); }
  int64_t max_row() const {  // the longest row
    int64_t longest = 0;
    for (int64_t t = 0; t < n; ++t) longest = std::max(longest, row_ptr[size_t(t + 1)] - row_ptr[size_t(t)]);
    return longest;
  }
  double bytes() const;  // memory held
};

// Bytes of a pattern with that nnz (CSR, and the CSC with the transpose).
inline double pattern_bytes(int64_t n, int64_t m, int64_t nnz, bool with_transpose) {
  return 8.0 * double(n + 1) + 4.0 * double(nnz) + (with_transpose ? 8.0 * double(m + 1) + 8.0 * double(nnz) : 0.0);
}
inline double SparsePattern::bytes() const { return pattern_bytes(n, m, nnz(), has_transpose()); }

struct SparseShape {
  int64_t B = 0, n = 0, m = 0;  // batch, queries, keys
  int64_t h = 0, d_h = 0;       // heads, head width
  double scale = 1;
  bool causal = false;                // key j hidden from query t when j > t
  const uint8_t* key_mask = nullptr;  // (B, m), nonzero = padding, or null
  // On the probabilities: element (b, i, t, j) is kept when uniform01(seed, kProbsDropoutStream,
  // ((b·h + i)·n + t)·m + j) >= dropout, the dense index of sdpa.h, so that with the same seed the
  // mask equals `full`'s on the pattern's entries.
  double dropout = 0;
  uint64_t seed = 0;
  // A block of 32 query rows (or keys) runs as dense tile products over its rows × the union of its
  // keys when its entries fill at least this fraction of that tile, else entry by entry (the same
  // result up to rounding). 0: tiles whenever possible; above 1: never (the tests run both ways).
  double tile_density = 0.25;
  // The first sample's index in the whole batch (b of the dropout index above): a layer that runs its
  // samples one call each, with patterns of their own, draws the mask of the batched call.
  int64_t batch_offset = 0;
};

}  // namespace lf
