#include "cpu/embedding.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "linformer/error.h"

namespace lf {
namespace {

// Validates everything before any write, so a bad id leaves out/dtable untouched.
void check_ids(const int32_t* ids, int64_t N, int64_t V, int64_t d) {
  LF_REQUIRE(N >= 0 && V > 0 && d > 0, "embedding: need N >= 0, V > 0, d > 0, got N=", N, " V=", V, " d=", d);
  for (int64_t i = 0; i < N; ++i)
    LF_REQUIRE(ids[i] >= 0 && ids[i] < V, "embedding: token id ", ids[i], " at position ", i,
               " is outside the vocabulary [0, ", V, ")");
}

// Columns per task in the scatter: tasks own disjoint columns of dtable, so no two threads touch the
// same element and each element sums its rows in token order.
constexpr int64_t kColBlock = 64;

}  // namespace

template <class T>
void embedding_forward(const int32_t* ids, const T* table, T* out, int64_t N, int64_t V, int64_t d, bool accumulate) {
  check_ids(ids, N, V, d);
#pragma omp parallel for schedule(static) if (N * d > 65536)
  for (int64_t i = 0; i < N; ++i) {
    const T* src = table + int64_t(ids[i]) * d;
    T* dst = out + i * d;
    if (accumulate) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
    } else {
      std::copy(src, src + d, dst);
    }
  }
}

template <class T>
void embedding_backward(const int32_t* ids, const T* dout, T* dtable, int64_t N, int64_t V, int64_t d) {
  check_ids(ids, N, V, d);
  const int64_t blocks = (d + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (N * d > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColBlock, n = std::min(kColBlock, d - c0);
    for (int64_t i = 0; i < N; ++i) {
      const T* src = dout + i * d + c0;
      T* dst = dtable + int64_t(ids[i]) * d + c0;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
    }
  }
}

template <class T>
void embedding_forward_ref(const int32_t* ids, const T* table, T* out, int64_t N, int64_t V, int64_t d,
                           bool accumulate) {
  check_ids(ids, N, V, d);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const double v = double(table[int64_t(ids[i]) * d + j]);
      out[i * d + j] = T(accumulate ? double(out[i * d + j]) + v : v);
    }
}

template <class T>
void embedding_backward_ref(const int32_t* ids, const T* dout, T* dtable, int64_t N, int64_t V, int64_t d) {
  check_ids(ids, N, V, d);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < d; ++j) {
      T& g = dtable[int64_t(ids[i]) * d + j];
      g = T(double(g) + double(dout[i * d + j]));
    }
}

template <class T>
void sinusoidal_positions_add(T* out, int64_t B, int64_t n, int64_t d, int64_t offset) {
  LF_REQUIRE(B >= 0 && n >= 0 && d >= 0, "sinusoidal_positions_add: negative size B=", B, " n=", n, " d=", d);
  LF_REQUIRE(offset >= 0, "sinusoidal_positions_add: negative offset ", offset);
  std::vector<T> table(size_t(n * d));
  for (int64_t i = 0; 2 * i < d; ++i) {
    const double omega = std::pow(10000.0, -double(2 * i) / double(d));
    for (int64_t t = 0; t < n; ++t) {
      const double pos = double(offset + t);
      table[size_t(t * d + 2 * i)] = T(std::sin(pos * omega));
      if (2 * i + 1 < d) table[size_t(t * d + 2 * i + 1)] = T(std::cos(pos * omega));
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < n * d; ++e) out[b * n * d + e] += table[size_t(e)];
}

#define LF_INSTANTIATE(T)                                                                                \
  template void sinusoidal_positions_add<T>(T*, int64_t, int64_t, int64_t, int64_t);                            \
  template void embedding_forward<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t, bool);     \
  template void embedding_backward<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t);          \
  template void embedding_forward_ref<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t, bool); \
  template void embedding_backward_ref<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
