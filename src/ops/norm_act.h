// Layer normalisation (torch.nn.LayerNorm over the last dimension), GELU (erf form) and dropout with a
// counter-based mask: forward and backward on contiguous views.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// y (rows, C) = (x − mean) · rstd · weight + bias; writes mean and rstd (rows) for the backward.
template <class T>
void layernorm_forward(In<T> x, In<T> weight, In<T> bias, TensorView<T> y, Out<T> mean, Out<T> rstd, double eps = 1e-5);
// The forward's y again from its saved statistics, bit for bit.
template <class T>
void layernorm_apply(In<T> x, In<T> weight, In<T> bias, In<T> mean, In<T> rstd, TensorView<T> y);
// dx (overwritten), dweight and dbias (accumulated) from dy.
template <class T>
void layernorm_backward(In<T> x, In<T> weight, In<T> mean, In<T> rstd, In<T> dy, TensorView<T> dx, Out<T> dweight,
                        Out<T> dbias);

// y = x · Φ(x); dx = dy · (Φ(x) + x φ(x)). Element-wise; y or dx may alias.
template <class T>
void gelu_forward(In<T> x, TensorView<T> y);
template <class T>
void gelu_backward(In<T> x, In<T> dy, TensorView<T> dx);

// y = x ⊙ keep / (1 − p), element i kept when uniform01(seed, stream, offset + i) >= p; the backward
// draws the same mask. Element-wise; y may alias x.
template <class T>
void dropout_forward(In<T> x, TensorView<T> y, double p, uint64_t seed, uint64_t stream, uint64_t offset = 0);
template <class T>
void dropout_backward(In<T> dy, TensorView<T> dx, double p, uint64_t seed, uint64_t stream, uint64_t offset = 0);

}  // namespace lf::ops
