#include "cpu/linear.h"

#include <vector>

#include "cpu/gemm.h"

namespace lf {

template <class T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, int64_t N, int64_t in, int64_t out, int64_t ldx,
                    int64_t ldy) {
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  if (bias) {
#pragma omp parallel for schedule(static) if (N * out > 65536)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t j = 0; j < out; ++j) y[r * ldy + j] = bias[j];
  }
  gemm<T>(false, true, N, out, in, T(1), x, ldx, W, in, bias ? T(1) : T(0), y, ldy);
}

template <class T>
void add_column_sums(const T* dy, T* dbias, int64_t N, int64_t out, int64_t ldy) {
  if (ldy == 0) ldy = out;
  // Parallel over columns: each thread owns its columns, so the sum order is fixed.
#pragma omp parallel for schedule(static) if (N * out > 65536)
  for (int64_t j = 0; j < out; ++j) {
    T s = 0;
    for (int64_t r = 0; r < N; ++r) s += dy[r * ldy + j];
    dbias[j] += s;
  }
}

template <class T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* dbias, int64_t N, int64_t in,
                     int64_t out, bool accumulate_dx, int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  if (dx) gemm<T>(false, false, N, in, out, T(1), dy, ldy, W, in, accumulate_dx ? T(1) : T(0), dx, ldx);
  if (dW) gemm<T>(true, false, out, in, N, T(1), dy, ldy, x, ldx, T(1), dW, in);
  if (dbias) add_column_sums(dy, dbias, N, out, ldy);
}

#define LF_INSTANTIATE(T)                                                                                 \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                  int64_t);                                                              \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t,  \
                                   bool, int64_t, int64_t);                                              \
  template void add_column_sums<T>(const T*, T*, int64_t, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
