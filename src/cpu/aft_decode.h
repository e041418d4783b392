// Incremental decoding of the position-biased AFT kinds (aft_full, aft_local, aft_conv: src/attention/):
// the next n rows of B sequences against cached keys and values. Per channel c of row t,
//   Y_tc = σ(Q_tc) · Σ_t' exp(K_t'c + b_tt') V_t'c / Σ_t' exp(K_t'c + b_tt')   over t' ≤ t,
// b the position bias for the keys inside the row's window (t − t' < window) and 0 for the older ones,
// which enter through a carried online-softmax state (running max, Σ exp, Σ exp·V per channel, as
// AFT-simple's) that the key leaving the window is folded into after each row. aft_full's window covers
// every key (a KV cache, no prefix state); aft_local's and aft_conv's the last `window` keys (a window
// cache of window − 1 past rows and a constant prefix state). Each row's terms are shifted by their own
// maximum (with the prefix's), so nothing overflows or underflows to an empty denominator. Parallel
// over (sample, block of channels): the same bits for any thread count.
#pragma once
#include <cstdint>

namespace lf {

// The bias of the window's keys. band: (rows, groups, window) in tap order, entry j for the key at
// t − (window − 1) + j (aft_local's stored band, aft_conv's ŵ); ld the row stride (0: one band for every
// row). Otherwise dense, groups 1: (n, L) in cache order, entry j for cached key j (the factored U Vᵀ,
// aft_full's stored matrix), ld the row stride. Channel c uses group c / (d / groups).
template <class T>
struct AftDecodeBias {
  const T* w = nullptr;
  int64_t ld = 0;
  int64_t groups = 1;
  bool band = false;
};

// q (B, n, d) raw; the cache K (B, cap, dk) and V (B, cap, d), rows [0, L) in use: positions P − L .. P − 1,
// the last n of them the new rows (channel c reads K column c / (d / dk): aft_conv's per-head keys).
// mx, sum, num (B, d): the prefix state of the keys before the cache, updated in place (null when the
// window covers every key, window ≥ L). o (B, n, d) overwritten.
struct AftDecodeShape {
  int64_t B = 0, n = 0, L = 0, cap = 0, d = 0, dk = 0, window = 0;
};

template <class T>
void aft_window_decode(const AftDecodeShape& s, const T* q, const T* K, const T* V, const AftDecodeBias<T>& bias,
                       T* mx, T* sum, T* num, T* o);
// Its plain reference: the same sums in double with libm's exp, one (sample, channel, row) at a time.
template <class T>
void aft_window_decode_ref(const AftDecodeShape& s, const T* q, const T* K, const T* V, const AftDecodeBias<T>& bias,
                           T* mx, T* sum, T* num, T* o);

}  // namespace lf
