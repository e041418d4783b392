// The tile product: a small, single-threaded matrix product for kernels that run their own parallel
// loop over tiles (flash attention, the sparse patterns, reformer, sinkhorn, the linear-attention
// core), with the packing helpers those kernels share. Never the threaded gemm() inside a region.
#pragma once
#include <algorithm>
#include <cstdint>

namespace lf {

// The tile product, single-threaded (called inside the parallel regions; never the threaded gemm()):
//   C (M×N) = alpha · op(A) · B, or C += alpha · op(A) · B with accumulate,
// op(A) = A stored (M×K) with row stride lda, or with trans_a Aᵀ for A stored (K×M). B is (K×N) with
// row stride ldb, C has row stride ldc; C must not overlap A or B. Register-blocked micro-kernel
// (8 rows × 128 bytes of columns with AVX-512, else 4 rows × 64 bytes; the inner loop over contiguous
// columns of B and C).
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
