// The core of AFT-conv (src/attention/aft_conv.cpp) for h heads of width d_h = d/h: per head i, key
// t' weighs exp(K^i_t') · ω^i_j inside query t's window (t' = t + o_j, ω = exp(ŵ) (h, s)) and
// exp(K^i_t') outside it, over the visible keys (causal: t' ≤ t);
//   Y^i_t = σ(Q^i_t) ⊙ Σ_t' a_{t,t'} V^i_t' / Σ_t' a_{t,t'}    (0 when no key is visible).
// o_j = j − ⌊s/2⌋ (s odd) or, causal, j − (s − 1). Q, V (B, n, d), K (B, n, h). The fast path sums
// outside the window by prefix and suffix sums with exp shifted by the maximum of K (causal: a running
// maximum), parallel over (sample, head); and the kernel's normalisation ŵ = γ (w − mean)/std + β.
#pragma once
#include <cstdint>

namespace lf {

// o (B, n, d) = Y; q becomes σ(Q); den, m (B, h, n) receive the shifted denominators and the shifts;
// r (B, n, d) = Y / σ(Q) when not null (kept for the backward).
template <class T>
void aft_conv_forward(T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, T* o, T* r, T* den, T* m,
                      int64_t B, int64_t n, int64_t d, int64_t h, int64_t s, bool causal);

// From d_o (B, n, d), σ(Q) (`sg`) and what the forward kept: dq, dv (B, n, d) and dk (B, n, h)
// overwritten, dwhat (h, s) = ∂loss/∂ŵ overwritten (summed over the samples in a fixed order).
template <class T>
void aft_conv_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const T* omega, const T* r,
                       const T* den, const T* m, const T* d_o, T* dq, T* dk, T* dv, double* dwhat, int64_t B,
                       int64_t n, int64_t d, int64_t h, int64_t s, bool causal);

// ω = exp(ŵ) (h, s) from w (h, s), γ, β (h), in double: ŵ = γ z + β, z = (w − mean)/√(var + eps);
// z (h, s) and inv_std (h) = 1/√(var + eps) are kept for the backward.
template <class T>
void aft_conv_kernel_forward(const T* w, const T* gamma, const T* beta, T* omega, double* z, double* inv_std,
                             int64_t h, int64_t s, double eps);
// From dwhat = ∂loss/∂ŵ (h, s): dw (h, s), dgamma, dbeta (h) accumulate (+=).
template <class T>
void aft_conv_kernel_backward(const T* gamma, const double* z, const double* inv_std, const double* dwhat, T* dw,
                              T* dgamma, T* dbeta, int64_t h, int64_t s);

// Plain references of the core from the raw Q (every key's weight formed directly, in double with
// the maximum subtracted; O(n²) per head). dwhat is overwritten.
template <class T>
void aft_conv_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, T* o, int64_t B,
                          int64_t n, int64_t d, int64_t h, int64_t s, bool causal);
template <class T>
void aft_conv_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, const T* d_o,
                           T* dq, T* dk, T* dv, double* dwhat, int64_t B, int64_t n, int64_t d, int64_t h, int64_t s,
                           bool causal);

}  // namespace lf
