// Element-wise kernels on rows × cols with row strides (views of a wider activation): fill, copy,
// y += alpha·x, scaling, and zeroing the rows a padding mask marks. Threaded above a size threshold;
// every element's result is the same for any thread count.
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

}  // namespace lf
