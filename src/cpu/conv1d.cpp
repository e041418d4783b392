#include "cpu/conv1d.h"

#include <vector>

#include "linformer/error.h"

namespace lf {
namespace {

void check_sizes(int64_t B, int64_t n, int64_t d, int64_t K) {
  LF_REQUIRE(B >= 0 && n >= 0 && d >= 0, "depthwise_conv1d: negative size B=", B, " n=", n, " d=", d);
  LF_REQUIRE(K >= 1, "depthwise_conv1d: kernel size must be positive, got ", K);
}

// w (d, 1, K) → (K, d), so the fast loops run over contiguous channels.
template <class T>
std::vector<T> taps_by_offset(const T* w, int64_t d, int64_t K) {
  std::vector<T> wt(size_t(K * d));
  for (int64_t c = 0; c < d; ++c)
    for (int64_t j = 0; j < K; ++j) wt[size_t(j * d + c)] = w[c * K + j];
  return wt;
}

// out (B, n, d): row (b, t) = (bias or 0) + Σ_j wt[j] ⊙ in row (b, t + first + Step·j), over the j
// whose row lies in [0, n); j in order, rows in parallel (each task owns its row).
template <int Step, class T>
void window_rows(const T* in, const std::vector<T>& wt, const T* bias, T* out, int64_t B, int64_t n, int64_t d,
                 int64_t K, int64_t first) {
#pragma omp parallel for schedule(static) if (B * n * d * K > 65536)
  for (int64_t r = 0; r < B * n; ++r) {
    const int64_t b = r / n, t = r % n;
    T* outr = out + r * d;
    for (int64_t c = 0; c < d; ++c) outr[c] = bias ? bias[c] : T(0);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t s = t + first + Step * j;
      if (s < 0 || s >= n) continue;
      const T* ins = in + (b * n + s) * d;
      const T* wj = wt.data() + j * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) outr[c] += wj[c] * ins[c];
    }
  }
}

}  // namespace

template <class T>
void depthwise_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t n, int64_t d, int64_t K,
                              bool causal) {
  check_sizes(B, n, d, K);
  const int64_t left = conv1d_left(K, causal);
  // y[t] = bias + Σ_j w[j] x[t − left + j].
  window_rows<+1>(x, taps_by_offset(w, d, K), bias, y, B, n, d, K, -left);
}

template <class T>
void depthwise_conv1d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias, int64_t B, int64_t n,
                               int64_t d, int64_t K, bool causal) {
  check_sizes(B, n, d, K);
  const int64_t left = conv1d_left(K, causal);
  // dx[s] = Σ_j w[j] dy[s + left − j]: the transposed window.
  window_rows<-1>(dy, taps_by_offset(w, d, K), static_cast<const T*>(nullptr), dx, B, n, d, K, left);
  // Weight and bias gradients: one pass in row order on one thread (O(B·n·d·K), small next to the
  // attention), so the sums do not depend on the thread count.
  std::vector<T> dwt(size_t(K * d), T(0));
  for (int64_t r = 0; r < B * n; ++r) {
    const int64_t b = r / n, t = r % n;
    const T* dyr = dy + r * d;
    if (dbias)
      for (int64_t c = 0; c < d; ++c) dbias[c] += dyr[c];
    for (int64_t j = 0; j < K; ++j) {
      const int64_t s = t - left + j;
      if (s < 0 || s >= n) continue;
      const T* xs = x + (b * n + s) * d;
      T* dwj = dwt.data() + j * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) dwj[c] += dyr[c] * xs[c];
    }
  }
  for (int64_t c = 0; c < d; ++c)
    for (int64_t j = 0; j < K; ++j) dw[c * K + j] += dwt[size_t(j * d + c)];
}

template <class T>
void depthwise_conv1d_forward_ref(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t n, int64_t d,
                                  int64_t K, bool causal) {
  check_sizes(B, n, d, K);
  const int64_t left = conv1d_left(K, causal);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < d; ++c) {
        double acc = bias ? double(bias[c]) : 0.0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - left + j;
          if (s >= 0 && s < n) acc += double(w[c * K + j]) * double(x[(b * n + s) * d + c]);
        }
        y[(b * n + t) * d + c] = T(acc);
      }
}

template <class T>
void depthwise_conv1d_backward_ref(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias, int64_t B, int64_t n,
                                   int64_t d, int64_t K, bool causal) {
  check_sizes(B, n, d, K);
  const int64_t left = conv1d_left(K, causal);
  for (int64_t i = 0; i < B * n * d; ++i) dx[i] = T(0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const T g = dy[(b * n + t) * d + c];
        if (dbias) dbias[c] += g;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - left + j;
          if (s < 0 || s >= n) continue;
          dx[(b * n + s) * d + c] += w[c * K + j] * g;
          dw[c * K + j] += x[(b * n + s) * d + c] * g;
        }
      }
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void depthwise_conv1d_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                            bool);                                                               \
  template void depthwise_conv1d_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t,  \
                                             int64_t, bool);                                                     \
  template void depthwise_conv1d_forward_ref<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t,       \
                                                int64_t, bool);                                                  \
  template void depthwise_conv1d_backward_ref<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,       \
                                                 int64_t, int64_t, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
