// Row softmax, numerically stable (the row maximum is subtracted before exp). Masking is expressed
// by -inf entries in x: they get probability 0, and a row that is entirely -inf (every key masked)
// yields all zeros instead of NaN, so a fully padded query contributes nothing.
#pragma once
#include <cstdint>

namespace lf {

// y (rows, cols) = softmax(x) over each row. x and y may alias.
template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);

// dx (rows, cols) = y ⊙ (dy − Σ_j dy_j y_j), row by row. dx may alias dy.
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

// Plain references (accumulate in double).
template <class T>
void softmax_forward_ref(const T* x, T* y, int64_t rows, int64_t cols);
template <class T>
void softmax_backward_ref(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

}  // namespace lf
