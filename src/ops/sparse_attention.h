// Sparse-pattern attention: multi-head scaled dot-product attention in which query t sees only the
// keys its row of a fixed sparse pattern lists (the core of `local`, `strided`, `global`, `longformer`
// and `bigbird`; src/attention/sparse_pattern.h).
//
//   O_{b,i,t} = Σ_{j ∈ S(t)} dropout(P_{b,i,t,j}) V_{b,i,j},
//   P_{b,i,t,·} = softmax_{j ∈ S(t)}(scale · Q_{b,i,t} · K_{b,i,j}),  S(t) = pattern row t minus masked keys
//
// Causality (j > t hidden) and the key padding mask of the SparseShape apply on top of the pattern; a
// row with no visible key outputs zeros (not NaN). The forward keeps the probabilities of the nnz
// entries only, (B, h, nnz); an inference forward keeps nothing. Results do not depend on the thread
// count. Time O(B·h·nnz·d_h), memory O(B·h·nnz + B·n·d).
// Views: q, out (B, n, h·d_h), k, v (B, m, h·d_h) contiguous; probs (B, h, nnz) or empty.
#pragma once
#include <cstdint>

#include "core/sparse_pattern.h"
#include "ops/view_args.h"

namespace lf::ops {

// The pattern of n queries over m keys from its rows (causal: keys j > t dropped); with_transpose also
// builds the CSC the backward needs. Index metadata on the host, whichever device runs the attention.
// Throws when nnz exceeds 2³¹ − 1 (the entry indices are 32-bit).
SparsePattern build_sparse_pattern(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, bool with_transpose);
// nnz of that pattern without storing it (for FLOP and memory estimates).
int64_t count_pattern_entries(int64_t n, int64_t m, bool causal, const RowKeys& row_keys);

// out = O above; probs receives P (before dropout) for the backward, or is empty (inference).
template <class T>
void sparse_attention_forward(const SparseShape& s, const SparsePattern& p, In<T> q, In<T> k, In<T> v,
                              TensorView<T> probs, TensorView<T> out);

// From dout, with out and probs of the forward: dq, dk, dv overwritten. The pattern needs its transpose.
template <class T>
void sparse_attention_backward(const SparseShape& s, const SparsePattern& p, In<T> q, In<T> k, In<T> v, In<T> out,
                               In<T> probs, In<T> dout, TensorView<T> dq, TensorView<T> dk, TensorView<T> dv);

// The bytes of scratch the forward and backward hold across all threads for n positions of head
// width d_h (for memory estimates).
template <class T>
double sparse_attention_workspace_bytes(int64_t n, int64_t d_h);

}  // namespace lf::ops
