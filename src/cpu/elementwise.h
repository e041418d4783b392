// Element-wise kernels on rows × cols with row strides (views of a wider activation): fill, copy,
// y += alpha·x, scaling, zeroing the rows a padding mask marks, and ReLU; a copy between any strides;
// the finiteness check. Threaded above a size threshold; a contiguous block is split in fixed chunks,
// not rows, so a flat vector is threaded too. Every element's result is the same for any thread count.
#pragma once
#include <cstdint>

namespace lf {

template <class T>
void fill_rows(T* y, int64_t rows, int64_t cols, int64_t ldy, T value);
template <class T>
void copy_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols);
// y = beta·y + alpha·x.
template <class T>
void axpby_rows(T alpha, const T* x, int64_t ldx, T beta, T* y, int64_t ldy, int64_t rows, int64_t cols);
// Row r of y set to zeros where mask[r] is nonzero (a select: NaN in a masked row does not survive).
template <class T>
void zero_masked_rows(T* y, int64_t ldy, const uint8_t* mask, int64_t rows, int64_t cols);
// y = max(x, 0), a select (NaN gives 0); y may be x. Backward: dx = dy where y > 0, else 0, from the
// forward's output y (or its input: the same sign); dx may be dy.
template <class T>
void relu_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols);
template <class T>
void relu_backward_rows(const T* y, int64_t ldy, const T* dy, int64_t lddy, T* dx, int64_t lddx, int64_t rows,
                        int64_t cols);

// y = x (accumulate: y += x) over a shape of rank 4 (sizes) with any element strides for each side
// (xs, ys): an axis permutation materialised, or its gradient scattered back.
template <class T>
void copy_strided(const T* x, const int64_t* xs, T* y, const int64_t* ys, const int64_t* sizes, bool accumulate);
// Whether none of the n elements is NaN or ±Inf: the fast path reads the exponent bits (vectorised,
// threaded above the threshold), the reference asks std::isfinite element by element.
template <class T>
bool all_finite(const T* x, int64_t n);
template <class T>
bool all_finite_ref(const T* x, int64_t n);

}  // namespace lf
