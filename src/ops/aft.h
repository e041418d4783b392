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

// Incremental decoding of causal AFT-simple (no padding): o (B, n, d) for the next n rows of q (raw), k, v
// (B, n, d), from the online softmax's state of the rows before them, mx, sum, num (B, d): the running
// maximum of K, Σ exp(K − mx) and Σ exp(K − mx) V (−inf, 0, 0 start a sequence), updated in place. As the
// causal forward's rows over the whole prefix, to rounding.
template <class T>
void aft_simple_decode(In<T> q, In<T> k, In<T> v, Out<T> o, TensorView<T> mx, TensorView<T> sum, TensorView<T> num);

// Incremental decoding of aft_full, aft_local and aft_conv (src/cpu/aft_decode.h has the method): the next n
// rows q (B, n, d) (raw) against the cache K (B, cap, dk) and V (B, cap, d) whose first L rows hold the
// positions P − L .. P − 1, the last n of them the new rows (dk divides d: aft_conv's keys, one per head).
// A key inside a row's window (t − t' < window) weighs exp(K + bias), an older one exp(K), through the
// prefix state mx, sum, num (B, d) (running max of K, Σ exp(K − max), Σ exp(K − max)·V; −inf, 0, 0 to
// start), updated in place; all three `{}` when the window covers every key (window ≥ L, aft_full).
// bias, band: (rows, groups, window), tap j for the key t − (window − 1) + j, rows n or 1 (one for every
// row), groups dividing d (channel c takes group c / (d / groups)); dense: (n, L), entry j for cached key
// j, any row stride. o (B, n, d) overwritten. As the causal forward's rows over the whole prefix, to
// rounding.
template <class T>
void aft_window_decode(In<T> q, In<T> K, In<T> V, int64_t L, int64_t window, In<T> bias, bool band, TensorView<T> mx,
                       TensorView<T> sum, TensorView<T> num, Out<T> o);

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

// AFT-full and AFT-local (src/cpu/aft_position.h): o = σ(Q) ⊙ A with, per channel,
// A_t = Σ_t' exp(K_t' + w̃_tt') V_t' / Σ_t' exp(K_t' + w̃_tt') over the visible keys (causal: t' ≤ t);
// aft_full: w̃ = w, aft_local: w̃ = w for |t − t'| < window and 0 outside. The position bias w
// (max_len × max_len, max_len ≥ n) is U Vᵀ with bias_u, bias_v (max_len × d') and bias_w `{}`, or
// stored in bias_w (aft_full: max_len × max_len; aft_local: its band, max_len × W, W = 2·window − 1,
// causal window) with bias_u, bias_v `{}`. Query rows run in blocks of row_block. q becomes σ(Q); a
// (A) and den (the shifted denominators) (B, n, d) are kept for the backward.
// keys (n, B, 2d): aft_full's key table, filled for the backward (causal: both passes' workspace).
template <class T>
void aft_full_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                      In<T> bias_w, Out<T> o, Out<T> a, Out<T> den, Out<T> keys, int64_t row_block, bool causal);
// From d_y = dL/dY (overwritten by dL/dA): dq, dk, dv (B, n, d) overwritten, the gradients of the
// bias's form (grad_u, grad_v or grad_w, shaped as their values) accumulated.
template <class T>
void aft_full_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                       In<T> bias_w, In<T> a, In<T> den, Out<T> keys, TensorView<T> d_y, Out<T> dq, Out<T> dk,
                       Out<T> dv, Out<T> grad_u, Out<T> grad_v, Out<T> grad_w, int64_t row_block, bool causal);
// key_state (B, n, d), filled for the backward: non-causal exp(K − m), causal the running maximum of K.
template <class T>
void aft_local_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                       In<T> bias_w, Out<T> o, Out<T> a, Out<T> den, Out<T> key_state, int64_t window,
                       int64_t row_block, bool causal);
template <class T>
void aft_local_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                        In<T> bias_w, In<T> a, In<T> den, In<T> key_state, TensorView<T> d_y, Out<T> dq, Out<T> dk,
                        Out<T> dv, Out<T> grad_u, Out<T> grad_v, Out<T> grad_w, int64_t window, int64_t row_block,
                        bool causal);

}  // namespace lf::ops
