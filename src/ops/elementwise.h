// Element-wise ops on views of rows (any leading dimensions fold into rows; a row stride addresses
// columns of a wider activation): fill, copy, y = beta·y + alpha·x, zeroing padded rows, and ReLU;
// a copy between views of any strides, and the check that every element is finite.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

template <class T>
void fill(TensorView<T> y, double value);
template <class T>
void copy(In<T> x, TensorView<T> y);
// y = beta·y + alpha·x (beta = 1: y += alpha·x).
template <class T>
void axpby(double alpha, In<T> x, double beta, TensorView<T> y);
template <class T>
void add(In<T> x, TensorView<T> y) {
  axpby<T>(1, x, 1, y);
}
// y *= s (contiguous y).
template <class T>
void scale(TensorView<T> y, double s);
// Row r of y (rows, d) set to zeros where mask (rows) is nonzero; a mask without data does nothing.
template <class T>
void zero_masked_rows(TensorView<const uint8_t> mask, TensorView<T> y);
// y = max(x, 0) (NaN gives 0); y may be x.
template <class T>
void relu_forward(In<T> x, TensorView<T> y);
// dx = dy where y > 0, else 0, from the forward's output y; dx may be dy.
template <class T>
void relu_backward(In<T> y, In<T> dy, TensorView<T> dx);

// y = x for two views of one shape with any strides (y's elements distinct): e.g. x a permutation of
// a tensor's axes (TensorView::strided over it), y contiguous; accumulate: y += x.
template <class T>
void copy_strided(In<T> x, TensorView<T> y, bool accumulate = false);
// Whether no element of x (contiguous) is NaN or ±Inf.
template <class T>
bool all_finite(In<T> x);

}  // namespace lf::ops
