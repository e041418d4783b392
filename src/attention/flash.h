// `flash`: exact softmax attention computed tile by tile with an online softmax (FlashAttention-2,
// Dao 2023, here on the CPU), never materialising the n×mk score matrix. These are the kernels on
// already projected tensors, with sdpa.h's shape and layouts; the layer in flash.cpp adds the
// Q/K/V/output maps and registers the kind.
//   forward:  per query tile, for each key tile: S = scale·Q Kᵀ + masks, running row max m and sum ℓ,
//             O = Σ_j dropout(exp(S − m)) V rescaled as m grows; O /= ℓ, lse = m + log ℓ.
//   backward: D_t = dO_t · O_t; per key tile, for each query tile: P = exp(S − lse), dV += P̃ᵀ dO,
//             dP̃ = dO Vᵀ, dS = P ∘ (dropout'(dP̃) − D), dQ += scale·dS K, dK += scale·dSᵀ Q.
// Memory: the output and lse (B, h, n) are all that is kept; scratch is O(tile²) per thread (plus,
// when B·hk is smaller than the thread count, one extra dQ per extra key-tile chunk).
#pragma once
#include <cstdint>

#include "attention/sdpa.h"

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

}  // namespace lf
