// Linformer's window poolings along the sequence (projections "mean", "conv" and "max"): slot j of k
// pools the window [j·w, (j+1)·w) of an m-long sequence over its real (existing, unpadded) positions.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// dst (k, width) row j = Σ_τ a_{j,τ} src (m, width) row j·w+τ, with a = tap (w) (conv) or 1 / count[j]
// (mean: count (k) real positions per window; tap `{}`). padded (m), nonzero = padding, or `{}`.
template <class T>
void window_compress(In<T> src, In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded,
                     int64_t w, TensorView<T> dst);
// dsrc (m, width) += the transpose of the pooling applied to ddst (k, width); dtap (w) += Σ_j ddst_j ·
// src_{j·w+τ} (conv; `{}` otherwise).
template <class T>
void window_compress_backward(In<T> src, In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded,
                              int64_t w, In<T> ddst, TensorView<T> dsrc, Out<T> dtap);

// dst (k, width) = per channel max over each window's real positions, 0 for a window with none;
// amax (k, width) the winning position (the first on ties), -1 for none.
template <class T>
void window_max_pool(In<T> src, TensorView<const uint8_t> padded, int64_t w, TensorView<T> dst,
                     TensorView<int32_t> amax);
// dsrc (m, width) += ddst (k, width) at the winning positions amax.
template <class T>
void window_max_pool_backward(TensorView<const int32_t> amax, In<T> ddst, TensorView<T> dsrc);

// sums (k): slot j's total weight Σ_τ a_{j,τ} over its window's real positions (window_compress of a
// column of ones), each added in order of τ: the weight the bias of the projected keys gets in slot j
// when compressing first. tap / count / padded as for window_compress; m the sequence's length.
template <class T>
void window_weight_sums(In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded, int64_t w,
                        int64_t m, TensorView<T> sums);
// dtap (w) += Σ_j dsums[j] (k) over the windows j whose position j·w + τ is real (the conv kernel's
// gradient; the mean has no parameter), j in order.
template <class T>
void window_weight_sums_backward(In<T> dsums, TensorView<const uint8_t> padded, int64_t w, int64_t m,
                                 TensorView<T> dtap);

}  // namespace lf::ops
