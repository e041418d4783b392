// Sparse-pattern attention: multi-head scaled dot-product attention in which query t sees only the
// keys its row of a fixed sparse pattern lists. The core shared by the kinds `local`, `strided`,
// `global`, `longformer` and `bigbird`; each of them only defines its pattern (one small file each).
//
//   O_{b,i,t} = Σ_{j ∈ S(t)} dropout(P_{b,i,t,j}) V_{b,i,j},
//   P_{b,i,t,·} = softmax_{j ∈ S(t)}(scale · Q_{b,i,t} · K_{b,i,j}),  S(t) = pattern row t minus masked keys
//
// Here: the building blocks of the kinds' patterns and the layer; the pattern's data (CSR, built once
// per length and shared by the layers of a kind) is in core/sparse_pattern.h, the forward and backward
// (ops::sparse_attention_forward / backward) in ops/sparse_attention.h.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention/options.h"
#include "core/sparse_pattern.h"
#include "linformer/attention.h"

namespace lf {

// The pattern (SparsePattern, RowKeys), the call's shape (SparseShape) and the forward and backward
// are in core/sparse_pattern.h and ops/sparse_attention.h.

// A kind's pattern definition: the RowKeys of a call with n positions.
using PatternFamily = std::function<RowKeys(int64_t n)>;

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
  // A causal query at t sees no key before t − decode_window (-1: it may see any earlier key): what a
  // decoding state keeps (a window of the last positions when >= 0, the whole KV cache otherwise).
  int64_t decode_window = -1;
  // The rows of a position depend on the sequence's length beyond clipping at n (bigbird: the random
  // blocks and the last global block). Under a key padding mask each sample then takes the pattern of
  // its real length (its last unpadded position + 1), so that a padded sample sees what it sees alone.
  bool length_dependent = false;
  // When set, a layer's pattern family from its parameter prefix (e.g. "layers.3.attn."), replacing
  // `family`: bigbird draws its random blocks per layer.
  std::function<PatternFamily(const std::string& prefix)> layer_family;
};

// Parses a kind's options (throwing lf::InvalidArgument naming a bad one), writes the options with
// every default filled in to *resolved when given, and returns the kind's configuration.
using SparseKindParser = std::function<SparseKindConfig(const AttentionDims&, const json& options, json* resolved)>;

// A pattern kind's parser's last step: reads qkv_bias, refuses unknown options and writes *resolved
// (r.finish), and returns the configuration with the kind's pattern family.
inline SparseKindConfig finish_sparse_kind(OptionReader& r, json* resolved, PatternFamily family,
                                           int64_t decode_window = -1) {
  SparseKindConfig c;
  c.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  c.family = std::move(family);
  c.decode_window = decode_window;
  return c;
}

// Registers a sparse-pattern kind: self-attention with the standard Q/K/V/out maps (QkvoProjections)
// around the core above. Causal layers decode incrementally: a KV cache (kKvCache), or only the last
// decode_window positions (kWindow), and each new query attends to its pattern row's keys only. Layers whose kind, options and causality agree share one pattern per length
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
