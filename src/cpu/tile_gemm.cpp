// The tile product's entry points (the register-blocked kernel itself is inline in tile_gemm.h).
#include "cpu/tile_gemm.h"

namespace lf {

template <class T>
void flash_tile_gemm(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                     int64_t ldb, bool accumulate, T* C, int64_t ldc) {
  if (trans_a)
    tile_gemm<T, true>(M, N, K, alpha, A, lda, B, ldb, accumulate, C, ldc);
  else
    tile_gemm<T, false>(M, N, K, alpha, A, lda, B, ldb, accumulate, C, ldc);
}

template <class T>
void flash_tile_gemm_ref(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                         const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += double(trans_a ? A[k * lda + i] : A[i * lda + k]) * double(B[k * ldb + j]);
      C[i * ldc + j] = T((accumulate ? double(C[i * ldc + j]) : 0.0) + double(alpha) * acc);
    }
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void flash_tile_gemm<T>(bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, bool, \
                                   T*, int64_t);                                                                 \
  template void flash_tile_gemm_ref<T>(bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t,   \
                                       bool, T*, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
