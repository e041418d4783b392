// Linformer's window poolings along the sequence (projection "mean", "conv" and "max"): slot j of the
// k compressed positions pools the window [j·w, (j+1)·w) of an m-long sequence, over the positions
// that exist (< m) and are not padding. The loops of the kind, moved here unchanged.
#pragma once
#include <cstdint>

namespace lf {

// dst (k, width; rows ldd apart) row j = Σ_τ a_{j,τ} · src row j·w+τ (src (m, width), rows lds apart),
// a_{j,τ} = tap[τ] (conv, tap (w)) or 1 / count[j] (mean, count (k): real positions per window; tap
// null). padded (m) nonzero = padding (skipped), or null.
template <class T>
void window_compress(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const T* tap,
                     const int32_t* count, const uint8_t* padded, T* dst, int64_t ldd);

// From ddst: dsrc += the pooling's transpose applied to ddst; with a tap, dtap[τ] += Σ_j ddst_j · src_{j·w+τ}.
template <class T>
void window_compress_backward(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const T* tap,
                              const int32_t* count, const uint8_t* padded, const T* ddst, int64_t ldd, T* dsrc,
                              int64_t ldds, T* dtap);

// dst (k, width) = per channel max over each window's real positions; amax (k, width; rows ldd apart)
// the winning position (the first on ties), -1 for a window with none (dst 0 there).
template <class T>
void window_max_pool(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const uint8_t* padded,
                     T* dst, int32_t* amax, int64_t ldd);

// dsrc (rows ldds apart) += ddst at the winning positions.
template <class T>
void window_max_pool_backward(const int32_t* amax, const T* ddst, int64_t ldd, int64_t width, int64_t k, T* dsrc,
                              int64_t ldds);

// sums (k): sums[j] = Σ_τ a_{j,τ} over window j's real positions (the pooling applied to ones), added in
// order of τ: the weight of a bias under the pooling (compress-first). dtap (w) += Σ_j dsums[j] over
// the windows whose position j·w + τ is real, j in order (conv; the mean has no parameter).
template <class T>
void window_weight_sums(int64_t m, int64_t w, int64_t k, const T* tap, const int32_t* count, const uint8_t* padded,
                        T* sums);
template <class T>
void window_weight_sums_backward(int64_t m, int64_t w, int64_t k, const uint8_t* padded, const T* dsums, T* dtap);

}  // namespace lf
