// Embedding lookup, as torch.nn.Embedding: the forward gathers table rows by token id, the backward
// scatter-adds the output gradient back into those rows. The scatter is deterministic (no atomics):
// every dtable element receives its contributions in token order whatever the thread count.
#pragma once
#include <cstdint>

namespace lf {

// out (N, d) = table (V, d)[ids (N)], or out += table[ids] when accumulate (e.g. to add positional
// embeddings gathered by position ids onto token embeddings). Throws lf::InvalidArgument naming the
// first id outside [0, V), before writing anything.
template <class T>
void embedding_forward(const int32_t* ids, const T* table, T* out, int64_t N, int64_t V, int64_t d,
                       bool accumulate = false);

// dtable (V, d) += dout (N, d) scattered by ids (N): row ids[i] of dtable gets row i of dout. Repeated
// ids add up. Throws on out-of-range ids like the forward.
template <class T>
void embedding_backward(const int32_t* ids, const T* dout, T* dtable, int64_t N, int64_t V, int64_t d);

// out (B, n, d) += PE rows [offset, offset + n) of the fixed sinusoidal positions of Vaswani et al. 2017
// (interleaved, as in PyTorch's tutorial): PE[t, 2i] = sin(t · ω_i), PE[t, 2i + 1] = cos(t · ω_i),
// ω_i = 10000^(−2i/d). offset > 0: the positions of tokens appended to a decoded prefix. Computed in
// double; no parameters, so nothing to backpropagate into.
template <class T>
void sinusoidal_positions_add(T* out, int64_t B, int64_t n, int64_t d, int64_t offset = 0);

// Plain references, same contracts.
template <class T>
void embedding_forward_ref(const int32_t* ids, const T* table, T* out, int64_t N, int64_t V, int64_t d,
                           bool accumulate = false);
template <class T>
void embedding_backward_ref(const int32_t* ids, const T* dout, T* dtable, int64_t N, int64_t V, int64_t d);

}  // namespace lf
