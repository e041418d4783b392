// Linear attention (`linear`, `performer`): the chunked core that attends through a summary of the
// keys instead of n×m scores, and the feature maps that make queries and keys non-negative.
// Per (batch, head), from features φq (n × r), φk (m × r) and values v (m × d_v):
//   non-causal: out_t = φq_t S / (φq_t · z + eps),   S = Σ_s φk_sᵀ v_s (r × d_v), z = Σ_s φk_s (r)
//   causal:     the same with S_t, z_t summed over s ≤ t only (n = m), chunk by chunk (C positions)
// Padded keys (key_mask nonzero) are read as zeros, so nothing they hold (NaN included) reaches a
// real position, and their dφk, dv rows are zero. Views are dense, PyTorch order; per-head tensors
// are (B, len, h, ·), the (B, len, h·w) activations of the projections seen by head.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

struct LinearAttentionOptions {
  bool causal = false;
  int64_t chunk = 64;  // C: positions per chunk (results do not depend on it beyond rounding)
  double eps = 1e-6;   // added to every denominator: a query meeting no key weight gets out = 0
};

// The sizes of one call, for the estimates below: r features and d_v value columns per head.
struct LinearAttentionSizes {
  int64_t B = 0, h = 0, n = 0, m = 0, r = 0, dv = 0;
};

// A key padding mask (B, m) as a view; empty without one (null).
inline TensorView<const uint8_t> key_mask_view(const uint8_t* mask, int64_t B, int64_t m) {
  return mask ? TensorView<const uint8_t>(mask, {B, m}) : TensorView<const uint8_t>();
}

// out (B, n, h, d_v) and den (B, h, n) = φq_t · z_t + eps (kept for the backward), both overwritten, from
// phi_q (B, n, h, r), phi_k (B, m, h, r), v (B, m, h, d_v), key_mask (B, m) or {}. key_shift (causal only, or
// {}): (B, h, m) log-scales μ_s: the φk row of key s was computed divided by e^{μ_s} (performer's stabiliser);
// the core weighs key s for query t by e^{μ_s − R_t}, R_t the running max of μ over the valid keys s ≤ t,
// so a causal output is bitwise independent of later keys (cpu/linear_attention.h). Bitwise independent
// of the thread count.
template <class T>
void linear_attention_forward(In<T> phi_q, In<T> phi_k, In<T> v, TensorView<const uint8_t> key_mask, In<T> key_shift,
                              const LinearAttentionOptions& options, TensorView<T> out, TensorView<T> den);

// From dout (B, n, h, d_v) and the forward's out and den: dphi_q (B, n, h, r), dphi_k (B, m, h, r), dv (B, m,
// h, d_v), all overwritten.
template <class T>
void linear_attention_backward(In<T> phi_q, In<T> phi_k, In<T> v, TensorView<const uint8_t> key_mask, In<T> key_shift,
                               const LinearAttentionOptions& options, In<T> out, In<T> den, In<T> dout,
                               TensorView<T> dphi_q, TensorView<T> dphi_k, TensorView<T> dv);

// Incremental decoding (causal, no padding): the next n positions of B sequences, phi_q, phi_k (B, n, h, r),
// v (B, n, h, d_v), key_shift (B, h, n) or {}, against the carried state of the positions before them:
// H (B, h, r, d_v) = Σ_s e^{μ_s − R} φk_sᵀ v_s, z (B, h, r) = Σ_s e^{μ_s − R} φk_s, and R (B, h), the running
// max of μ (−inf before any key; {} without key_shift), all updated in place; zeros and −inf start a
// sequence. out (B, n, h, d_v) and den (B, h, n) as linear_attention_forward's rows [t, t + n) over the whole
// prefix (to rounding: the chunks fall elsewhere). Chunked like the forward, so a prompt runs in parallel.
template <class T>
void linear_attention_decode(In<T> phi_q, In<T> phi_k, In<T> v, In<T> key_shift, const LinearAttentionOptions& options,
                             TensorView<T> H, TensorView<T> z, TensorView<T> R, TensorView<T> out, TensorView<T> den);

// Multiply-adds ×2 of one forward (backward: about twice as much, three times causal).
double linear_attention_flops(const LinearAttentionSizes& sizes, const LinearAttentionOptions& options);
// Bytes of the backend's scratch of one call (forward or backward), for activation_bytes().
double linear_attention_scratch_bytes(const LinearAttentionSizes& sizes, const LinearAttentionOptions& options,
                                      int64_t element_size);

// ---- feature maps
// ----------------------------------------------------------------------------------

// `linear`'s φ(x) = elu(x) + 1 (x + 1 for x > 0, e^x otherwise) of x (rows, d); rows where row_mask (rows) is
// nonzero are set to 0 (padded keys). y may be x.
template <class T>
void elu_plus_one_forward(In<T> x, TensorView<const uint8_t> row_mask, TensorView<T> y);
// dx = dy ⊙ φ'(x), from φ alone: φ' = 1 for x > 0, e^x = φ otherwise, i.e. min(φ, 1). dx may be dy.
template <class T>
void elu_plus_one_backward(In<T> phi, In<T> dy, TensorView<T> dx);

// Performer's generalized attention with ReLU features, from u = c·x Wᵀ: phi = max(u, 0) + eps
// elementwise (phi may be u); its backward du = dphi where phi > eps, else 0 (du may be dphi).
template <class T>
void relu_features_forward(In<T> u, double eps, TensorView<T> phi);
template <class T>
void relu_features_backward(In<T> phi, double eps, In<T> dphi, TensorView<T> du);

// performer's no_projection, non-causal keys: y (B, m, h, r) = phi normalised to sum 1 over the
// positions per (batch, head, column), phi = exp(u − M) from favor_key_features (padded rows 0); and
// its backward to u, du = y ⊙ (dy − Σ_s y dy). y may be phi, du may be dy.
template <class T>
void column_softmax_forward(In<T> phi, TensorView<T> y);
template <class T>
void column_softmax_backward(In<T> y, In<T> dy, TensorView<T> du);

// FAVOR+ (performer), from u = c·x Wᵀ (c = d_h^{-1/4}, W the m_f random features):
// queries: phi (rows, m_f) = exp(u − max_j u_j) / √m_f row by row (the row's own max absorbs its
// ‖q‖² term). phi may be u.
template <class T>
void favor_query_features(In<T> u, TensorView<T> phi);
// keys: e = u − half_sq_scale·‖k‖² (half_sq_scale = c²/2), phi = exp(e − M) / √m_f with M the max of e over
// the valid keys of the (batch, head): non-causal one M, written to key_max (B, h, 1); causal each key's own
// max over its features, key_max (B, h, m), the linear_attention_forward's key_shift (no key's features
// depend on another key, so nothing leaks from later keys). k (B, m, h, d_h), u and phi (B, m, h, m_f)
// (phi may be u), key_mask (B, m) or {}: padded keys' rows of phi are 0 and take no part in M.
template <class T>
void favor_key_features(In<T> k, In<T> u, TensorView<const uint8_t> key_mask, double half_sq_scale,
                        const LinearAttentionOptions& options, TensorView<T> phi, TensorView<T> key_max);
// du = dphi ⊙ phi: the backward of φ = exp(u − M) / √m_f with M a constant. du may be dphi.
template <class T>
void favor_features_backward(In<T> phi, In<T> dphi, TensorView<T> du);
// dk (rows, d_h) −= sq_scale · (Σ_j du_j) · k row by row (sq_scale = c²): the backward of the keys' −c²‖k‖²/2
// term, from du (rows, m_f) = ∂L/∂e.
template <class T>
void favor_key_norm_backward(In<T> k, In<T> du, double sq_scale, TensorView<T> dk);

}  // namespace lf::ops
