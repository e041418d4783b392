// Sparse-pattern attention: multi-head scaled dot-product attention in which query t sees only the
// keys its row of a fixed sparse pattern lists. The core shared by the kinds `local`, `strided`,
// `global`, `longformer` and `bigbird`; each of them only defines its pattern (one small file each).
//
//   O_{b,i,t} = Σ_{j ∈ S(t)} dropout(P_{b,i,t,j}) V_{b,i,j},
//   P_{b,i,t,·} = softmax_{j ∈ S(t)}(scale · Q_{b,i,t} · K_{b,i,j}),  S(t) = pattern row t minus masked keys
//
// The pattern is stored as CSR (row t: the sorted keys it may see), the same for every batch item and
// head; causality (j > t hidden) and the key padding mask are applied on top, and a row with no visible
// key outputs zeros (not NaN). The forward keeps the probabilities of the nnz entries only,
// (B, h, nnz); an inference forward keeps nothing. The backward walks the rows for dQ and the
// transposed pattern (CSC) for dK and dV, so every output element is summed by one thread in a fixed
// order: results do not depend on the thread count. Dense stretches of the pattern (a window,
// BigBird's blocks) run as tile products over a block's rows × the union of their keys.
// Time O(B·h·nnz·d_h), memory O(B·h·nnz + B·n·d).
// Layouts: q, o (B, n, h·d_h), k, v (B, m, h·d_h), probs (B, h, nnz).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "linformer/attention.h"
#include "attention/options.h"

namespace lf {

// Appends to `keys` the keys row t may see, in any order; build_sparse_pattern() sorts them, removes
// duplicates and keys outside [0, m), and (causal) keys after t.
using RowKeys = std::function<void(int64_t t, std::vector<int32_t>& keys)>;
// A kind's pattern definition: the RowKeys of a call with n positions.
using PatternFamily = std::function<RowKeys(int64_t n)>;

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
  int64_t max_row() const;  // the longest row
  double bytes() const;     // memory held
};

// The pattern of n queries over m keys from its rows (causal: keys j > t dropped); with_transpose also
// builds the CSC. Throws when nnz exceeds 2³¹ − 1 (the entry indices are 32-bit).
SparsePattern build_sparse_pattern(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, bool with_transpose);
// Adds the CSC to a pattern built without it.
void add_transpose(SparsePattern& p);
// nnz of that pattern without storing it (for FLOP and memory estimates).
int64_t count_pattern_entries(int64_t n, int64_t m, bool causal, const RowKeys& row_keys);
// Bytes of a pattern with that nnz (CSR, and the CSC with the transpose).
inline double pattern_bytes(int64_t n, int64_t m, int64_t nnz, bool with_transpose) {
  return 8.0 * double(n + 1) + 4.0 * double(nnz) + (with_transpose ? 8.0 * double(m + 1) + 8.0 * double(nnz) : 0.0);
}

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
};

// out (B, n, h·d_h). keep_probs: probs (B, h, nnz) receives the probabilities (before dropout) for the
// backward; without it probs is ignored (may be null) and a per-thread row scratch is used.
template <class T>
void sparse_attention_forward(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                              T* probs, T* out, bool keep_probs);

// From dout (B, n, h·d_h), with out and probs from the forward: dq (B, n, h·d_h), dk and dv (B, m, h·d_h),
// all overwritten. The pattern needs its transpose.
template <class T>
void sparse_attention_backward(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                               const T* out, const T* probs, const T* dout, T* dq, T* dk, T* dv);

// The plain reference of the forward: dense n×m loops in double over the same pattern and masks.
template <class T>
void sparse_attention_forward_ref(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                                  T* out);

// ---- building blocks of the kinds' patterns ----------------------------------------------------------

// A sliding window around t (clipped to [0, n)): bidirectional, t + k·dilation for |k| ≤ ⌊window/2⌋;
// causal, t − k·dilation for 0 ≤ k ≤ window (the `window` previous keys at that spacing and t itself).
void append_window(int64_t t, int64_t n, int64_t window, int64_t dilation, bool causal, std::vector<int32_t>& keys);

// The options `global_tokens` (the first g positions) and `global_indices` (a list) of `global` and
// `longformer`: returns the sorted, distinct global positions, all in [0, max_len). global_tokens
// defaults to `default_tokens` without global_indices and to 0 with them.
std::vector<int64_t> read_global_positions(OptionReader& r, const AttentionDims& dims, int64_t default_tokens);

// A kind's rows for a given pattern of global positions G: a global row sees every key; any other row
// sees G and what `local_keys` appends (its own neighbourhood).
RowKeys global_rows(int64_t n, const std::vector<int64_t>& global_positions,
                    std::function<void(int64_t t, std::vector<int32_t>& keys)> local_keys);

// ---- the layer -----------------------------------------------------------------------------------------

// What a kind's option parser returns: the Q/K/V bias switch and the pattern of each length.
struct SparseKindConfig {
  bool qkv_bias = false;
  PatternFamily family;
};

// Parses a kind's options (throwing lf::InvalidArgument naming a bad one), writes the options with
// every default filled in to *resolved when given, and returns the kind's configuration.
using SparseKindParser = std::function<SparseKindConfig(const AttentionDims&, const json& options, json* resolved)>;

// A pattern kind's parser's last step: reads qkv_bias, refuses unknown options and writes *resolved
// (r.finish), and returns the configuration with the kind's pattern family.
inline SparseKindConfig finish_sparse_kind(OptionReader& r, json* resolved, PatternFamily family) {
  SparseKindConfig c;
  c.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  c.family = std::move(family);
  return c;
}

// Registers a sparse-pattern kind: self-attention with the standard Q/K/V/out maps (QkvoProjections)
// around the core above. Layers whose kind, options and causality agree share one pattern per length
// (a process-wide cache of weak references), so a deep model holds one copy.
void register_sparse_pattern_kind(AttentionRegistry& registry, const AttentionKindInfo& info, SparseKindParser parse);

// The pattern a registered sparse-pattern kind (`local`, ...) uses for n positions under these dims
// (causality) and options, with its transpose; for tests and tools. Throws for other kinds.
SparsePattern sparse_kind_pattern(const std::string& kind, const AttentionDims& dims, const json& options, int64_t n);

// The support every sparse-pattern kind declares: causal (the pattern ∩ {j ≤ t}), key padding mask,
// variable length; no cross-attention.
inline AttentionSupport sparse_pattern_support() {
  return AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true,
                          /*cross_attention=*/false};
}

}  // namespace lf
