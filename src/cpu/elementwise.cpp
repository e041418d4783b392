#include "cpu/elementwise.h"

#include <algorithm>

namespace lf {
namespace {
constexpr int64_t kParallelElements = 1 << 16;
}

template <class T>
void fill_rows(T* y, int64_t rows, int64_t cols, int64_t ldy, T value) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) std::fill_n(y + r * ldy, cols, value);
}

template <class T>
void copy_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) std::copy_n(x + r * ldx, cols, y + r * ldy);
}

template <class T>
void axpby_rows(T alpha, const T* x, int64_t ldx, T beta, T* y, int64_t ldy, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ldx;
    T* yr = y + r * ldy;
    if (beta == T(1)) {
      if (alpha == T(1))
        for (int64_t c = 0; c < cols; ++c) yr[c] += xr[c];
      else
        for (int64_t c = 0; c < cols; ++c) yr[c] += alpha * xr[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) yr[c] = beta * yr[c] + alpha * xr[c];
    }
  }
}

template <class T>
void zero_masked_rows(T* y, int64_t ldy, const uint8_t* mask, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    if (mask[r]) std::fill_n(y + r * ldy, cols, T(0));
}

template <class T>
void relu_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ldx;
    T* yr = y + r * ldy;
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] > T(0) ? xr[c] : T(0);
  }
}

template <class T>
void relu_backward_rows(const T* y, int64_t ldy, const T* dy, int64_t lddy, T* dx, int64_t lddx, int64_t rows,
                        int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * ldy;
    const T* dyr = dy + r * lddy;
    T* dxr = dx + r * lddx;
    for (int64_t c = 0; c < cols; ++c) dxr[c] = yr[c] > T(0) ? dyr[c] : T(0);
  }
}

#define LF_INSTANTIATE(T)                                                                  \
  template void fill_rows<T>(T*, int64_t, int64_t, int64_t, T);                            \
  template void copy_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);            \
  template void axpby_rows<T>(T, const T*, int64_t, T, T*, int64_t, int64_t, int64_t);     \
  template void zero_masked_rows<T>(T*, int64_t, const uint8_t*, int64_t, int64_t);                \
  template void relu_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);                    \
  template void relu_backward_rows<T>(const T*, int64_t, const T*, int64_t, T*, int64_t, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
