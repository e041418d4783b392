// The linear map y = x Wᵀ + b with PyTorch's (out, in) weight layout, forward and backward.
// x, y, dx, dy are rows (any leading dimensions fold into N rows; a row stride other than the width
// addresses columns of a wider activation). bias, dx, dW, dbias may be empty views `{}`.
#pragma once
#include "ops/view_args.h"

namespace lf::ops {

// y (N, out) = x (N, in) · Wᵀ (W: (out, in)) + bias (out).
template <class T>
void linear_forward(In<T> x, In<T> W, In<T> bias, TensorView<T> y);

// From dy (N, out): dx (N, in) = dy · W (overwritten, or added with accumulate_dx); dW (out, in) += dyᵀ x;
// dbias (out) += Σ_rows dy.
template <class T>
void linear_backward(In<T> x, In<T> W, In<T> dy, Out<T> dx, Out<T> dW, Out<T> dbias, bool accumulate_dx = false);

// dbias (out) += Σ_rows dy (N, out), in a fixed order for any thread count.
template <class T>
void add_column_sums(In<T> dy, TensorView<T> dbias);

}  // namespace lf::ops
