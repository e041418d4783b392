// `flash`: exact softmax attention computed tile by tile with an online softmax (FlashAttention-2,
// Dao 2023, here on the CPU), never materialising the n×mk score matrix. These are the kernels on
// already projected tensors, with SdpaShape's layouts (core/attention_shape.h); ops/flash.h checks and
// dispatches them, and the layer in attention/flash.cpp adds the Q/K/V/output maps. The tile product
// and the packing copies are shared with the other tiled kernels.
//   forward:  per query tile, for each key tile: S = scale·Q Kᵀ + masks, running row max m and sum ℓ,
//             O = Σ_j dropout(exp(S − m)) V rescaled as m grows; O /= ℓ, lse = m + log ℓ.
//   backward: D_t = dO_t · O_t; per key tile, for each query tile: P = exp(S − lse), dV += P̃ᵀ dO,
//             dP̃ = dO Vᵀ, dS = P ∘ (dropout'(dP̃) − D), dQ += scale·dS K, dK += scale·dSᵀ Q.
// Memory: the output and lse (B, h, n) are all that is kept; scratch is O(tile²) per thread (plus,
// when B·hk is smaller than the thread count, one extra dQ per extra key-tile chunk).
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/attention_shape.h"

namespace lf {

inline constexpr int64_t kFlashTile = 64;  // rows of a query tile and of a key tile

// O (B, n, h·d_h) and lse (B, h, n) = log Σ_j exp(scale·q_t·k_j) over the keys row t sees (before
// dropout); a row whose keys are all masked gets O = 0 and lse = +inf. Parallel over (batch, head,
// query tile); causal key tiles entirely above the diagonal and fully padded key tiles are skipped.
// Dropout (s.dropout > 0) uses the mask of sdpa_forward: the same Philox stream and element index.
template <class T>
void flash_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* out, T* lse);

// From dO (B, n, h·d_h), with out and lse from flash_forward: dq (B, n, h·d_h), dk and dv
// (B, mk, hk·d_h), all overwritten. Scores are recomputed tile by tile. Parallel over (batch, key head,
// chunk of key tiles): each task owns the dK/dV rows of its key tiles; dQ goes straight into dq when
// every task of a head is alone on it, else into one buffer per chunk, summed afterwards.
template <class T>
void flash_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
                    const T* dout, T* dq, T* dk, T* dv);

// The tile product, single-threaded (called inside the parallel regions; never the threaded gemm()):
//   C (M×N) = alpha · op(A) · B, or C += alpha · op(A) · B with accumulate,
// op(A) = A stored (M×K) with row stride lda, or with trans_a Aᵀ for A stored (K×M). B is (K×N) with
// row stride ldb, C has row stride ldc; C must not overlap A or B. Register-blocked micro-kernel
// (4 rows × 64 bytes of columns, the inner loop over contiguous columns of B and C).
template <class T>
void flash_tile_gemm(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                     int64_t ldb, bool accumulate, T* C, int64_t ldc);

// Its plain reference: three loops accumulating in double.
template <class T>
void flash_tile_gemm_ref(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                         const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc);

// Tiles are copied out of the (B, n, h·d_h) tensors before the tile products: their rows are h·d_h
// apart (2 KiB at d = 512), a power-of-two stride that maps a tile's rows onto a few L1 sets.
// Xp (rows × d_h, contiguous) = rows of X (row stride ldx).
template <class T>
inline void pack_rows(const T* X, int64_t ldx, int64_t rows, int64_t d_h, T* Xp) {
  for (int64_t j = 0; j < rows; ++j) std::copy(X + j * ldx, X + j * ldx + d_h, Xp + j * d_h);
}

// Xt (d_h × ·, row stride ld) = the rows of X (row stride ldx) transposed, so that a score product is
// a plain product with contiguous rows of its right operand.
template <class T>
inline void pack_transposed(const T* X, int64_t ldx, int64_t rows, int64_t d_h, T* Xt, int64_t ld) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t c = 0; c < d_h; ++c) Xt[c * ld + j] = X[j * ldx + c];
}

}  // namespace lf
