// Row-wise softmax over the last dimension (a row of all -inf gives zeros, not NaN) and its backward.
#pragma once
#include "ops/view_args.h"

namespace lf::ops {

// y = softmax(x) row by row; y may be x (in place). Both contiguous.
template <class T>
void softmax_forward(In<T> x, TensorView<T> y);

// dx = y ⊙ (dy − Σ_j y_j dy_j) row by row, from the forward's output y; dx may be dy.
template <class T>
void softmax_backward(In<T> y, In<T> dy, TensorView<T> dx);

}  // namespace lf::ops
