// Depthwise 1-D convolution along the sequence, as torch.nn.Conv1d(d, d, K, groups=d, padding=...) on
// a (B, d, n) input, but on our (B, n, d) layout: each channel c of position t mixes the same channel of
// the K positions t − left … t − left + K − 1 (zero outside [0, n)):
//   y[b, t, c] = bias[c] + Σ_j w[c, 0, j] · x[b, t − left + j, c].
// left = (K − 1) / 2 (centred, K odd: PyTorch's padding = K // 2) or K − 1 (causal: position t sees only
// t and earlier, the left padding of a causal conv). It gives every position its neighbours before a
// block's attention, whatever the attention kind (the model's `conv_kernel` option).
#pragma once
#include <cstdint>

namespace lf {

// Where the window of K taps starts relative to the output position.
inline int64_t conv1d_left(int64_t K, bool causal) { return causal ? K - 1 : (K - 1) / 2; }

// y (B, n, d) = depthwise_conv(x (B, n, d); w (d, 1, K), bias (d) or null). y must not alias x.
template <class T>
void depthwise_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t n, int64_t d, int64_t K,
                              bool causal);

// dx (B, n, d) overwritten from dy (B, n, d); dw (d, 1, K) and dbias (d, or null) accumulate (+=).
// dx must not alias dy.
template <class T>
void depthwise_conv1d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias, int64_t B, int64_t n,
                               int64_t d, int64_t K, bool causal);

// Plain references (loops in the formula's order), same contracts.
template <class T>
void depthwise_conv1d_forward_ref(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t n, int64_t d,
                                  int64_t K, bool causal);
template <class T>
void depthwise_conv1d_backward_ref(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias, int64_t B, int64_t n,
                                   int64_t d, int64_t K, bool causal);

}  // namespace lf
