// `reformer` (Kitaev et al. 2020): LSH attention with shared QK. These are the kernels on already
// projected tensors, checked and dispatched by ops/reformer.h; the layer in attention/reformer.cpp adds
// the maps (to_qk, to_v, to_out) and registers the kind.
//
// Per head i and hash round r:
//   bucket_r(t) = argmax([kn_t R_r; −kn_t R_r])           R_r: d_h × n_buckets/2, N(0, 1)
//                 (a padded position: n_buckets, one past the last, whatever it holds: it sorts after
//                 every real position and takes no part in any chunk)
//   sort positions by (bucket, position) (stable), cut the sorted real positions into chunks of `chunk`:
//     global chunking (the paper): chunk c = sorted positions [c·L, (c+1)·L) of the sample's n_b real
//                                  ones, across bucket borders; a query sees its chunk and the previous
//                                  one (chunk 0: the last, ⌈n_b/L⌉ − 1); with across_buckets false only
//                                  the keys of its own bucket there.
//     bucket chunking:             chunks restart at every bucket (the k-th L positions of a bucket),
//                                  a query sees its chunk and the previous chunk of its own bucket
//                                  (no wrap-around); only positions of the same bucket, and which ones
//                                  depends only on earlier positions: strictly causal.
//   visible keys j of query t: in those chunks, j ≤ t when causal (padded keys are in no chunk);
//   s_tj = scale · q_t · kn_j − (dedup ? log N_tj : 0), N_tj = the number of rounds in which j is
//   visible to t (the paper's duplicate correction: a key seen in several rounds counts once);
//   s_tt = −1e5 (a query attends to itself only when it has no other key)
//   o_r,t = softmax_j(s_tj) v_j,  z_r,t = log Σ_j exp(s_tj)
// and the rounds combine by their log-sum-exp: o_t = Σ_r exp(z_r,t − Z_t) o_r,t, Z_t = log Σ_r exp(z_r,t)
// (without dedup a key seen in several rounds counts several times: o_t is one softmax over every
// (round, key) pair). Padded queries get output 0. Since padded positions sort last and take no part,
// a padded sample's real outputs are those of the sample alone.
// Layouts: q, kn, v, o (B, n, h·d_h); buckets and perm (n_hashes, B, h, n) int32; stats (2, B, h, n).
#pragma once
#include <cstdint>

#include "core/attention_shape.h"

namespace lf {

// The score a query gives itself (replacing scale·q·k): low enough to vanish beside any other key,
// finite so that a query with no other key still attends to itself.
inline constexpr double kReformerSelfScore = -1e5;

// R (n_hashes, h, d_h, n_buckets/2): entry (r, i, c, j) = normal_f64(seed, stream, ((r·h + i)·d_h + c)·2²⁴ + j),
// so the rotations for fewer buckets are the first columns of those for more.
template <class T>
void reformer_rotations(uint64_t seed, uint64_t stream, int64_t n_hashes, int64_t h, int64_t d_h, int64_t n_buckets,
                        T* R);

// buckets (n_hashes, B, h, n) of the vectors u (B, n, h·d_h) under the rotations R: argmax of
// [u R; −u R] (the first index on ties), n_buckets for a padded position. Parallel over (round, batch, head, block of positions).
template <class T>
void reformer_hash(const ReformerShape& s, const T* u, const T* R, int32_t* buckets);

// buckets (n_hashes, B, h, n): 0 for every real position, n_buckets for the padded.
void reformer_single_bucket(const ReformerShape& s, int32_t* buckets);

// perm (n_hashes, B, h, n): the positions sorted by (bucket, position), a stable counting sort
// (n_buckets + 1 values: the padded positions last).
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

// The keys of shared QK: kn (rows, d_h) = u / max(‖u‖, floor) row by row, with the norms (rows) kept
// for the backward.
template <class T>
void l2_normalize_rows(const T* u, int64_t rows, int64_t d_h, double floor, T* kn, T* norms);

// Its backward, added into du (rows, d_h): du += (dkn − kn (kn·dkn)) / ‖u‖, or dkn / floor where the
// norm is below the floor.
template <class T>
void l2_normalize_rows_backward(const T* kn, const T* norms, const T* dkn, int64_t rows, int64_t d_h, double floor,
                                T* du);

}  // namespace lf
