// The feature maps of the linear-attention kinds (ops/linear_attention.h has their definitions): `linear`'s
// elu(x) + 1 and performer's FAVOR+ positive random features, forward and backward, on dense row-major
// buffers. Each threads over rows above a size threshold; every element is computed the same way for any
// thread count. The FAVOR+ maps have plain references (libm's exp, no threads).
#pragma once
#include <cstdint>

namespace lf {

// y (rows, d) = elu(x) + 1, rows where row_mask (rows, or null) is nonzero set to 0. y may be x.
template <class T>
void elu_plus_one_forward(const T* x, const uint8_t* row_mask, T* y, int64_t rows, int64_t d);
// dx (n) = dy ⊙ min(φ, 1). dx may be dy.
template <class T>
void elu_plus_one_backward(const T* phi, const T* dy, T* dx, int64_t n);

// Performer's generalized attention (ReLU features): phi (n) = max(u, 0) + eps. phi may be u.
template <class T>
void relu_features_forward(const T* u, T eps, T* phi, int64_t n);
// du (n) = dphi where phi > eps (u > 0), else 0. du may be dphi.
template <class T>
void relu_features_backward(const T* phi, T eps, const T* dphi, T* du, int64_t n);

// phi (rows, m_f) = exp(u − max_j u_j) / √m_f. phi may be u.
template <class T>
void favor_query_features(const T* u, T* phi, int64_t rows, int64_t mf);
template <class T>
void favor_query_features_ref(const T* u, T* phi, int64_t rows, int64_t mf);

// The keys' sizes: k (B, m, h, d_h), u and phi (B, m, h, m_f), key_mask (B, m) or null; M is shared by `span`
// consecutive keys (non-causal: span = m; causal: 1, each key its own), key_max (B, h, ⌈m/span⌉).
struct FavorKeyShape {
  int64_t B = 0, m = 0, h = 0, d_h = 0, mf = 0;
  int64_t span = 0;  // keys per max
  int64_t spans() const { return (m + span - 1) / span; }
};

// e = u − half_sq_scale·‖k‖², M per (batch, head, span) the max of e over valid keys, phi = exp(e − M) / √m_f,
// 0 at padded keys. phi may be u.
template <class T>
void favor_key_features(const FavorKeyShape& s, const T* k, const T* u, const uint8_t* key_mask, T half_sq_scale,
                        T* phi, T* key_max);
template <class T>
void favor_key_features_ref(const FavorKeyShape& s, const T* k, const T* u, const uint8_t* key_mask, T half_sq_scale,
                            T* phi, T* key_max);

// performer's no_projection, non-causal keys: a softmax over the positions per (batch, head, column).
// y (B, m, h, r) = phi / Σ_s phi over the keys s of each (b, head, column) (0 where the sum is 0),
// from phi = exp(u − M) (padded rows 0, M any constant of the (b, head)). y may be phi.
template <class T>
void column_softmax_forward(int64_t B, int64_t m, int64_t h, int64_t r, const T* phi, T* y);
template <class T>
void column_softmax_forward_ref(int64_t B, int64_t m, int64_t h, int64_t r, const T* phi, T* y);
// Its backward to u: du = y ⊙ (dy − Σ_s y dy) per (b, head, column). du may be dy.
template <class T>
void column_softmax_backward(int64_t B, int64_t m, int64_t h, int64_t r, const T* y, const T* dy, T* du);
template <class T>
void column_softmax_backward_ref(int64_t B, int64_t m, int64_t h, int64_t r, const T* y, const T* dy, T* du);

// du (n) = dphi ⊙ phi. du may be dphi.
template <class T>
void favor_features_backward(const T* phi, const T* dphi, T* du, int64_t n);

// dk (rows, d_h) −= sq_scale · (Σ_j du_j) · k, du (rows, m_f).
template <class T>
void favor_key_norm_backward(const T* k, const T* du, T sq_scale, int64_t rows, int64_t d_h, int64_t mf, T* dk);
template <class T>
void favor_key_norm_backward_ref(const T* k, const T* du, T sq_scale, int64_t rows, int64_t d_h, int64_t mf, T* dk);

}  // namespace lf
