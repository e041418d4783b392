#include "cpu/layernorm.h"

#include <algorithm>
#include <cmath>

#include "linformer/error.h"

namespace lf {
namespace {

void check_sizes(int64_t rows, int64_t C) {
  LF_REQUIRE(rows >= 0 && C > 0, "layernorm: need rows >= 0 and C > 0, got rows=", rows, " C=", C);
}

// Columns per task in the parameter-gradient pass: each task owns its columns and walks the rows in
// order, so dweight/dbias do not depend on the thread count.
constexpr int64_t kColBlock = 64;

}  // namespace

template <class T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows, int64_t C,
                       double eps) {
  check_sizes(rows, C);
  LF_REQUIRE(eps >= 0, "layernorm: eps must be >= 0, got ", eps);
#pragma omp parallel for schedule(static) if (rows * C > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    // Two passes (mean, then centred squares): no cancellation when |mean| >> std.
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < C; ++j) s += xr[j];
    const T mu = s / T(C);
    T q = 0;
#pragma omp simd reduction(+ : q)
    for (int64_t j = 0; j < C; ++j) q += (xr[j] - mu) * (xr[j] - mu);
    const T rs = T(1.0 / std::sqrt(double(q) / double(C) + eps));
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * weight[j] + bias[j];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

template <class T>
void layernorm_apply(const T* x, const T* weight, const T* bias, const T* mean, const T* rstd, T* y, int64_t rows,
                     int64_t C) {
  check_sizes(rows, C);
#pragma omp parallel for schedule(static) if (rows * C > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const T mu = mean[r], rs = rstd[r];
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * weight[j] + bias[j];  // as in the forward
  }
}

template <class T>
void layernorm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx, T* dweight,
                        T* dbias, int64_t rows, int64_t C) {
  check_sizes(rows, C);
  // Parameter gradients first: dx may alias dy.
  if (dweight || dbias) {
    const int64_t blocks = (C + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (rows * C > 65536)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kColBlock, n = std::min(kColBlock, C - c0);
      double gw[kColBlock] = {}, gb[kColBlock] = {};  // double: sums run over all rows
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * C + c0;
        const T* dyr = dy + r * C + c0;
        const T mu = mean[r], rs = rstd[r];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          gw[j] += double(dyr[j]) * double((xr[j] - mu) * rs);
          gb[j] += double(dyr[j]);
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        if (dweight) dweight[c0 + j] += T(gw[j]);
        if (dbias) dbias[c0 + j] += T(gb[j]);
      }
    }
  }
  if (!dx) return;
#pragma omp parallel for schedule(static) if (rows * C > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    T* dxr = dx + r * C;
    const T mu = mean[r], rs = rstd[r];
    // dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ weight.
    T sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t j = 0; j < C; ++j) {
      const T g = dyr[j] * weight[j];
      sg += g;
      sgx += g * (xr[j] - mu) * rs;
    }
    const T mg = sg / T(C), mgx = sgx / T(C);
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) dxr[j] = rs * (dyr[j] * weight[j] - mg - (xr[j] - mu) * rs * mgx);
  }
}

template <class T>
void layernorm_forward_ref(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows, int64_t C,
                           double eps) {
  check_sizes(rows, C);
  LF_REQUIRE(eps >= 0, "layernorm: eps must be >= 0, got ", eps);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    double mu = 0, var = 0;
    for (int64_t j = 0; j < C; ++j) mu += double(xr[j]);
    mu /= double(C);
    for (int64_t j = 0; j < C; ++j) var += (double(xr[j]) - mu) * (double(xr[j]) - mu);
    var /= double(C);
    const double rs = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < C; ++j) y[r * C + j] = T((double(xr[j]) - mu) * rs * double(weight[j]) + double(bias[j]));
    mean[r] = T(mu);
    rstd[r] = T(rs);
  }
}

template <class T>
void layernorm_backward_ref(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx, T* dweight,
                            T* dbias, int64_t rows, int64_t C) {
  check_sizes(rows, C);
  for (int64_t j = 0; j < C && (dweight || dbias); ++j) {
    double gw = 0, gb = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double xhat = (double(x[r * C + j]) - double(mean[r])) * double(rstd[r]);
      gw += double(dy[r * C + j]) * xhat;
      gb += double(dy[r * C + j]);
    }
    if (dweight) dweight[j] += T(gw);
    if (dbias) dbias[j] += T(gb);
  }
  if (!dx) return;
  for (int64_t r = 0; r < rows; ++r) {
    const double mu = double(mean[r]), rs = double(rstd[r]);
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < C; ++j) {
      const double g = double(dy[r * C + j]) * double(weight[j]);
      sg += g;
      sgx += g * (double(x[r * C + j]) - mu) * rs;
    }
    for (int64_t j = 0; j < C; ++j) {
      const double g = double(dy[r * C + j]) * double(weight[j]);
      const double xhat = (double(x[r * C + j]) - mu) * rs;
      dx[r * C + j] = T(rs * (g - sg / double(C) - xhat * sgx / double(C)));
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                              \
  template void layernorm_forward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, double);              \
  template void layernorm_apply<T>(const T*, const T*, const T*, const T*, const T*, T*, int64_t, int64_t);            \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t); \
  template void layernorm_forward_ref<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, double);          \
  template void layernorm_backward_ref<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,       \
                                          int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
