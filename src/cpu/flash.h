// `flash`: exact softmax attention computed tile by tile with an online softmax (FlashAttention-2,
// Dao 2023, here on the CPU), never materialising the n×mk score matrix. These are the kernels on
// already projected tensors, with SdpaShape's layouts (core/attention_shape.h); ops/flash.h checks and
// dispatches them, and the layer in attention/flash.cpp adds the Q/K/V/output maps. The tile product
// and the packing copies are shared with the other tiled kernels.
//   forward:  per query tile, for each key tile: S = scale·Q Kᵀ + masks, running row max m and sum ℓ,
//             O = Σ_j dropout(exp(S − m)) V rescaled as m grows; O /= ℓ, lse = m + log ℓ.
//   backward: D_t = dO_t · O_t; per key tile, for each query tile: P = exp(S − lse), dV += P̃ᵀ dO,
//             dP̃ = dO Vᵀ, dS = P ∘ (dropout'(dP̃) − D), dQ += scale·dS K, dK += scale·dSᵀ Q.
// Memory: the output and lse (B, h, n) are all that is kept; scratch is O(tile²) per thread, plus the
// operands regrouped by head (forward: one head's K and V per thread; backward: Q and dO, once) and,
// when B·hk is small, one extra dQ per extra key-tile chunk (at most 3): O(n) in all.
#pragma once
#include <cstdint>

#include "core/attention_shape.h"

namespace lf {

// Rows of a query tile and of a key tile. The forward's larger tiles spread the online softmax's
// per-tile work (row maxima, rescaling) over more products (measured 3 % faster than 64 at n = 4096);
// in the backward 64 and 128 measured the same, and 64 leaves more key tiles to deal out.
inline constexpr int64_t kFlashForwardTile = 128, kFlashBackwardTile = 64;

// O (B, n, h·d_h) and lse (B, h, n) = log Σ_j exp(scale·q_t·k_j) over the keys row t sees (before
// dropout); a row whose keys are all masked gets O = 0 and lse = +inf. Parallel over (batch, head,
// query tile); causal key tiles entirely above the diagonal and fully padded key tiles are skipped.
// Dropout (s.dropout > 0) uses the mask of sdpa_forward: the same Philox stream and element index.
template <class T>
void flash_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* out, T* lse);

// From dO (B, n, h·d_h), with out and lse from flash_forward: dq (B, n, h·d_h), dk and dv
// (B, mk, hk·d_h), all overwritten. Scores are recomputed tile by tile. Parallel over (batch, key head,
// chunk of key tiles): each task owns the dK/dV rows of its key tiles; dQ goes straight into dq when
// a head's key tiles form one chunk, else into one buffer per chunk, summed afterwards. The chunk
// count comes from the shape alone: results do not depend on the thread count.
template <class T>
void flash_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
                    const T* dout, T* dq, T* dk, T* dv);

}  // namespace lf
