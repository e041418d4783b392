// The linear-attention kernel shared by `linear` (Katharopoulos et al. 2020) and `performer` (FAVOR+,
// Choromanski et al. 2021). Per (batch, head), from non-negative feature maps φq (n × r) of the
// queries, φk (m × r) of the keys, and values v (m × d_v):
//   non-causal: out_t = φq_t S / (φq_t · z + eps),   S = Σ_s φk_sᵀ v_s (r × d_v), z = Σ_s φk_s (r)
//   causal:     the same with S_t, z_t summed over s ≤ t only (n = m)
// The small eps keeps a query whose features meet no key weight (every key padded, or the features
// underflowed) at out = 0 instead of 0/0; each kind documents its value.
// Causal, chunked (C positions per chunk): within a chunk a masked C×C product φq φkᵀ, across chunks
// a carried (S, z). No per-position r×d_v state is ever stored: the backward recomputes the prefix
// states chunk by chunk going forward (for dφq) and carries suffix sums going backward (for dφk, dv).
// Time O(B·h·(n + m)·r·d_v), plus O(B·h·n·C·(r + d_v)) causal; memory O(B·h·n) kept (the
// denominators) and O((r + C)·(d_v + C) + r·d_v) scratch per thread; never n×m.
// Padded keys (mask nonzero) are selected away when a chunk is packed: their rows of φk and v are
// read as zeros, so nothing they hold (NaN included) reaches a real position, and their dφk, dv
// rows are zero.
#pragma once
#include <cstdint>

namespace lf {

// One call. Layouts are the projections' (PyTorch order), each (batch, head) a strided view:
//   phi_q (B, n, h·r), phi_k (B, m, h·r), v (B, m, h·d_v), out (B, n, h·d_v), den (B, h, n).
struct LinearCoreShape {
  int64_t B = 0, h = 0;
  int64_t n = 0;   // queries
  int64_t m = 0;   // keys and values (causal: = n)
  int64_t r = 0;   // features per head
  int64_t dv = 0;  // value width per head
  bool causal = false;
  int64_t chunk = 64;                 // C: positions per chunk (results do not depend on it beyond rounding)
  double eps = 1e-6;                  // added to every denominator
  const uint8_t* key_mask = nullptr;  // (B, m), nonzero = padding; or null

  int64_t key_chunks() const { return (m + chunk - 1) / chunk; }
};

// key_shift (causal only; null for none): (B, h, m) log-scales μ_s: the φk row of key s was computed
// divided by e^{μ_s} (Performer's stabiliser: each key its own max). The core weighs key s for query t
// by e^{μ_s − R_t}, R_t = max of μ over the valid keys s ≤ t (a running max, so every factor is ≤ 1
// and nothing overflows), which cancels between numerator and denominator but for eps. R_t depends on
// the keys up to t only, so a causal output is bitwise independent of every later key. The carried
// state is kept on the scale of the last R and rescaled by e^{R_old − R_new} ≤ 1 when it grows. −inf
// (no valid key so far) is allowed. The shifts are constants for the backward.

// A causal forward's carried state, per (batch, head): H (B, h, r, d_v) = Σ_s e^{μ_s − R} φk_sᵀ v_s,
// z (B, h, r) = Σ_s e^{μ_s − R} φk_s and R (B, h) the running max (−inf before any key; unused
// without key_shift). Incremental decoding: a forward given a state starts from it (the keys before
// this call's first position) and leaves in it the state after its last position.
template <class T>
struct LinearCoreState {
  T* H = nullptr;
  T* z = nullptr;
  T* scale = nullptr;  // R; null without key_shift
};

// out (B, n, h·d_v) and den (B, h, n) = φq_t · z_t + eps (kept for the backward), both overwritten.
// Parallel over (batch, head), bitwise independent of the thread count.
// state (causal only, no key mask; null for an empty start whose final state is dropped): see
// LinearCoreState.
template <class T>
void linear_core_forward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                         T* out, T* den, const LinearCoreState<T>* state = nullptr);

// From dout (B, n, h·d_v) and the forward's out and den: dphi_q (B, n, h·r), dphi_k (B, m, h·r),
// dv (B, m, h·d_v), all overwritten (zero rows at padded keys).
template <class T>
void linear_core_backward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                          const T* out, const T* den, const T* dout, T* dphi_q, T* dphi_k, T* dv);

// Multiply-adds ×2 of one forward (backward: about twice as much, three times causal).
double linear_core_flops(const LinearCoreShape& s);

// Bytes of the per-thread scratch of one call (forward or backward), for activation_bytes().
double linear_core_scratch_bytes(const LinearCoreShape& s, int64_t element_size);

}  // namespace lf
