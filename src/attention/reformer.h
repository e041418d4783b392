// `reformer` (Kitaev et al. 2020): LSH attention with shared QK. These are the kernels on already
// projected tensors; the layer in reformer.cpp adds the maps (to_qk, to_v, to_out), the key
// normalisation and registers the kind.
//
// Per head i and hash round r:
//   bucket_r(t) = argmax([kn_t R_r; −kn_t R_r])           R_r: d_h × n_buckets/2, N(0, 1), fixed seed
//                 (a padded position: n_buckets − 1, whatever it holds)
//   sort positions by (bucket, position) (stable), cut the sorted sequence into chunks of `chunk`:
//     global chunking (the paper): chunk c = sorted positions [c·L, (c+1)·L), across bucket borders;
//                                  a query sees its chunk and the previous one (chunk 0: the last).
//     bucket chunking:             chunks restart at every bucket (the k-th L positions of a bucket),
//                                  a query sees its chunk and the previous chunk of its own bucket
//                                  (no wrap-around); only positions of the same bucket, and which ones
//                                  depends only on earlier positions: strictly causal.
//   visible keys j of query t: in those chunks, not padding, j ≤ t when causal;
//   s_tj = scale · q_t · kn_j, and s_tt = −1e5 (a query attends to itself only when it has no other key)
//   o_r,t = softmax_j(s_tj) v_j,  z_r,t = log Σ_j exp(s_tj)
// and the rounds combine by their log-sum-exp: o_t = Σ_r exp(z_r,t − Z_t) o_r,t, Z_t = log Σ_r exp(z_r,t)
// (a key seen in several rounds counts several times: o_t is one softmax over every (round, key) pair).
// Layouts: q, kn, v, o (B, n, h·d_h); buckets and perm (n_hashes, B, h, n) int32; stats (2, B, h, n).
#pragma once
#include <cstdint>
#include <string>

#include "linformer/rng.h"

namespace lf {

// The score a query gives itself (replacing scale·q·k): low enough to vanish beside any other key,
// finite so that a query with no other key still attends to itself.
inline constexpr double kReformerSelfScore = -1e5;

struct ReformerShape {
  int64_t B = 0, n = 0, h = 0, d_h = 0;
  int64_t n_hashes = 1, n_buckets = 2, chunk = 64;  // rounds, buckets (even), chunk length L
  bool bucket_chunks = false;                       // bucket chunking (else global)
  bool causal = false;                              // key j hidden from query t when j > t
  double scale = 1;
  const uint8_t* key_mask = nullptr;  // (B, n), nonzero = padding, or null
  double dropout = 0;                 // on the probabilities
  uint64_t seed = 0;                  // dropout stream key
};

// The Philox stream of a layer's rotations: each layer (parameter prefix) hashes differently.
inline uint64_t reformer_rotation_stream(const std::string& prefix) { return stream_id(prefix + "lsh_rotations"); }

// R (n_hashes, h, d_h, n_buckets/2): entry (r, i, c, j) = normal_f64(seed, stream, ((r·h + i)·d_h + c)·2²⁴ + j),
// so the rotations for fewer buckets are the first columns of those for more.
template <class T>
void reformer_rotations(uint64_t seed, uint64_t stream, int64_t n_hashes, int64_t h, int64_t d_h, int64_t n_buckets,
                        T* R);

// buckets (n_hashes, B, h, n) of the vectors u (B, n, h·d_h) under the rotations R: argmax of
// [u R; −u R] (the first index on ties). Parallel over (round, batch, head, block of positions).
template <class T>
void reformer_hash(const ReformerShape& s, const T* u, const T* R, int32_t* buckets);

// perm (n_hashes, B, h, n): the positions sorted by (bucket, position), a stable counting sort.
void reformer_sort(const ReformerShape& s, const int32_t* buckets, int32_t* perm);

// out (B, n, h·d_h) and stats (2, B, h, n): M_t, the largest visible score, and log ℓ_t, the log of
// Σ exp(s − M) over every visible (round, key) pair, so Z_t = M_t + log ℓ_t (kept apart: a lone query's
// score is −1e5, where a float Z would round by 0.006). A query that sees no key in any round gets
// output 0 and M = +inf. Rounds in order; within a round parallel over (batch, head, chunk).
template <class T>
void reformer_forward(const ReformerShape& s, const T* q, const T* kn, const T* v, const int32_t* buckets,
                      const int32_t* perm, T* out, T* stats);

// From dout (B, n, h·d_h), with out and stats of reformer_forward: dq, dkn, dv (B, n, h·d_h), overwritten.
// Scores are recomputed chunk by chunk. Within a round the chunks run in two or three passes of
// chunks that share no key rows, so no two threads add into the same row and the sums' order is fixed.
template <class T>
void reformer_backward(const ReformerShape& s, const T* q, const T* kn, const T* v, const int32_t* buckets,
                       const int32_t* perm, const T* out, const T* stats, const T* dout, T* dq, T* dkn, T* dv);

}  // namespace lf
