// The CPU kernels of sparse-pattern attention on raw (B, n, h·d_h) buffers; the kinds reach them
// through src/ops/sparse_attention.h, which states the math. Every output element is summed by one
// thread in a fixed order: results do not depend on the thread count.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/sparse_pattern.h"

namespace lf {

// The pattern of n queries over m keys from its rows (causal: keys j > t dropped), rows built in
// parallel; with_transpose also builds the CSC. Throws when nnz exceeds 2³¹ − 1.
SparsePattern build_sparse_pattern(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, bool with_transpose);
// Adds the CSC to a pattern built without it.
void add_transpose(SparsePattern& p);
// nnz of that pattern without storing it (serial: see the definition).
int64_t count_pattern_entries(int64_t n, int64_t m, bool causal, const RowKeys& row_keys);

// q, out (B, n, h·d_h), k, v (B, m, h·d_h). keep_probs: probs (B, h, nnz) receives the probabilities
// (before dropout) for the backward; without it probs is ignored (may be null) and a per-thread row
// scratch is used.
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

// The scratch of all threads for n positions of head width d_h, in bytes (elements of `element` bytes).
double sparse_attention_workspace_bytes(int64_t n, int64_t d_h, size_t element);

}  // namespace lf
