// The ops of `sinkhorn` (Sparse Sinkhorn Attention, src/attention/sinkhorn.cpp). The sequence is cut
// into n_b = ⌈n/b⌉ blocks of b positions (n_p = n_b·b); masks: valid (B, n_p) (t < n and not
// padding), partner_valid (B, n_b, b) (row r of block i's sorted partner can hold a valid key).
//   means:  s_i = mean of x over the valid positions of block i (causal: over the blocks before i)
//   sort:   P = exp(L), L = `iters` rounds of row and column log-normalisation of R/τ (Sinkhorn), one
//           (n_b × n_b) P per (sample, head) from the scores R (B, n_b, h·N_b), head i in columns
//           i·N_b + j, j < n_b (causal: only j < i exist); iters = 0: the row softmax of R/τ only
//           (non-permutative: a block may be the partner of several)
//   heads:  (B, n, h·d_h) ↔ head-major (B, h, n_p, d_h) with invalid positions zero
//   block attention: O_t = softmax(Q_t [K_i; K̃_i]ᵀ/√d_h + masks) [V_i; Ṽ_i] for t in block i, with the
//           own-block key c hidden when invalid (causal: or c > t's row), the partner's row r when
//           !partner_valid; dropout on the probabilities, element (b, h, t, c) of (B, h, n_p, 2b) kept
//           when uniform01(seed, kProbsDropoutStream, its index) ≥ p.
// Backward ops overwrite their outputs, except block_means_backward, which adds into dx.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

using Mask = TensorView<const uint8_t>;

// means (B, n_b, d) from x (B, n, d).
template <class T>
void sinkhorn_block_means_forward(In<T> x, Mask valid, bool causal, TensorView<T> means);
// dx (B, n, d) += the gradient for dmeans (B, n_b, d).
template <class T>
void sinkhorn_block_means_backward(In<T> dmeans, Mask valid, bool causal, TensorView<T> dx);

// perm (B, h, n_b, n_b) from scores (B, n_b, h·N_b). sample_blocks: empty, or (B) each sample's blocks
// (in [1, n_b]): its permutation over its first blocks only, zero elsewhere (a ragged batch's padding).
template <class T>
void sinkhorn_sort_forward(In<T> scores, int64_t iters, double temperature, bool causal, TensorView<T> perm,
                           TensorView<const int64_t> sample_blocks = {});
// dscores on the entries the forward read (the others untouched), from dperm (B, h, n_b, n_b).
template <class T>
void sinkhorn_sort_backward(In<T> scores, In<T> perm, In<T> dperm, int64_t iters, double temperature, bool causal,
                            TensorView<T> dscores, TensorView<const int64_t> sample_blocks = {});

// heads (B, h, n_p, d_h) from x (B, n, h·d_h); merge: x from heads.
template <class T>
void sinkhorn_split_heads(In<T> x, Mask valid, TensorView<T> heads);
template <class T>
void sinkhorn_merge_heads(In<T> heads, Mask valid, TensorView<T> x);

// What the block attention reads besides its tensors.
struct SinkhornMasks {
  Mask valid;          // (B, n_p)
  Mask partner_valid;  // (B, n_b, b)
  bool causal = false;
  double dropout = 0;
  uint64_t seed = 0;
};

// o (B, n, h·d_h) from q (B, n, h·d_h) and k, v, k_sorted, v_sorted (B, h, n_p, d_h); probs
// (B, h, n_p, 2b) receives the softmax before dropout, or is empty (inference).
template <class T>
void sinkhorn_block_attention_forward(const SinkhornMasks& m, In<T> q, In<T> k, In<T> v, In<T> k_sorted,
                                      In<T> v_sorted, TensorView<T> probs, TensorView<T> o);
// From d_o: dq, and dk, dv, dk_sorted, dv_sorted (head-major).
template <class T>
void sinkhorn_block_attention_backward(const SinkhornMasks& m, In<T> q, In<T> k, In<T> v, In<T> k_sorted,
                                       In<T> v_sorted, In<T> probs, In<T> d_o, TensorView<T> dq, TensorView<T> dk,
                                       TensorView<T> dv, TensorView<T> dk_sorted, TensorView<T> dv_sorted);

// Elements of scratch across all threads (for memory estimates): the block attention's, for blocks
// of b, and the sort backward's, for n_b blocks.
double sinkhorn_forward_scratch(double block);
double sinkhorn_backward_scratch(double nb, int64_t iters);

}  // namespace lf::ops
