#include "cpu/window_pooling.h"

#include <algorithm>

namespace lf {
namespace {

template <class T>
T window_weight(const T* tap, const int32_t* count, int64_t j, int64_t tau) {
  return tap ? tap[tau] : T(1) / T(count[j]);
}

}  // namespace

template <class T>
void window_compress(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const T* tap,
                     const int32_t* count, const uint8_t* padded, T* dst, int64_t ldd) {
  for (int64_t j = 0; j < k; ++j) {
    T* row = dst + j * ldd;
    std::fill_n(row, width, T(0));
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau) {
      if (padded && padded[j * w + tau]) continue;
      const T a = window_weight(tap, count, j, tau);
      const T* s = src + (j * w + tau) * lds;
      for (int64_t c = 0; c < width; ++c) row[c] += a * s[c];
    }
  }
}

template <class T>
void window_compress_backward(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const T* tap,
                              const int32_t* count, const uint8_t* padded, const T* ddst, int64_t ldd, T* dsrc,
                              int64_t ldds, T* dtap) {
  for (int64_t j = 0; j < k; ++j) {
    const T* dr = ddst + j * ldd;
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau) {
      const int64_t t = j * w + tau;
      if (padded && padded[t]) continue;
      const T a = window_weight(tap, count, j, tau);
      T* ds = dsrc + t * ldds;
      const T* s = src + t * lds;
      T dot = 0;
      for (int64_t c = 0; c < width; ++c) {
        ds[c] += a * dr[c];
        dot += dr[c] * s[c];
      }
      if (dtap) dtap[tau] += dot;
    }
  }
}

template <class T>
void window_max_pool(const T* src, int64_t lds, int64_t m, int64_t width, int64_t w, int64_t k, const uint8_t* padded,
                     T* dst, int32_t* amax, int64_t ldd) {
  for (int64_t j = 0; j < k; ++j) {
    T* row = dst + j * ldd;
    int32_t* am = amax + j * ldd;
    std::fill_n(row, width, T(0));
    std::fill_n(am, width, int32_t(-1));
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau) {
      const int64_t t = j * w + tau;
      if (padded && padded[t]) continue;
      const T* s = src + t * lds;
      for (int64_t c = 0; c < width; ++c)
        if (am[c] < 0 || s[c] > row[c]) {
          row[c] = s[c];
          am[c] = int32_t(t);
        }
    }
  }
}

template <class T>
void window_max_pool_backward(const int32_t* amax, const T* ddst, int64_t ldd, int64_t width, int64_t k, T* dsrc,
                              int64_t ldds) {
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < width; ++c) {
      const int32_t t = amax[j * ldd + c];
      if (t >= 0) dsrc[t * ldds + c] += ddst[j * ldd + c];
    }
}

template <class T>
void window_weight_sums(int64_t m, int64_t w, int64_t k, const T* tap, const int32_t* count, const uint8_t* padded,
                        T* sums) {
  for (int64_t j = 0; j < k; ++j) {
    T s = 0;
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau)
      if (!(padded && padded[j * w + tau])) s += window_weight(tap, count, j, tau);
    sums[j] = s;
  }
}

template <class T>
void window_weight_sums_backward(int64_t m, int64_t w, int64_t k, const uint8_t* padded, const T* dsums, T* dtap) {
  for (int64_t j = 0; j < k; ++j)
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau)
      if (!(padded && padded[j * w + tau])) dtap[tau] += dsums[j];
}

#define LF_INSTANTIATE(T)                                                                                          \
  template void window_compress<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, const int32_t*, \
                                   const uint8_t*, T*, int64_t);                                                   \
  template void window_compress_backward<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*,         \
                                            const int32_t*, const uint8_t*, const T*, int64_t, T*, int64_t, T*);   \
  template void window_max_pool<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const uint8_t*, T*,        \
                                   int32_t*, int64_t);                                                             \
  template void window_max_pool_backward<T>(const int32_t*, const T*, int64_t, int64_t, int64_t, T*, int64_t);     \
  template void window_weight_sums<T>(int64_t, int64_t, int64_t, const T*, const int32_t*, const uint8_t*, T*);      \
  template void window_weight_sums_backward<T>(int64_t, int64_t, int64_t, const uint8_t*, const T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
