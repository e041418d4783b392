// The linear layer under --precision int8: dynamic quantisation as PyTorch's
// torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8) does it, but with the
// weight scaled per output channel (PyTorch's default scales the whole tensor):
//   W (out, in) → s8, symmetric, per row:   s_w[j] = max_k |W[j,k]| / 127,  q = clamp(rne(W · (1/s_w)), -127, 127)
//   x (N, in)   → u8, asymmetric, per call: range [min(0, min x), max(0, max x)], s_x = range / 255,
//                                           z = clamp(rne(-lo / s_x), 0, 255),  q = clamp(z + rne(x · (1/s_x)), 0, 255)
//   y[r,j] = (s_x · s_w[j]) · Σ_k (qx[r,k] − z) · qw[j,k] + bias[j]     (exact s32 sum, fp32 scale and bias)
// rne: round to nearest, ties to even. The range includes 0 so that 0 (padding, ReLU's zeros) is exact.
// A scale below FLT_MIN (an all-zero or nearly all-zero tensor) is FLT_MIN, so 1/scale stays finite.
// linear_int8_forward runs the product through gemm_u8s8 (cpu/gemm.h: oneDNN's int8 matmul, VNNI's dot
// products); linear_int8_forward_ref is the plain reference the tests compare it with. Both quantise
// through the functions below. Inference only: there is no backward.
#pragma once
#include <cstdint>

namespace lf {

// A tensor's quantisation: real value = scale · (q − zero_point).
struct QuantParams {
  float scale = 1;
  int32_t zero_point = 0;
};

// s_x and z for the range [lo, hi] (widened to include 0), as defined above; lf::Error when lo or hi
// is not finite.
QuantParams choose_u8_params(float lo, float hi);
// q (rows × cols, dense) = clamp(z + rne(x · (1/scale)), 0, 255) for x (rows × cols, row stride ld);
// a NaN gives 0 (quantize_u8_dynamic refuses them first).
void quantize_u8(const float* x, int64_t rows, int64_t cols, int64_t ld, QuantParams p, uint8_t* q);
// Chooses x's parameters from its minimum and maximum and quantises it. Throws lf::Error when x holds
// NaN or ±inf (no scale represents them).
QuantParams quantize_u8_dynamic(const float* x, int64_t rows, int64_t cols, int64_t ld, uint8_t* q);
// q (rows × cols, dense) and scales (rows): each row of W (rows × cols, dense) quantised symmetrically
// as defined above. Throws lf::Error when W holds NaN or ±inf.
void quantize_s8_rows(const float* W, int64_t rows, int64_t cols, int8_t* q, float* scales);

// The largest `in` the s32 accumulation holds without overflow: 255 · 127 · in < 2³¹.
inline constexpr int64_t kInt8MaxInner = 66000;

// y (N, out) = the int8 product above of x (N, in) and W (out, in), plus bias (out, or null).
// ldx / ldy: row strides (0 = dense). Runs on gemm_u8s8, which throws lf::Error where it cannot run
// (gemm_int8_unsupported_reason says why).
void linear_int8_forward(const float* x, const float* W, const float* bias, float* y, int64_t N, int64_t in,
                         int64_t out, int64_t ldx = 0, int64_t ldy = 0);
// The same in plain loops: the s32 sum in int64, then y = float(double(acc) · double(s_x · s_w[j]) + bias[j]).
void linear_int8_forward_ref(const float* x, const float* W, const float* bias, float* y, int64_t N, int64_t in,
                             int64_t out, int64_t ldx = 0, int64_t ldy = 0);

}  // namespace lf
