// The shapes of the attention cores that the ops (src/ops/) and their kernels (src/cpu/) share: the
// sizes and options of one call of scaled dot-product attention (SdpaShape) and of LSH attention
// (ReformerShape), and the Philox stream of the dropout on attention probabilities.
#pragma once
#include <cstdint>

namespace lf {

// Philox stream of the dropout on the attention probabilities: element (b, i, t, j) of P (B, h, n, mk)
// is kept when uniform01(seed, kProbsDropoutStream, ((b·h + i)·n + t)·mk + j) >= p. Every kind that
// drops probabilities uses it, so that `flash` and `full` draw the same mask.
inline constexpr uint64_t kProbsDropoutStream = 0x5d0a7e11ull;

// The key/value head that query head i of h reads when hk key/value heads are shared by groups of
// h / hk consecutive query heads (hk divides h): grouped-query attention, as PyTorch SDPA's
// enable_gqa; hk = h is multi-head, hk = 1 multi-query attention.
inline int64_t kv_head_of(int64_t i, int64_t h, int64_t hk) { return i / (h / hk); }

// Layouts: Q (B, n, h·d_h), K and V (B, mk, hk·d_h), O (B, n, h·d_h), P (B, h, n, mk).
struct SdpaShape {
  int64_t B = 0, n = 0, mk = 0;  // batch, query length, key length
  int64_t h = 0, hk = 0, d_h = 0;  // query heads, key/value heads (a divisor of h), head width
  double scale = 1;
  bool causal = false;               // key j hidden from query t when j > q_start + t
  const uint8_t* key_mask = nullptr;  // (B, mk), nonzero = padding, or null
  double dropout = 0;                // on the probabilities
  uint64_t seed = 0;                 // dropout stream key
  // Causal: the queries are positions [q_start, q_start + n) of the keys (mk == q_start + n), as when a
  // decoding step's n new queries attend to q_start cached keys and their own.
  int64_t q_start = 0;
  // An arbitrary mask and additive bias on the scores, (score_B, score_h, n, mk) each, score_B 1 or
  // B and score_h 1 or h (broadcast): score_mask nonzero = attended; score_bias (of the kernel's T:
  // score_bias_of<T>()) finite or −inf, added to the scaled scores. Null for none.
  const uint8_t* score_mask = nullptr;
  const void* score_bias = nullptr;
  int64_t score_B = 1, score_h = 1;

  // Where (b, i)'s n × mk block of score_mask and score_bias starts.
  int64_t score_block(int64_t b, int64_t i) const {
    return ((score_B == 1 ? 0 : b) * score_h + (score_h == 1 ? 0 : i)) * n * mk;
  }
  const uint8_t* score_mask_of(int64_t b, int64_t i) const { return score_mask ? score_mask + score_block(b, i) : nullptr; }
  template <class T>
  const T* score_bias_of(int64_t b, int64_t i) const {
    return score_bias ? static_cast<const T*>(score_bias) + score_block(b, i) : nullptr;
  }
};

// LSH attention with shared QK (src/cpu/reformer.h has the definition). Layouts: q, kn, v, o
// (B, n, h·d_h); buckets and perm (n_hashes, B, h, n) int32; stats (2, B, h, n).
struct ReformerShape {
  int64_t B = 0, n = 0, h = 0, d_h = 0;
  int64_t n_hashes = 1, n_buckets = 2, chunk = 64;  // rounds, buckets (even), chunk length L
  bool bucket_chunks = false;                       // bucket chunking (else global)
  bool causal = false;                              // key j hidden from query t when j > t
  double scale = 1;
  const uint8_t* key_mask = nullptr;  // (B, n), nonzero = padding, or null
  double dropout = 0;                 // on the probabilities
  uint64_t seed = 0;                  // dropout stream key
  bool across_buckets = true;         // global chunking: keys of other buckets visible
  bool dedup = false;                 // scores − log(rounds in which the query sees the key)
};

// The LSH kernels' blocks: query rows of one score block, positions of one hashing product (the
// layer's memory estimate counts their per-thread scratch).
inline constexpr int64_t kReformerQueryBlock = 64, kReformerHashBlock = 64;

}  // namespace lf
