#include "cpu/elementwise.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace lf {
namespace {
constexpr int64_t kParallelElements = 1 << 16;
constexpr int64_t kChunk = 1 << 14;  // elements per task of a contiguous block

// Calls span(r, c0, c1) over a (rows, cols) block: row r, columns [c0, c1). A contiguous block (every
// leading dimension = cols) is walked as one flat row in fixed chunks, so that a flat vector (one row,
// as the model passes its residual adds) is spread over the threads too. Element-wise results do not
// depend on the split.
template <class Span>
void for_each_span(int64_t rows, int64_t cols, bool contiguous, Span&& span) {
  const int64_t total = rows * cols;
  if (contiguous) {
    const int64_t chunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (total > kParallelElements)
    for (int64_t i = 0; i < chunks; ++i) span(int64_t(0), i * kChunk, std::min(total, (i + 1) * kChunk));
  } else {
#pragma omp parallel for schedule(static) if (total > kParallelElements)
    for (int64_t r = 0; r < rows; ++r) span(r, int64_t(0), cols);
  }
}
}  // namespace

template <class T>
void fill_rows(T* y, int64_t rows, int64_t cols, int64_t ldy, T value) {
  for_each_span(rows, cols, ldy == cols,
                [&](int64_t r, int64_t c0, int64_t c1) { std::fill(y + r * ldy + c0, y + r * ldy + c1, value); });
}

template <class T>
void copy_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols) {
  for_each_span(rows, cols, ldx == cols && ldy == cols, [&](int64_t r, int64_t c0, int64_t c1) {
    std::copy(x + r * ldx + c0, x + r * ldx + c1, y + r * ldy + c0);
  });
}

template <class T>
void axpby_rows(T alpha, const T* x, int64_t ldx, T beta, T* y, int64_t ldy, int64_t rows, int64_t cols) {
  for_each_span(rows, cols, ldx == cols && ldy == cols, [&](int64_t r, int64_t c0, int64_t c1) {
    const T* xr = x + r * ldx;
    T* yr = y + r * ldy;
    if (beta == T(1)) {
      if (alpha == T(1))
        for (int64_t c = c0; c < c1; ++c) yr[c] += xr[c];
      else
        for (int64_t c = c0; c < c1; ++c) yr[c] += alpha * xr[c];
    } else {
      for (int64_t c = c0; c < c1; ++c) yr[c] = beta * yr[c] + alpha * xr[c];
    }
  });
}

template <class T>
void zero_masked_rows(T* y, int64_t ldy, const uint8_t* mask, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements)
  for (int64_t r = 0; r < rows; ++r)
    if (mask[r]) std::fill_n(y + r * ldy, cols, T(0));
}

template <class T>
void relu_rows(const T* x, int64_t ldx, T* y, int64_t ldy, int64_t rows, int64_t cols) {
  for_each_span(rows, cols, ldx == cols && ldy == cols, [&](int64_t r, int64_t c0, int64_t c1) {
    const T* xr = x + r * ldx;
    T* yr = y + r * ldy;
    for (int64_t c = c0; c < c1; ++c) yr[c] = xr[c] > T(0) ? xr[c] : T(0);
  });
}

template <class T>
void relu_backward_rows(const T* y, int64_t ldy, const T* dy, int64_t lddy, T* dx, int64_t lddx, int64_t rows,
                        int64_t cols) {
  for_each_span(rows, cols, ldy == cols && lddy == cols && lddx == cols, [&](int64_t r, int64_t c0, int64_t c1) {
    const T* yr = y + r * ldy;
    const T* dyr = dy + r * lddy;
    T* dxr = dx + r * lddx;
    for (int64_t c = c0; c < c1; ++c) dxr[c] = yr[c] > T(0) ? dyr[c] : T(0);
  });
}

namespace {
// Whether the rank-4 strides address every element of sizes exactly once: sorted by stride, the axes
// of size > 1 tile a dense block (a permutation of a row-major layout).
bool dense_permutation(const int64_t* sizes, const int64_t* strides) {
  int64_t axes[4], n = 0;
  for (int64_t d = 0; d < 4; ++d)
    if (sizes[d] > 1) axes[n++] = d;
  for (int64_t i = 1; i < n; ++i)  // insertion sort by stride (std::sort on 4 entries trips GCC 12's -Warray-bounds)
    for (int64_t j = i; j > 0 && strides[axes[j]] < strides[axes[j - 1]]; --j) std::swap(axes[j], axes[j - 1]);
  int64_t expect = 1;
  for (int64_t i = 0; i < n; ++i) {
    if (strides[axes[i]] != expect) return false;
    expect *= sizes[axes[i]];
  }
  return true;
}
}  // namespace

// Threads split the two outer axes when y is a dense permutation (each of its elements written by one
// iteration, so the split changes nothing in the result); a y that overlaps itself (a stride 0
// broadcast, accumulated into) stays on one thread.
template <class T>
void copy_strided(const T* x, const int64_t* xs, T* y, const int64_t* ys, const int64_t* sizes, bool accumulate) {
  const int64_t total = sizes[0] * sizes[1] * sizes[2] * sizes[3];
  const bool threaded = total > kParallelElements && !omp_in_parallel() && dense_permutation(sizes, ys);
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int64_t i0 = 0; i0 < sizes[0]; ++i0)
    for (int64_t i1 = 0; i1 < sizes[1]; ++i1)
      for (int64_t i2 = 0; i2 < sizes[2]; ++i2) {
        const T* xr = x + i0 * xs[0] + i1 * xs[1] + i2 * xs[2];
        T* yr = y + i0 * ys[0] + i1 * ys[1] + i2 * ys[2];
        if (accumulate)
          for (int64_t i3 = 0; i3 < sizes[3]; ++i3) yr[i3 * ys[3]] += xr[i3 * xs[3]];
        else
          for (int64_t i3 = 0; i3 < sizes[3]; ++i3) yr[i3 * ys[3]] = xr[i3 * xs[3]];
      }
}

// |x|'s bits reach the all-ones exponent exactly for ±Inf and NaN. An unsigned max over the bits is an
// integer reduction, which GCC vectorises (std::isfinite with an early exit it does not). No early
// exit: the model runs it over each activation after a non-finite loss, where the finite ones (the
// whole read) are the common case.
template <class T>
bool all_finite(const T* x, int64_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U kAbs = ~U(0) >> 1;
  constexpr U kInf = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  U worst = 0;
#pragma omp parallel for schedule(static) reduction(max : worst) if (n > kParallelElements && !omp_in_parallel())
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t end = std::min(n, (i + 1) * kChunk);
    U w = 0;
    for (int64_t e = i * kChunk; e < end; ++e) {
      U bits;
      std::memcpy(&bits, x + e, sizeof bits);
      w = std::max(w, U(bits & kAbs));
    }
    worst = std::max(worst, w);
  }
  return worst < kInf;
}

template <class T>
bool all_finite_ref(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

#define LF_INSTANTIATE(T)                                                                  \
  template void fill_rows<T>(T*, int64_t, int64_t, int64_t, T);                            \
  template void copy_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);            \
  template void axpby_rows<T>(T, const T*, int64_t, T, T*, int64_t, int64_t, int64_t);     \
  template void zero_masked_rows<T>(T*, int64_t, const uint8_t*, int64_t, int64_t);                \
  template void relu_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);                    \
  template void relu_backward_rows<T>(const T*, int64_t, const T*, int64_t, T*, int64_t, int64_t, int64_t);         \
  template void copy_strided<T>(const T*, const int64_t*, T*, const int64_t*, const int64_t*, bool);               \
  template bool all_finite<T>(const T*, int64_t);                                                                  \
  template bool all_finite_ref<T>(const T*, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
