// The tile product of the CPU kernels that run inside their own parallel regions (flash, the sparse
// patterns, Sinkhorn, reformer, the linear-attention core): a single-threaded, register-blocked
// C = alpha · op(A) · B on small tiles, beside its plain reference, and the packing of tiles out of
// (B, n, h·d_h) activations.
#pragma once
#include <algorithm>
#include <cstdint>

namespace lf {

// The register-blocked kernel, inline so that kernels with a fixed op(A) compile it in place.
// Register block: kRows rows of C × kCols columns (64 bytes: two AVX2 vectors of float or double).
constexpr int kRows = 4;
template <class T>
constexpr int kCols = int(64 / sizeof(T));

// One full kRows × kCols block of C, K-long dot products kept in registers. a(r, k) is A[r·lda + k]
// (or A[k·lda + r] transposed): kRows broadcasts and one contiguous row of B per k.
template <class T, bool TA>
inline void micro_block(int64_t K, T alpha, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                        bool accumulate, T* __restrict C, int64_t ldc) {
  constexpr int R = kRows, JB = kCols<T>;
  T acc[R][JB] = {};
  for (int64_t k = 0; k < K; ++k) {
    const T* __restrict b = B + k * ldb;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const T a = TA ? A[k * lda + r] : A[r * lda + k];
#pragma omp simd
      for (int j = 0; j < JB; ++j) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < R; ++r) {
    T* __restrict c = C + r * ldc;
    if (accumulate) {
#pragma omp simd
      for (int j = 0; j < JB; ++j) c[j] += alpha * acc[r][j];
    } else {
#pragma omp simd
      for (int j = 0; j < JB; ++j) c[j] = alpha * acc[r][j];
    }
  }
}

// A partial block at the right or bottom edge: rows ≤ kRows, cols ≤ kCols.
template <class T, bool TA>
inline void micro_edge(int rows, int cols, int64_t K, T alpha, const T* __restrict A, int64_t lda,
                       const T* __restrict B, int64_t ldb, bool accumulate, T* __restrict C, int64_t ldc) {
  T acc[kRows][kCols<T>] = {};
  for (int64_t k = 0; k < K; ++k) {
    const T* __restrict b = B + k * ldb;
    for (int r = 0; r < rows; ++r) {
      const T a = TA ? A[k * lda + r] : A[r * lda + k];
#pragma omp simd
      for (int j = 0; j < cols; ++j) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < rows; ++r) {
    T* c = C + r * ldc;
    for (int j = 0; j < cols; ++j) c[j] = accumulate ? c[j] + alpha * acc[r][j] : alpha * acc[r][j];
  }
}

// Blocks of C row panel by row panel: the K×kCols panel of B stays in L1 across the row blocks (a
// whole 64×64 tile of B is 16 KiB in float).
template <class T, bool TA>
inline void tile_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
                      bool accumulate, T* C, int64_t ldc) {
  constexpr int R = kRows, JB = kCols<T>;
  for (int64_t i0 = 0; i0 < M; i0 += R) {
    const int rows = int(std::min<int64_t>(R, M - i0));
    const T* Ai = TA ? A + i0 : A + i0 * lda;
    for (int64_t j0 = 0; j0 < N; j0 += JB) {
      const int cols = int(std::min<int64_t>(JB, N - j0));
      if (rows == R && cols == JB)
        micro_block<T, TA>(K, alpha, Ai, lda, B + j0, ldb, accumulate, C + i0 * ldc + j0, ldc);
      else
        micro_edge<T, TA>(rows, cols, K, alpha, Ai, lda, B + j0, ldb, accumulate, C + i0 * ldc + j0, ldc);
    }
  }
}

// The tile product, single-threaded (called inside the parallel regions; never the threaded gemm()):
//   C (M×N) = alpha · op(A) · B, or C += alpha · op(A) · B with accumulate,
// op(A) = A stored (M×K) with row stride lda, or with trans_a Aᵀ for A stored (K×M). B is (K×N) with
// row stride ldb, C has row stride ldc; C must not overlap A or B. Register-blocked micro-kernel
// (4 rows × 64 bytes of columns, the inner loop over contiguous columns of B and C).
template <class T>
void flash_tile_gemm(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                     int64_t ldb, bool accumulate, T* C, int64_t ldc);

// Its plain reference: three loops accumulating in double.
template <class T>
void flash_tile_gemm_ref(bool trans_a, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                         const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc);

// Tiles are copied out of the (B, n, h·d_h) tensors before the tile products: their rows are h·d_h
// apart (2 KiB at d = 512), a power-of-two stride that maps a tile's rows onto a few L1 sets.
// Xp (rows × d_h, contiguous) = rows of X (row stride ldx).
template <class T>
inline void pack_rows(const T* X, int64_t ldx, int64_t rows, int64_t d_h, T* Xp) {
  for (int64_t j = 0; j < rows; ++j) std::copy(X + j * ldx, X + j * ldx + d_h, Xp + j * d_h);
}

// Xt (d_h × ·, row stride ld) = the rows of X (row stride ldx) transposed, so that a score product is
// a plain product with contiguous rows of its right operand.
template <class T>
inline void pack_transposed(const T* X, int64_t ldx, int64_t rows, int64_t d_h, T* Xt, int64_t ld) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t c = 0; c < d_h; ++c) Xt[c * ld + j] = X[j * ldx + c];
}

}  // namespace lf
