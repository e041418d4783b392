// The CPU kernels of `sinkhorn` (src/attention/sinkhorn.cpp; the math is in src/ops/sinkhorn.h), on
// raw buffers: Sinkhorn normalisation of the block scores into soft permutations, the block summaries,
// the head-major layout with invalid positions zeroed, and the block attention over [own; sorted].
#pragma once
#include <cstdint>

namespace lf {

// A call's blocks. Layouts: x, q, o (B, n, d), d = h·d_h; head-major K, V, K̃, Ṽ (B, h, n_p, d_h),
// n_p = n_b·b; probs (B, h, n_p, 2b); summaries (B, n_b, d).
struct SinkhornBlocks {
  int64_t B = 0, n = 0, h = 0, d_h = 0;
  int64_t block = 0, nb = 0;  // b and n_b = ⌈n / b⌉
  bool causal = false;
  const uint8_t* valid = nullptr;          // (B, n_p): t < n and not padding
  const uint8_t* partner_valid = nullptr;  // (B, n_b, b): partner row r of block i is visible
  double dropout = 0;                      // on the block probabilities
  uint64_t seed = 0;
  // The sort only: (B) blocks of each sample's real length (<= n_b), or null for n_b each. A sample's
  // permutation is that of its first blocks, zero on the others: fully padded blocks take no part.
  const int64_t* sample_blocks = nullptr;
  int64_t blocks_of(int64_t b) const { return sample_blocks ? sample_blocks[b] : nb; }
  int64_t np() const { return nb * block; }
  int64_t d() const { return h * d_h; }
};

// P (n_b × n_b) = the soft permutation of the block scores R (row i at R + i·ld_r, columns 0..n_b):
// exp of L after `iters` rounds of log-domain normalisation of L = R/τ; iters = 0: no balancing, the
// row softmax of R/τ (non-permutative). states: null, or (2·iters + 1)·n_b² elements receiving L
// before and after every half step (iters = 0: after the row softmax).
template <class T>
void sinkhorn_permutation(const T* R, int64_t ld_r, int64_t nb, int64_t iters, double temperature, bool causal, T* P,
                          T* states);
// From dP and P: dR on the existing entries (the others untouched); states, G: scratch.
template <class T>
void sinkhorn_permutation_backward(const T* R, int64_t ld_r, int64_t nb, int64_t iters, double temperature,
                                   bool causal, const T* P, const T* dP, T* dR, int64_t ld_dr, T* states, T* G);

// perm (B, h, n_b, n_b): the permutation of every (sample, head) from scores (B, n_b, h·N_b), head i in
// columns i·N_b + j, j < n_b, over the sample's first blocks_of(b) rows and columns (zero elsewhere).
// Backward: dscores on those entries from dperm (the others untouched).
template <class T>
void sinkhorn_sort_forward(const SinkhornBlocks& s, const T* scores, int64_t nb_max, int64_t iters,
                           double temperature, T* perm);
template <class T>
void sinkhorn_sort_backward(const SinkhornBlocks& s, const T* scores, int64_t nb_max, int64_t iters,
                            double temperature, const T* perm, const T* dperm, T* dscores);

// (B, n, d) → head-major (B, h, n_p, d_h), zero at invalid positions (padding and t ≥ n); merge: the
// gradient, head-major → (B, n, d), zero at invalid positions.
template <class T>
void sinkhorn_split_heads(const SinkhornBlocks& s, const T* x, T* heads);
template <class T>
void sinkhorn_merge_heads(const SinkhornBlocks& s, const T* heads, T* x);

// summ (B·n_b, d): the mean of x over the valid positions of block i, or causal over the blocks
// before i (zero when there are none). Backward: dx (B, n, d) += its gradient for dsumm.
template <class T>
void sinkhorn_block_means_forward(const SinkhornBlocks& s, const T* x, T* summ);
template <class T>
void sinkhorn_block_means_backward(const SinkhornBlocks& s, const T* dsumm, T* dx);

// o (B, n, d) from q and the head-major K, V, K̃, Ṽ; keep_probs: probs receives the softmax (before
// dropout), else it is ignored. Parallel over (sample, head, block), each task owning its rows.
template <class T>
void sinkhorn_block_attention_forward(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh, const T* ks,
                                      const T* vs, T* probs, T* o, bool keep_probs);
// From dO (B, n, d): dq (B, n, d) and the head-major dK, dV, dK̃, dṼ, all overwritten.
template <class T>
void sinkhorn_block_attention_backward(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh, const T* ks,
                                       const T* vs, const T* probs, const T* d_o, T* dq, T* dkh, T* dvh, T* dks,
                                       T* dvs);
// Its plain reference: per query, the masked softmax over [own; sorted] keys in double.
template <class T>
void sinkhorn_block_attention_forward_ref(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh,
                                          const T* ks, const T* vs, T* o);

// Elements of scratch across all threads: the forward's (two blocks of b × 2b per thread) and the
// backward's (the recomputed Sinkhorn states per thread).
double sinkhorn_forward_scratch(double block);
double sinkhorn_backward_scratch(double nb, int64_t iters);

}  // namespace lf
