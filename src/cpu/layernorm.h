// Layer normalisation over the last dimension, as torch.nn.LayerNorm: each row is normalised with its
// own mean and biased variance, then scaled and shifted per column. The forward saves the row mean and
// reciprocal standard deviation so the backward does not recompute the statistics.
#pragma once
#include <cstdint>

namespace lf {

// y (rows, C) = (x (rows, C) − mean) · rstd · weight (C) + bias (C); writes mean (rows) and
// rstd (rows) = 1 / sqrt(var + eps) for the backward. x and y may alias (x is then lost to the backward).
template <class T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows, int64_t C,
                       double eps = 1e-5);

// The forward's output again from its saved statistics, bit for bit: for a backward that recomputes
// y instead of keeping it.
template <class T>
void layernorm_apply(const T* x, const T* weight, const T* bias, const T* mean, const T* rstd, T* y, int64_t rows,
                     int64_t C);

// Given the forward's x (rows, C), weight (C), mean (rows), rstd (rows) and dy (rows, C): dx (rows, C) is
// overwritten; dweight (C) and dbias (C) are accumulated (+=). Any of dx, dweight, dbias may be null to
// skip it. dx may alias dy.
template <class T>
void layernorm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx, T* dweight,
                        T* dbias, int64_t rows, int64_t C);

// Plain references (accumulate in double), same contracts.
template <class T>
void layernorm_forward_ref(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows, int64_t C,
                           double eps = 1e-5);
template <class T>
void layernorm_backward_ref(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx, T* dweight,
                            T* dbias, int64_t rows, int64_t C);

}  // namespace lf
