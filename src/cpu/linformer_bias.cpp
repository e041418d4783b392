#include "cpu/linformer_bias.h"

#include <omp.h>

#include <algorithm>

namespace lf {
namespace {

// Below this many elements (about 50 µs of vectorised work on one core) a parallel region saves less
// than it risks: its fork and join cost a few µs on idle cores, and up to a scheduler slice on busy
// ones. E's row sums at k = 256, n = 4096 (1 M) thread; the bias terms on (k, d) (131 k) do not.
constexpr int64_t kParallelElements = 1 << 18;
bool go_parallel(int64_t elements) { return elements > kParallelElements && !omp_in_parallel(); }

// Partial sums in kLanes interleaved lanes (four 512-bit registers: independent add chains, so the loop
// runs at load speed rather than at the add's latency), then folded in a fixed tree. Without
// -ffast-math GCC keeps a scalar reduction in order; an array of lanes it vectorises.
template <class T>
constexpr int kLanes = 256 / int(sizeof(T));

template <class T>
T fold_lanes(T* acc) {
  for (int w = kLanes<T> / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// Σ_t x[t] over the t < m with padded[t] == 0 (padded null: all), in lanes.
template <class T>
T masked_sum(const T* x, const uint8_t* padded, int64_t m) {
  constexpr int L = kLanes<T>;
  T acc[L] = {};
  int64_t t = 0;
  if (padded) {
    for (; t + L <= m; t += L)
      for (int l = 0; l < L; ++l) acc[l] += padded[t + l] ? T(0) : x[t + l];  // a select: NaN at padding stays out
    for (int l = 0; t + l < m; ++l) acc[l] += padded[t + l] ? T(0) : x[t + l];
  } else {
    for (; t + L <= m; t += L)
      for (int l = 0; l < L; ++l) acc[l] += x[t + l];
    for (int l = 0; t + l < m; ++l) acc[l] += x[t + l];
  }
  return fold_lanes<T>(acc);
}

// Σ_c x[c]·y[c] in lanes.
template <class T>
T dot(const T* x, const T* y, int64_t n) {
  constexpr int L = kLanes<T>;
  T acc[L] = {};
  int64_t c = 0;
  for (; c + L <= n; c += L)
    for (int l = 0; l < L; ++l) acc[l] += x[c + l] * y[c + l];
  for (int l = 0; c + l < n; ++l) acc[l] += x[c + l] * y[c + l];
  return fold_lanes<T>(acc);
}

}  // namespace

template <class T>
void masked_row_sums(const T* E, int64_t lde, int64_t k, int64_t m, const uint8_t* padded, T* sums) {
#pragma omp parallel for schedule(static) if (go_parallel(k * m))
  for (int64_t j = 0; j < k; ++j) sums[j] = masked_sum(E + j * lde, padded, m);
}

template <class T>
void masked_row_sums_ref(const T* E, int64_t lde, int64_t k, int64_t m, const uint8_t* padded, T* sums) {
  for (int64_t j = 0; j < k; ++j) {
    const T* row = E + j * lde;
    T s = 0;
    for (int64_t t = 0; t < m; ++t)
      if (!(padded && padded[t])) s += row[t];
    sums[j] = s;
  }
}

template <class T>
void masked_row_sums_backward(const T* dsums, int64_t k, int64_t m, const uint8_t* padded, T* dE, int64_t lde) {
#pragma omp parallel for schedule(static) if (go_parallel(k * m))
  for (int64_t j = 0; j < k; ++j) {
    T* row = dE + j * lde;
    const T d = dsums[j];
    if (padded)
      for (int64_t t = 0; t < m; ++t) row[t] = padded[t] ? row[t] : row[t] + d;  // a blend: padded entries untouched
    else
      for (int64_t t = 0; t < m; ++t) row[t] += d;
  }
}

template <class T>
void masked_row_sums_backward_ref(const T* dsums, int64_t k, int64_t m, const uint8_t* padded, T* dE, int64_t lde) {
  for (int64_t j = 0; j < k; ++j) {
    T* row = dE + j * lde;
    for (int64_t t = 0; t < m; ++t)
      if (!(padded && padded[t])) row[t] += dsums[j];
  }
}

template <class T>
void add_row_weighted_bias(const T* r, const T* b, int64_t k, int64_t width, T* C, int64_t ldc) {
#pragma omp parallel for schedule(static) if (go_parallel(k * width))
  for (int64_t j = 0; j < k; ++j) {
    T* __restrict row = C + j * ldc;
    const T rj = r[j];
    for (int64_t c = 0; c < width; ++c) row[c] += rj * b[c];
  }
}

template <class T>
void add_row_weighted_bias_ref(const T* r, const T* b, int64_t k, int64_t width, T* C, int64_t ldc) {
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < width; ++c) C[j * ldc + c] += r[j] * b[c];
}

template <class T>
void add_row_weighted_bias_backward(const T* dC, int64_t ldc, const T* r, const T* b, int64_t k, int64_t width, T* db,
                                    T* dr) {
  // db: threads own blocks of columns, each column adds its rows in order of j (as the reference).
  // dr: threads own rows. One region for both.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (width + kBlock - 1) / kBlock;
#pragma omp parallel if (go_parallel(k * width))
  {
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kBlock, c1 = std::min(width, c0 + kBlock);
      T* __restrict out = db + c0;
      for (int64_t j = 0; j < k; ++j) {
        const T* row = dC + j * ldc + c0;
        const T rj = r[j];
        for (int64_t c = 0; c < c1 - c0; ++c) out[c] += row[c] * rj;
      }
    }
    if (dr) {
#pragma omp for schedule(static)
      for (int64_t j = 0; j < k; ++j) dr[j] = dot(dC + j * ldc, b, width);
    }
  }
}

template <class T>
void add_row_weighted_bias_backward_ref(const T* dC, int64_t ldc, const T* r, const T* b, int64_t k, int64_t width,
                                        T* db, T* dr) {
  for (int64_t j = 0; j < k; ++j) {
    T s = 0;
    for (int64_t c = 0; c < width; ++c) {
      db[c] += dC[j * ldc + c] * r[j];
      s += dC[j * ldc + c] * b[c];
    }
    if (dr) dr[j] = s;
  }
}

template <class T>
void slot_bias(const T* bias, const uint8_t* empty, int64_t k, int64_t width, T* dst, int64_t ldd) {
  for (int64_t j = 0; j < k; ++j) {
    if (empty[j])
      std::fill_n(dst + j * ldd, width, T(0));
    else
      std::copy(bias, bias + width, dst + j * ldd);
  }
}

template <class T>
void slot_bias_backward(const T* ddst, int64_t ldd, const uint8_t* empty, int64_t k, int64_t width, T* dbias) {
  for (int64_t j = 0; j < k; ++j)
    if (!empty[j])
      for (int64_t c = 0; c < width; ++c) dbias[c] += ddst[j * ldd + c];
}

#define LF_INSTANTIATE(T)                                                                                          \
  template void masked_row_sums<T>(const T*, int64_t, int64_t, int64_t, const uint8_t*, T*);                       \
  template void masked_row_sums_ref<T>(const T*, int64_t, int64_t, int64_t, const uint8_t*, T*);                   \
  template void masked_row_sums_backward<T>(const T*, int64_t, int64_t, const uint8_t*, T*, int64_t);              \
  template void masked_row_sums_backward_ref<T>(const T*, int64_t, int64_t, const uint8_t*, T*, int64_t);          \
  template void add_row_weighted_bias<T>(const T*, const T*, int64_t, int64_t, T*, int64_t);                       \
  template void add_row_weighted_bias_ref<T>(const T*, const T*, int64_t, int64_t, T*, int64_t);                   \
  template void add_row_weighted_bias_backward<T>(const T*, int64_t, const T*, const T*, int64_t, int64_t, T*, T*); \
  template void add_row_weighted_bias_backward_ref<T>(const T*, int64_t, const T*, const T*, int64_t, int64_t, T*,  \
                                                      T*);                                                         \
  template void slot_bias<T>(const T*, const uint8_t*, int64_t, int64_t, T*, int64_t);                             \
  template void slot_bias_backward<T>(const T*, int64_t, const uint8_t*, int64_t, int64_t, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
