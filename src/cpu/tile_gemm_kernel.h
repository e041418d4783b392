// The register-blocked micro-kernel of the tile product, inline so that the kernels calling it in
// their innermost loops (flash) get it compiled into them; everyone else calls flash_tile_gemm()
// (tile_gemm.h). Internal to src/cpu/.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/vec.h"

namespace lf::tile_detail {

// ---- the tile product -------------------------------------------------------------------------

// Register block: kRows rows of C × kVecs vectors of 64 bytes (kCols columns), accumulated in
// registers. With AVX-512 (32 vector registers) 8 × 2 = 16 accumulators: enough independent FMA
// chains for two 512-bit FMA units of latency 4, and 8 broadcasts + 2 loads per 16 FMAs. Otherwise
// 4 × 1 (on AVX2 a 64-byte vector is two ymm: 8 accumulators of the 16 registers).
#if defined(__AVX512F__)
constexpr int kRows = 8, kVecs = 2;
#else
constexpr int kRows = 4, kVecs = 1;
#endif
template <class T>
constexpr int kCols = kVecs * kLanes<T>;

// One full kRows × (NV vectors) block of C, K-long dot products kept in registers. a(r, k) is
// A[r·lda + k] (or A[k·lda + r] transposed): kRows broadcasts and NV loads of one contiguous row of B
// per k.
template <class T, bool TA, int NV = kVecs>
inline void micro_block(int64_t K, T alpha, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                        bool accumulate, T* __restrict C, int64_t ldc) {
  using V = Vec64<T>;
  constexpr int R = kRows, L = kLanes<T>;
  V acc[R][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], B + k * ldb + v * L, sizeof(V));  // unaligned load
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const T a = TA ? A[k * lda + r] : A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      T* c = C + r * ldc + v * L;
      V out = alpha * acc[r][v];
      if (accumulate) {
        V old;
        std::memcpy(&old, c, sizeof(V));
        out += old;
      }
      std::memcpy(c, &out, sizeof(V));
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

// Blocks of C row panel by row panel; B (flash's tiles: 16–32 KiB in float) stays in cache across
// the row panels (column panels outermost measured the same).
template <class T, bool TA>
inline void tile_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
                      bool accumulate, T* C, int64_t ldc) {
  constexpr int R = kRows, JB = kCols<T>, L = kLanes<T>;
  for (int64_t i0 = 0; i0 < M; i0 += R) {
    const int rows = int(std::min<int64_t>(R, M - i0));
    const T* Ai = TA ? A + i0 : A + i0 * lda;
    for (int64_t j0 = 0; j0 < N;) {
      const int64_t left = N - j0;
      T* Cij = C + i0 * ldc + j0;
      if (rows == R && left >= JB) {
        micro_block<T, TA>(K, alpha, Ai, lda, B + j0, ldb, accumulate, Cij, ldc);
        j0 += JB;
      } else if (rows == R && left >= L) {  // one vector wide (e.g. a 16-float head width under AVX-512)
        micro_block<T, TA, 1>(K, alpha, Ai, lda, B + j0, ldb, accumulate, Cij, ldc);
        j0 += L;
      } else {
        const int cols = int(std::min<int64_t>(JB, left));
        micro_edge<T, TA>(rows, cols, K, alpha, Ai, lda, B + j0, ldb, accumulate, Cij, ldc);
        j0 += cols;
      }
    }
  }
}

}  // namespace lf::tile_detail
