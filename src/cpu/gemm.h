// Matrix products. Row-major throughout, as in PyTorch:
//   C (M×N) = alpha · op(A) · op(B) + beta · C,   op(A) is (M×K), op(B) is (K×N),
// where op(X) = Xᵀ when the trans flag is set; lda/ldb/ldc are row strides of the stored matrices.
// float runs on the backend chosen at build time (LINFORMER_GEMM = dnnl | openblas | mkl), in fp32 or,
// where the calling thread's precision says so, with bf16 operands (dnnl only; at int8 it stays fp32:
// only the linear layers are quantised, through gemm_u8s8); double always runs the reference loops,
// which exist for gradient checks and tests.
// The backend call is threaded: never call gemm() from inside an OpenMP parallel region.
#pragma once
#include <cstdint>
#include <string>

#include "linformer/runtime.h"

namespace lf {

// The plain reference: three loops accumulating in double.
template <class T>
void gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// C (M×N) = op(A)·op(B) + bias, the bias (N, or null) added to every row: a linear layer's forward.
// In bf16 oneDNN adds the bias after the product; otherwise C is filled with it first.
template <class T>
void gemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
               int64_t ldb, const T* bias, T* C, int64_t ldc);

// `batch` independent products with the matrices of item b at A + b·stride_a, B + b·stride_b,
// C + b·stride_c (a stride of 0 reuses one matrix for every item).
template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta, T* C,
                  int64_t ldc, int64_t stride_c, int64_t batch);

// The calling thread's precision of float products (set by RuntimeScope): with bf16, gemm<float>
// rounds A and B to bfloat16 (to nearest, ties to even) and accumulates in fp32, for the products
// large enough to pay for the conversion (K ≥ 32 and M·N ≥ 2¹⁵: gemm.cpp says why); the
// others stay fp32. Tests set every_shape to run bf16 at any size.
void set_gemm_precision(Precision p);
Precision gemm_precision();
void set_gemm_bf16_every_shape(bool on);
// Whether gemm<float> of this shape runs in bf16 on the calling thread now (its precision and the bound).
bool gemm_runs_bf16(int64_t M, int64_t N, int64_t K);
// Empty when bf16 products can run here, else why not.
std::string gemm_bf16_unsupported_reason();

// The int8 product of --precision int8's linear layers (cpu/linear_int8.h quantises the operands):
//   C[i,j] = scales[j] · Σ_k (A[i,k] − a_zero_point) · B[j,k]  (+ bias[j], bias may be null),
// A u8 (M × K, dense), B s8 (N × K, dense: a linear weight's layout), the sum exact in s32, scaled and
// added in fp32; C (M × N) with row stride ldc. dnnl only, on AVX512-VNNI; the same bits for any thread
// count. Threaded: never call it from inside an OpenMP parallel region.
void gemm_u8s8(int64_t M, int64_t N, int64_t K, const uint8_t* A, int32_t a_zero_point, const int8_t* B,
               const float* scales, const float* bias, float* C, int64_t ldc);
// Empty when gemm_u8s8 can run here, else why not.
std::string gemm_int8_unsupported_reason();

// float → bfloat16 bits, rounded to nearest even (NaN stays NaN); and back (exact).
uint16_t to_bf16(float x);
float from_bf16(uint16_t x);
// dst[i] = to_bf16(src[i]) for i < n, vectorised where the CPU allows.
void to_bf16_n(const float* src, uint16_t* dst, int64_t n);

// Name of the float backend compiled in ("dnnl", "openblas" or "mkl").
const char* gemm_backend();
// The backend's own thread count: set and restored by RuntimeScope.
void set_gemm_threads(int n);
int gemm_threads();

}  // namespace lf
