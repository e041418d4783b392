// The cores of the Attention Free Transformer kinds (src/attention/aft_*.cpp): what runs between their
// linear maps. Q, K, V, the output and the gradients are (B, n, d) contiguous; a key padding mask is
// (B, n) (nonzero = padding) or `{}`.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// AFT-simple: o = σ(Q) ⊙ the per-channel softmax_t'(K)-weighted mean of V over the visible keys
// (causal: t' ≤ t). With r, m, s (the softmax means, maxima and sums: (B, n, d) causal, (B, d)
// otherwise; all `{}` for inference) the statistics are kept and q is overwritten by σ(Q).
template <class T>
void aft_simple_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, Out<T> o, Out<T> r,
                        Out<T> m, Out<T> s, bool causal);
// dq, dk, dv overwritten from d_o, σ(Q) (`sigma_q`) and the forward's statistics.
template <class T>
void aft_simple_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> r, In<T> m, In<T> s,
                         In<T> d_o, TensorView<T> dq, Out<T> dk, Out<T> dv, bool causal);

}  // namespace lf::ops
