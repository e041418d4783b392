// Linear layer y = x Wᵀ + b with PyTorch's (out, in) weight layout, on top of gemm(). With the calling
// thread's precision at int8, the float forward is the quantised product of cpu/linear_int8.h and the
// float backward throws lf::Error (int8 is for inference).
#pragma once
#include <cstdint>

namespace lf {

// y (N, out) = x (N, in) · Wᵀ (W: (out, in)) + bias (out, or null). ldx/ldy: row strides (0 = dense).
template <class T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, int64_t N, int64_t in, int64_t out,
                    int64_t ldx = 0, int64_t ldy = 0);

// Given dy (N, out): dx (N, in) = dy · W, overwritten (accumulated when accumulate_dx); dW (out, in) += dyᵀ x;
// dbias (out) += Σ_rows dy. Any of dx, dW, dbias may be null to skip it.
template <class T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* dbias, int64_t N, int64_t in,
                     int64_t out, bool accumulate_dx = false, int64_t ldx = 0, int64_t ldy = 0);

// dbias (out) += Σ_rows dy (N, out): column sums, deterministic.
template <class T>
void add_column_sums(const T* dy, T* dbias, int64_t N, int64_t out, int64_t ldy = 0);

}  // namespace lf
