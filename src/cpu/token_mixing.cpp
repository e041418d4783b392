#include "cpu/token_mixing.h"

#include <algorithm>

namespace lf {

template <class T>
void token_mixing_pack(const T* src, const uint8_t* mask, int64_t B, int64_t n, int64_t d, int64_t G, int64_t np,
                       T* dst) {
  const int64_t dh = d / G, N = B * dh;
#pragma omp parallel for schedule(static) if (B * np * d > 32768)
  for (int64_t bt = 0; bt < B * np; ++bt) {
    const int64_t b = bt / np, t = bt % np;
    const bool zero = t >= n || (mask && mask[b * n + t]);
    for (int64_t g = 0; g < G; ++g) {
      T* o = dst + (g * np + t) * N + b * dh;
      if (zero) {
        std::fill(o, o + dh, T(0));
      } else {
        const T* row = src + (b * n + t) * d + g * dh;
        std::copy(row, row + dh, o);
      }
    }
  }
}

template <class T>
void token_mixing_unpack(const T* src, int64_t B, int64_t n, int64_t d, int64_t G, int64_t np, T* dst) {
  const int64_t dh = d / G, N = B * dh;
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
  for (int64_t bt = 0; bt < B * n; ++bt) {
    const int64_t b = bt / n, t = bt % n;
    T* row = dst + bt * d;
    for (int64_t g = 0; g < G; ++g) {
      const T* s = src + (g * np + t) * N + b * dh;
      std::copy(s, s + dh, row + g * dh);
    }
  }
}

template <class T>
void broadcast_rows(const T* values, int64_t ld, int64_t G, int64_t rows, int64_t N, T* dst) {
#pragma omp parallel for schedule(static) if (G * rows * N > 65536)
  for (int64_t gr = 0; gr < G * rows; ++gr)
    std::fill(dst + gr * N, dst + (gr + 1) * N, values[(gr / rows) * ld + gr % rows]);
}

template <class T>
void add_row_sums(const T* src, int64_t G, int64_t rows, int64_t N, T* sums, int64_t ld) {
#pragma omp parallel for schedule(static) if (G * rows * N > 65536)
  for (int64_t gr = 0; gr < G * rows; ++gr) {
    const T* s = src + gr * N;
    T acc = 0;
    for (int64_t j = 0; j < N; ++j) acc += s[j];
    sums[(gr / rows) * ld + gr % rows] += acc;
  }
}

template <class T>
void lower_triangle(const T* src, int64_t ld, int64_t bs, T* dst) {
#pragma omp parallel for schedule(static) if (bs * bs > 16384)
  for (int64_t r = 0; r < bs; ++r) {
    std::copy(src + r * ld, src + r * ld + r + 1, dst + r * bs);
    std::fill(dst + r * bs + r + 1, dst + (r + 1) * bs, T(0));
  }
}

template <class T>
void add_lower_triangle(const T* src, int64_t bs, T* dst, int64_t ld) {
#pragma omp parallel for schedule(static) if (bs * bs > 16384)
  for (int64_t r = 0; r < bs; ++r)
    for (int64_t c = 0; c <= r; ++c) dst[r * ld + c] += src[r * bs + c];
}

#define LF_INSTANTIATE(T)                                                                                   \
  template void token_mixing_pack<T>(const T*, const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, T*); \
  template void token_mixing_unpack<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T*);            \
  template void broadcast_rows<T>(const T*, int64_t, int64_t, int64_t, int64_t, T*);                          \
  template void add_row_sums<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t);                            \
  template void lower_triangle<T>(const T*, int64_t, int64_t, T*);                                            \
  template void add_lower_triangle<T>(const T*, int64_t, T*, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
