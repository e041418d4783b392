// The linear-attention core shared by `linear` (Katharopoulos et al. 2020) and `performer` (FAVOR+,
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
#include <string>

#include "linformer/attention.h"
#include "attention/options.h"

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

// The shape of one call of an h-head kind on this core: r features per head, values d_h = d/h wide.
inline LinearCoreShape linear_core_shape(const AttentionDims& dims, int64_t r, int64_t chunk, double eps, int64_t B,
                                         int64_t n, int64_t m, const uint8_t* key_mask = nullptr) {
  LinearCoreShape s;
  s.B = B;
  s.h = dims.n_heads;
  s.n = n;
  s.m = m;
  s.r = r;
  s.dv = dims.d_model / dims.n_heads;
  s.causal = dims.causal;
  s.chunk = chunk;
  s.eps = eps;
  s.key_mask = key_mask;
  return s;
}

// The `chunk` option (C above) of the kinds on this core, with its default and range.
inline int64_t read_linear_chunk(OptionReader& r) {
  const int64_t chunk = r.get_int("chunk", 64);
  LF_REQUIRE(chunk >= 1 && chunk <= 1024, r.where("chunk"), " must be in [1, 1024], got ", chunk);
  return chunk;
}

// key_shift (causal only; null for none): (B, h, ⌈m/C⌉) log-scales M_c, non-decreasing in c: the
// φk rows of chunk c were computed divided by e^{M_c} (Performer's running-max stabiliser). The
// carried state is rescaled by e^{M_{c−1} − M_c} ≤ 1 between chunks, so every key a query sees is on
// its chunk's scale; M_c = −inf is allowed while no key so far is valid. The shifts are constants
// for the backward.

// out (B, n, h·d_v) and den (B, h, n) = φq_t · z_t + eps (kept for the backward), both overwritten.
// Parallel over (batch, head), bitwise independent of the thread count.
template <class T>
void linear_core_forward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                         T* out, T* den);

// From dout (B, n, h·d_v) and the forward's out and den: dphi_q (B, n, h·r), dphi_k (B, m, h·r),
// dv (B, m, h·d_v), all overwritten (zero rows at padded keys).
template <class T>
void linear_core_backward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                          const T* out, const T* den, const T* dout, T* dphi_q, T* dphi_k, T* dv);

// Multiply-adds ×2 of one forward (backward: about twice as much, three times causal).
double linear_core_flops(const LinearCoreShape& s);

// Bytes of the per-thread scratch of one call (forward or backward), for activation_bytes().
double linear_core_scratch_bytes(const LinearCoreShape& s, int64_t element_size);

// ---- FAVOR+ random features (performer) ----------------------------------------------------------

// W (m × d_h, row-major) for draw `draw` of the layer `prefix`: ⌈m/d_h⌉ blocks of d_h orthonormal rows
// (Gram-Schmidt of a d_h×d_h standard Gaussian matrix, i.e. the Q of its QR with R's diagonal
// positive: Haar-distributed), the last block truncated, then each row scaled by the norm of an
// independent standard Gaussian vector of d_h entries (so each row is marginally N(0, I), as in the
// paper and performer-pytorch's gaussian_orthogonal_random_matrix with scaling 0). A pure function
// of (seed, prefix, draw): the counter RNG's stream is named after the prefix and the draw.
void performer_orthogonal_features(uint64_t seed, const std::string& prefix, int64_t draw, int64_t m, int64_t d_h,
                                   double* out);

}  // namespace lf
