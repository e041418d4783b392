#include "cpu/linear_int8.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <memory>

#include "cpu/gemm.h"
#include "cpu/scratch.h"
#include "linformer/error.h"

namespace lf {
namespace {

// Element-wise loops over more than this many elements run on the OpenMP team (never nested).
constexpr int64_t kParallelElements = 65536;

// A scale no smaller than FLT_MIN, so that 1/scale is finite.
float clamp_scale(double scale) { return float(std::max(scale, double(FLT_MIN))); }

// A row's minimum and maximum (with 0: the ranges here include it) and Σ (v − v), which is 0 when
// every value is finite and NaN otherwise.
struct RowStats {
  float lo, hi, probe;
};

// In kLanes independent lanes, each reduced in a fixed order (the lanes' result is exact, as a minimum
// is, and the probe's only question is NaN or 0): the fallback without AVX-512.

RowStats row_stats_scalar(const float* v, int64_t n) {
  constexpr int kLanes = 16;
  float lo[kLanes] = {}, hi[kLanes] = {}, probe[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int i = 0; i < kLanes; ++i) {
      const float a = v[c + i];
      lo[i] = a < lo[i] ? a : lo[i];
      hi[i] = a > hi[i] ? a : hi[i];
      probe[i] += a - a;
    }
  for (int i = 0; c < n; ++c, ++i) {
    const float a = v[c];
    lo[i] = a < lo[i] ? a : lo[i];
    hi[i] = a > hi[i] ? a : hi[i];
    probe[i] += a - a;
  }
  RowStats s{0, 0, 0};
  for (int i = 0; i < kLanes; ++i) {
    s.lo = std::min(s.lo, lo[i]);
    s.hi = std::max(s.hi, hi[i]);
    s.probe += probe[i];
  }
  return s;
}

// GCC 12's _mm512_reduce_min/max_ps trip -Wmaybe-uninitialized once inlined (gemm.cpp says why).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The same with AVX-512 (GCC left the loop above scalar: it was 9 % of an int8 layer's time). The
// minimum and maximum are exact whatever the order; a NaN or inf anywhere makes the probe NaN.
__attribute__((target("avx512f"))) RowStats row_stats_avx512(const float* v, int64_t n) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps(), probe = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m512 a = _mm512_loadu_ps(v + c);
    lo = _mm512_min_ps(lo, a);
    hi = _mm512_max_ps(hi, a);
    probe = _mm512_add_ps(probe, _mm512_sub_ps(a, a));
  }
  if (c < n) {
    const __mmask16 m = __mmask16((1u << (n - c)) - 1);
    const __m512 a = _mm512_maskz_loadu_ps(m, v + c);  // the lanes past n read as 0, inside every range
    lo = _mm512_min_ps(lo, a);
    hi = _mm512_max_ps(hi, a);
    probe = _mm512_add_ps(probe, _mm512_sub_ps(a, a));
  }
  return {_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), _mm512_reduce_add_ps(probe)};
}

RowStats row_stats(const float* v, int64_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 ? row_stats_avx512(v, n) : row_stats_scalar(v, n);
}
#pragma GCC diagnostic pop

}  // namespace

QuantParams choose_u8_params(float lo, float hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi))
    throw Error(str_cat("int8 quantisation: the range [", lo, ", ", hi, "] is not finite; no int8 scale represents it"));
  const double l = std::min(double(lo), 0.0), h = std::max(double(hi), 0.0);  // in double: hi − lo may overflow fp32
  QuantParams p;
  p.scale = clamp_scale((h - l) / 255.0);
  p.zero_point = int32_t(std::clamp(std::nearbyint(-l / double(p.scale)), 0.0, 255.0));
  return p;
}

void quantize_u8(const float* x, int64_t rows, int64_t cols, int64_t ld, QuantParams p, uint8_t* q) {
  const float inv = 1.0f / p.scale, z = float(p.zero_point);
  // rne(x · inv) is an integer-valued float, exact; z is added after rounding (adding it first could
  // round away the fraction that decides a tie).
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    uint8_t* qr = q + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      float v = std::nearbyint(xr[c] * inv) + z;
      v = v > 0.0f ? v : 0.0f;  // written so that a NaN becomes 0, never an undefined conversion
      qr[c] = uint8_t(v < 255.0f ? v : 255.0f);
    }
  }
}

QuantParams quantize_u8_dynamic(const float* x, int64_t rows, int64_t cols, int64_t ld, uint8_t* q) {
  float lo = 0, hi = 0, probe = 0;  // probe: Σ (v − v), 0 for finite values, NaN once any is NaN or ±inf
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) reduction(+ : probe) \
    if (rows * cols > kParallelElements && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) {
    const RowStats st = row_stats(x + r * ld, cols);
    lo = std::min(lo, st.lo);
    hi = std::max(hi, st.hi);
    probe += st.probe;
  }
  if (probe != 0 || std::isnan(probe))
    throw Error("int8 linear layer: its input holds NaN or inf, which no int8 scale represents (run the model "
                "with --precision fp32 to see where they come from)");
  const QuantParams p = choose_u8_params(lo, hi);
  quantize_u8(x, rows, cols, ld, p, q);
  return p;
}

void quantize_s8_rows(const float* W, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite) if (rows * cols > kParallelElements && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = W + r * cols;
    const RowStats st = row_stats(wr, cols);
    const float amax = std::max(-st.lo, st.hi);
    finite = finite && st.probe == 0;
    const float scale = clamp_scale(double(amax) / 127.0), inv = 1.0f / scale;
    scales[r] = scale;
    int8_t* qr = q + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      float v = std::nearbyint(wr[c] * inv);
      v = v > -127.0f ? v : -127.0f;  // a NaN becomes -127 (and is refused below), never an undefined conversion
      qr[c] = int8_t(v < 127.0f ? v : 127.0f);
    }
  }
  if (!finite)
    throw Error("int8 linear layer: its weight holds NaN or inf, which no int8 scale represents (the checkpoint "
                "is damaged, or training diverged)");
}

namespace {

void check_sizes(int64_t N, int64_t in, int64_t out) {
  LF_REQUIRE(N >= 0 && in >= 0 && out >= 0, "int8 linear layer: negative size N=", N, " in=", in, " out=", out);
  LF_REQUIRE(in <= kInt8MaxInner, "int8 linear layer: in = ", in, " exceeds ", kInt8MaxInner,
             ", beyond which its 32-bit integer sums could overflow; run this model with --precision fp32 or bf16");
}

}  // namespace

void linear_int8_forward_ref(const float* x, const float* W, const float* bias, float* y, int64_t N, int64_t in,
                             int64_t out, int64_t ldx, int64_t ldy) {
  check_sizes(N, in, out);
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  if (N == 0 || out == 0) return;
  std::unique_ptr<uint8_t[]> qx(new uint8_t[size_t(N * in)]);
  std::unique_ptr<int8_t[]> qw(new int8_t[size_t(out * in)]);
  std::unique_ptr<float[]> sw(new float[size_t(out)]);
  const QuantParams px = quantize_u8_dynamic(x, N, in, ldx, qx.get());
  quantize_s8_rows(W, out, in, qw.get(), sw.get());
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < out; ++j) {
      int64_t acc = 0;
      for (int64_t k = 0; k < in; ++k) acc += int64_t(int32_t(qx[size_t(r * in + k)]) - px.zero_point) * qw[size_t(j * in + k)];
      const float scale = px.scale * sw[size_t(j)];
      y[r * ldy + j] = float(double(acc) * double(scale) + (bias ? double(bias[j]) : 0.0));
    }
}

void linear_int8_forward(const float* x, const float* W, const float* bias, float* y, int64_t N, int64_t in,
                         int64_t out, int64_t ldx, int64_t ldy) {
  check_sizes(N, in, out);
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  if (N == 0 || out == 0) return;
  if (in == 0)  // y = bias (or 0) on every row: gemm_bias's answer to an empty product
    return gemm_bias<float>(false, true, N, out, 0, x, ldx, W, 1, bias, y, ldy);
  thread_local GrowOnlyBuffer<uint8_t> qx_scratch;
  thread_local GrowOnlyBuffer<int8_t> qw_scratch;
  thread_local GrowOnlyBuffer<float> scale_scratch;
  uint8_t* qx = qx_scratch.get(size_t(N * in));
  int8_t* qw = qw_scratch.get(size_t(out * in));
  float* scales = scale_scratch.get(size_t(out));
  // The weight is quantised on every call: O(out · in) against the product's O(N · out · in). Cached
  // generation (issue 17), one token per call, will want the quantised weights kept per parameter.
  const QuantParams px = quantize_u8_dynamic(x, N, in, ldx, qx);
  quantize_s8_rows(W, out, in, qw, scales);
  for (int64_t j = 0; j < out; ++j) scales[j] *= px.scale;  // dequantisation: s_x · s_w[j]
  gemm_u8s8(N, out, in, qx, px.zero_point, qw, scales, bias, y, ldy);  // the bias added in fp32 after scaling
}

}  // namespace lf
