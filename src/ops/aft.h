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

// AFT-conv with h heads (src/cpu/aft_conv.h): o = σ(Q) ⊙ the mean of V weighted by exp(K) (K: (B, n, h),
// one channel per head) times ω = exp(ŵ) (h, s) inside each query's window of s taps. q becomes σ(Q);
// den, m (B, h, n) receive the denominators and shifts; r (B, n, d) = Y / σ(Q) is kept unless `{}`.
template <class T>
void aft_conv_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> omega, Out<T> o,
                      Out<T> r, Out<T> den, Out<T> m, bool causal);
// dq, dv (B, n, d), dk (B, n, h) and dwhat = ∂loss/∂ŵ (h, s) overwritten.
template <class T>
void aft_conv_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> omega, In<T> r,
                       In<T> den, In<T> m, In<T> d_o, TensorView<T> dq, Out<T> dk, Out<T> dv, TensorView<double> dwhat,
                       bool causal);
// The kernel's normalisation ŵ = γ (w − mean(w))/√(var(w) + eps) + β per head, ω = exp(ŵ): w, omega
// and z (h, s), gamma, beta, inv_std (h); z and inv_std are kept for the backward (in double).
template <class T>
void aft_conv_kernel_forward(In<T> w, In<T> gamma, In<T> beta, TensorView<T> omega, TensorView<double> z,
                             TensorView<double> inv_std, double eps);
// From dwhat (h, s): dw (h, s), dgamma, dbeta (h) accumulate.
template <class T>
void aft_conv_kernel_backward(In<T> gamma, TensorView<const double> z, TensorView<const double> inv_std,
                              TensorView<const double> dwhat, TensorView<T> dw, Out<T> dgamma, Out<T> dbeta);

}  // namespace lf::ops
