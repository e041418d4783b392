// Exact softmax attention in tiles with an online softmax (FlashAttention-2): the scores are never
// materialised, only each query's log-sum-exp is kept for the backward, which recomputes them.
// `s` gives the sizes and options (core/attention_shape.h); the views must match it:
// q, out, dout, dq (B, n, h·d_h); k, v, dk, dv (B, mk, hk·d_h); lse (B, h, n); all contiguous.
#pragma once
#include "core/attention_shape.h"
#include "ops/view_args.h"

namespace lf::ops {

// out and lse = log Σ_j exp(scale·q_t·k_j) over the keys row t sees (+inf for a row that sees none).
template <class T>
void flash_attention_forward(const SdpaShape& s, In<T> q, In<T> k, In<T> v, TensorView<T> out, Out<T> lse);

// dq, dk, dv (overwritten) from dout, with out and lse of the forward.
template <class T>
void flash_attention_backward(const SdpaShape& s, In<T> q, In<T> k, In<T> v, In<T> out, In<T> lse, In<T> dout,
                              TensorView<T> dq, Out<T> dk, Out<T> dv);

}  // namespace lf::ops
