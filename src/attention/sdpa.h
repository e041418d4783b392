// Multi-head scaled dot-product attention on already projected tensors, shared by the kinds that
// build a score matrix (full: n×m scores; Linformer: n×k scores against compressed keys):
//   O_{b,i} = dropout(softmax(scale · Q_{b,i} K_{b,g(i)}ᵀ + mask)) · V_{b,g(i)}
// with g(i) = i / (h / hk) the key/value head of query head i (hk = h, a divisor, or 1: kv_head_of).
// Layouts: Q (B, n, h·d_h), K and V (B, mk, hk·d_h), O (B, n, h·d_h), P (B, h, n, mk).
#pragma once
#include <cstdint>

#include "core/attention_shape.h"

namespace lf {

// Writes O and, with keep_probs, P (B, h, n, mk): the probabilities before dropout, for the backward.
// Without keep_probs (inference) `probs` is a scratch of n·mk elements that each head overwrites.
template <class T>
void sdpa_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* probs, T* out, bool keep_probs = true);

// Elements sdpa_backward() needs in its scratch: n·mk, one more n·mk with dropout, one more when it
// recomputes the probabilities (probs == null).
inline int64_t sdpa_backward_scratch(const SdpaShape& s, bool recompute_probs = false) {
  return (1 + (s.dropout > 0 ? 1 : 0) + (recompute_probs ? 1 : 0)) * s.n * s.mk;
}

// From dO: dq (overwritten), dk and dv (overwritten). scratch: sdpa_backward_scratch(s, probs == null)
// elements. With probs == null each head's probabilities are recomputed from q and k, bit for bit as
// the forward made them (the same product and softmax calls): B·h·n·mk fewer elements kept between
// forward and backward for one more scores product.
template <class T>
void sdpa_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* probs, const T* dout, T* dq,
                   T* dk, T* dv, T* scratch);

// The plain reference of the forward (loops, double accumulation).
template <class T>
void sdpa_forward_ref(const SdpaShape& s, const T* q, const T* k, const T* v, T* out);

}  // namespace lf
