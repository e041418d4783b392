#include "cpu/linear.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/linear_int8.h"
#include "linformer/error.h"

namespace lf {

template <class T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, int64_t N, int64_t in, int64_t out, int64_t ldx,
                    int64_t ldy) {
  // --precision int8 quantises the linear layers (float only: double is the tests' exact path, as gemm's).
  if constexpr (std::is_same_v<T, float>)
    if (gemm_precision() == Precision::int8) return linear_int8_forward(x, W, bias, y, N, in, out, ldx, ldy);
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  gemm_bias<T>(false, true, N, out, in, x, ldx, W, in, bias, y, ldy);
}

template <class T>
void add_column_sums(const T* dy, T* dbias, int64_t N, int64_t out, int64_t ldy) {
  if (ldy == 0) ldy = out;
  // Parallel over blocks of 64 columns, rows in order inside a block: each column's sum runs in the
  // same order for any thread count, and the inner loop reads contiguous rows (it vectorises).
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (out + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * out > 65536)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kBlock, width = std::min(kBlock, out - j0);
    T acc[kBlock] = {};
    for (int64_t r = 0; r < N; ++r) {
      const T* row = dy + r * ldy + j0;
      for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) dbias[j0 + j] += acc[j];
  }
}

template <class T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* dbias, int64_t N, int64_t in,
                     int64_t out, bool accumulate_dx, int64_t ldx, int64_t ldy) {
  if constexpr (std::is_same_v<T, float>)
    if (gemm_precision() == Precision::int8)
      throw Error("linear_backward: no backward at precision int8 (quantised for inference only); run training "
                  "in fp32 or bf16");
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
