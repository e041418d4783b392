// Matrix products. Row-major throughout, as in PyTorch:
//   C (M×N) = alpha · op(A) · op(B) + beta · C,   op(A) is (M×K), op(B) is (K×N),
// where op(X) = Xᵀ when the trans flag is set; lda/ldb/ldc are row strides of the stored matrices.
// float runs on the backend chosen at build time (LINFORMER_GEMM = dnnl | openblas | mkl); double always runs
// the reference loops, which exist for gradient checks and tests.
// The backend call is threaded: never call gemm() from inside an OpenMP parallel region.
#pragma once
#include <cstdint>

namespace lf {

// The plain reference: three loops accumulating in double.
template <class T>
void gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// `batch` independent products with the matrices of item b at A + b·stride_a, B + b·stride_b,
// C + b·stride_c (a stride of 0 reuses one matrix for every item).
template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta, T* C,
                  int64_t ldc, int64_t stride_c, int64_t batch);

// Name of the float backend compiled in ("dnnl", "openblas" or "mkl").
const char* gemm_backend();
// The backend's own thread count: set and restored by RuntimeScope.
void set_gemm_threads(int n);
int gemm_threads();

}  // namespace lf
