// Exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)) with Φ the normal CDF: PyTorch's default (approximate='none'), not the
// tanh approximation, so that weights trained here and there agree.
#pragma once
#include <cstdint>

namespace lf {

// y (n) = gelu(x (n)). x and y may alias.
template <class T>
void gelu_forward(const T* x, T* y, int64_t n);

// dx (n) = dy (n) ⊙ gelu'(x (n)), overwritten; gelu'(x) = Φ(x) + x·φ(x). dx may alias dy.
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t n);

// Plain references (computed in double).
template <class T>
void gelu_forward_ref(const T* x, T* y, int64_t n);
template <class T>
void gelu_backward_ref(const T* x, const T* dy, T* dx, int64_t n);

}  // namespace lf
