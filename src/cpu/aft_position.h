// The cores of AFT-full and AFT-local (src/attention/aft_position.cpp, whose opening comment has the
// method) on Q, K, V (B, n, d): per channel c,
//   Y_tc = σ(Q_tc) · Σ_t' exp(K_t'c + w̃_tt') V_t'c / Σ_t' exp(K_t'c + w̃_tt')
// over the visible keys t' (not padding; causal: t' ≤ t), 0 when none is visible; aft_full: w̃ = w,
// aft_local: w̃ = w for |t − t'| < s and 0 outside. The fast paths shift exp by the maxima of K and
// of the bias rows, fall back to an exact softmax in double where a denominator underflows, and
// run query rows in blocks of `row_block`; their GEMMs run outside any parallel region.
#pragma once
#include <cstdint>

namespace lf {

// The position bias w (max_len × max_len, the top-left n × n used): U Vᵀ with u, v (max_len × rank)
// when rank > 0; else stored in w: aft_full the matrix (max_len × max_len), aft_local its band
// (max_len × W, W = 2s − 1, causal s; entry [t, j] = w_{t, t+j−s+1}).
template <class T>
struct AftPositionBias {
  const T* u = nullptr;
  const T* v = nullptr;
  const T* w = nullptr;
  int64_t max_len = 0, rank = 0;
};
// Its gradients (accumulated, +=), in the bias's form.
template <class T>
struct AftPositionBiasGrad {
  T* u = nullptr;
  T* v = nullptr;
  T* w = nullptr;
};

// q becomes σ(Q); o = Y, a = Y / σ(Q) and den (the shifted denominators) (B, n, d). keys (n, B, 2d):
// the key table [exp(K − m)⊙V | exp(K − m)]; non-causal the forward fills it for the backward, causal
// it is both passes' workspace.
template <class T>
void aft_full_forward(T* q, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* o, T* a,
                      T* den, T* keys, int64_t B, int64_t n, int64_t d, int64_t row_block, bool causal);
// From d_y = dL/dY (overwritten by dL/dA), σ(Q) (`sg`) and the forward's a, den, keys: dq, dk, dv
// (B, n, d) overwritten, the bias's gradients accumulated.
template <class T>
void aft_full_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias,
                       const T* a, const T* den, T* keys, T* d_y, T* dq, T* dk, T* dv,
                       const AftPositionBiasGrad<T>& grad, int64_t B, int64_t n, int64_t d, int64_t row_block,
                       bool causal);

// As aft_full_forward with the window s; key_state (B, n, d), filled for the backward: non-causal
// exp(K − m) (0 at padding), causal the running maximum of K.
template <class T>
void aft_local_forward(T* q, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* o, T* a,
                       T* den, T* key_state, int64_t B, int64_t n, int64_t d, int64_t window, int64_t row_block,
                       bool causal);
template <class T>
void aft_local_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias,
                        const T* a, const T* den, const T* key_state, T* d_y, T* dq, T* dk, T* dv,
                        const AftPositionBiasGrad<T>& grad, int64_t B, int64_t n, int64_t d, int64_t window,
                        int64_t row_block, bool causal);

// Plain references from the raw Q and the effective bias w̃ (n × n, the window already applied):
// every key's weight formed directly, in double with the maximum subtracted; O(n²) per channel.
// dw̃ (n × n) is overwritten.
template <class T>
void aft_position_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* bias, T* o, int64_t B,
                              int64_t n, int64_t d, bool causal);
template <class T>
void aft_position_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* bias, const T* d_y,
                               T* dq, T* dk, T* dv, T* dbias, int64_t B, int64_t n, int64_t d, bool causal);

}  // namespace lf
