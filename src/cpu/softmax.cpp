#include "cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/vmath.h"

namespace lf {
namespace {

template <class T>
inline void softmax_row(const T* x, T* y, int64_t cols) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < cols; ++j) mx = mx > x[j] ? mx : x[j];
  if (mx == -std::numeric_limits<T>::infinity()) {  // every entry masked
    std::fill(y, y + cols, T(0));
    return;
  }
  T sum = 0;
  if constexpr (std::is_same_v<T, float>) {
    // The vectorisable exp (libm's expf is a call GCC will not vectorise without fast-math).
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < cols; ++j) {
      const float e = exp_f32(x[j] - mx);
      y[j] = e;
      sum += e;
    }
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      const T e = std::exp(x[j] - mx);
      y[j] = e;
      sum += e;
    }
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
}

template <class T>
inline void softmax_backward_row(const T* y, const T* dy, T* dx, int64_t cols) {
  T dot = 0;
  for (int64_t j = 0; j < cols; ++j) dot += dy[j] * y[j];
  for (int64_t j = 0; j < cols; ++j) dx[j] = y[j] * (dy[j] - dot);
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t r = 0; r < rows; ++r) softmax_backward_row(y + r * cols, dy + r * cols, dx + r * cols, cols);
}

template <class T>
void softmax_forward_ref(const T* x, T* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    double mx = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, double(xr[j]));
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += mx == -INFINITY ? 0.0 : std::exp(double(xr[j]) - mx);
    for (int64_t j = 0; j < cols; ++j)
      y[r * cols + j] = sum == 0 ? T(0) : T(std::exp(double(xr[j]) - mx) / sum);
  }
}

template <class T>
void softmax_backward_ref(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0;
    for (int64_t j = 0; j < cols; ++j) dot += double(dy[r * cols + j]) * double(y[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j)
      dx[r * cols + j] = T(double(y[r * cols + j]) * (double(dy[r * cols + j]) - dot));
  }
}

#define LF_INSTANTIATE(T)                                                          \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);     \
  template void softmax_forward_ref<T>(const T*, T*, int64_t, int64_t);            \
  template void softmax_backward_ref<T>(const T*, const T*, T*, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
