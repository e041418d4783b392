// Dropout with a counter-based mask: element i of a tensor is kept when
// uniform01(seed, stream, offset + i) >= p, so the mask depends only on (seed, stream, offset, i),
// never on the thread count, and the backward pass recomputes it instead of storing it.
#pragma once
#include <cstdint>

namespace lf {

// y (n) = x ⊙ keep / (1 − p). p = 0 copies. x and y may alias.
template <class T>
void dropout_forward(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t stream, uint64_t offset = 0);

// dx (n) = dy ⊙ keep / (1 − p), with the same mask as the forward call. dx may alias dy.
template <class T>
void dropout_backward(const T* dy, T* dx, int64_t n, double p, uint64_t seed, uint64_t stream,
                      uint64_t offset = 0);

// Plain reference of the forward: the same mask, the scaling computed in double (so values agree
// with the fast path to one rounding, bitwise where 1/(1 − p) is exact).
template <class T>
void dropout_forward_ref(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t stream,
                         uint64_t offset = 0);

}  // namespace lf
