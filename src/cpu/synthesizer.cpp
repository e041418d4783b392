#include "cpu/synthesizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/vmath.h"

namespace lf {
namespace {

// Rows in parallel above this many entries of the n × n scores.
constexpr int64_t kParallelEntries = 16384;

// Row t sees keys 0..end: end = t + 1 when causal, else n.
inline int64_t row_end(int64_t t, int64_t n, bool causal) { return causal ? t + 1 : n; }

// Σ_{j<end} f(j) in 16 interleaved partial sums added in a fixed order: vectorised, and the same bits
// wherever the row starts in memory (a `simd reduction` may peel a different head for each alignment,
// so a causal row's sum would depend on n).
template <class T, class F>
inline T lane_sum(int64_t end, F f) {
  constexpr int64_t kLanes = 16;
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= end; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += f(j + l);
  for (int64_t l = 0; j + l < end; ++l) acc[l] += f(j + l);
  T sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

// Row softmax over the first `end` entries in place (−inf entries get 0, an all −inf row gives 0);
// entries end..n are set to 0. Every value depends only on the first `end` entries, bit for bit.
template <class T>
inline void softmax_prefix(T* row, int64_t end, int64_t n) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T mx = neg_inf;  // a maximum is exact in any order
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < end; ++j) mx = mx > row[j] ? mx : row[j];
  if (mx == neg_inf) {
    std::fill(row, row + n, T(0));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t j = 0; j < end; ++j) row[j] = exp_f32(row[j] - mx);
  } else {
    for (int64_t j = 0; j < end; ++j) row[j] = std::exp(row[j] - mx);
  }
  const T inv = T(1) / lane_sum<T>(end, [row](int64_t j) { return row[j]; });
  for (int64_t j = 0; j < end; ++j) row[j] *= inv;
  std::fill(row + end, row + n, T(0));
}

// P (n × n): write_scores(t, row, end) fills the first `end` scores of row t, then the masked keys
// become −inf and the row its softmax.
template <class T, class WriteScores>
void masked_softmax_rows(const uint8_t* key_mask, bool causal, int64_t n, T* P, WriteScores write_scores) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (n * n > kParallelEntries)
  for (int64_t t = 0; t < n; ++t) {
    T* row = P + t * n;
    const int64_t end = row_end(t, n, causal);
    write_scores(t, row, end);
    if (key_mask)
      for (int64_t j = 0; j < end; ++j)
        if (key_mask[j]) row[j] = neg_inf;
    softmax_prefix(row, end, n);
  }
}

}  // namespace

template <class T>
void synthesizer_softmax(const T* S, int64_t ld_s, const T* bias, const uint8_t* key_mask, bool causal, int64_t n,
                         T* P) {
  masked_softmax_rows<T>(key_mask, causal, n, P, [=](int64_t t, T* row, int64_t end) {
    const T* src = S + t * ld_s;
    if (bias) {
      for (int64_t j = 0; j < end; ++j) row[j] = src[j] + bias[j];
    } else if (src != row) {
      std::copy(src, src + end, row);
    }
  });
}

template <class T>
void synthesizer_factorized_softmax(const T* a, int64_t ld_a, const T* b, int64_t ld_b, int64_t fb,
                                    const uint8_t* key_mask, bool causal, int64_t n, T* P) {
  masked_softmax_rows<T>(key_mask, causal, n, P, [=](int64_t t, T* row, int64_t end) {
    const T* at = a + t * ld_a;
    const T* bt = b + t * ld_b;
    for (int64_t q = 0, j0 = 0; j0 < end; ++q, j0 += fb) {
      const int64_t w = std::min(fb, end - j0);
      for (int64_t r = 0; r < w; ++r) row[j0 + r] = at[q] * bt[r];
    }
  });
}

template <class T>
void synthesizer_softmax_backward(const T* P, bool causal, int64_t n, T* G) {
#pragma omp parallel for schedule(static) if (n * n > kParallelEntries)
  for (int64_t t = 0; t < n; ++t) {
    const T* p = P + t * n;
    T* g = G + t * n;
    const int64_t end = row_end(t, n, causal);
    const T dot = lane_sum<T>(end, [p, g](int64_t j) { return p[j] * g[j]; });
    for (int64_t j = 0; j < end; ++j) g[j] = p[j] * (g[j] - dot);
    std::fill(g + end, g + n, T(0));
  }
}

template <class T>
void synthesizer_factors_backward(const T* G, const T* a, int64_t ld_a, int64_t fa, const T* b, int64_t ld_b,
                                  int64_t fb, bool causal, int64_t n, T* da, T* db) {
#pragma omp parallel for schedule(static) if (n * n > kParallelEntries)
  for (int64_t t = 0; t < n; ++t) {
    const int64_t end = row_end(t, n, causal);
    const T* at = a + t * ld_a;
    const T* bt = b + t * ld_b;
    T* dat = da + t * ld_a;
    T* dbt = db + t * ld_b;
    std::fill(dat, dat + fa, T(0));
    std::fill(dbt, dbt + fb, T(0));
    const T* g = G + t * n;
    for (int64_t q = 0, j0 = 0; j0 < end; ++q, j0 += fb) {
      const int64_t w = std::min(fb, end - j0);
      T acc = 0;
      for (int64_t r = 0; r < w; ++r) {
        acc += g[j0 + r] * bt[r];
        dbt[r] += g[j0 + r] * at[q];
      }
      dat[q] = acc;
    }
  }
}

template <class T>
void synthesizer_softmax_ref(const T* S, int64_t ld_s, const T* bias, const uint8_t* key_mask, bool causal, int64_t n,
                             T* P) {
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t end = row_end(t, n, causal);
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < end; ++j) {
      x[size_t(j)] = key_mask && key_mask[j] ? -std::numeric_limits<double>::infinity()
                                             : double(S[t * ld_s + j]) + (bias ? double(bias[j]) : 0.0);
      mx = std::max(mx, x[size_t(j)]);
    }
    double sum = 0;
    for (int64_t j = 0; j < end; ++j) sum += std::isinf(mx) ? 0.0 : std::exp(x[size_t(j)] - mx);
    for (int64_t j = 0; j < n; ++j)
      P[t * n + j] = j < end && sum > 0 ? T(std::exp(x[size_t(j)] - mx) / sum) : T(0);
  }
}

template <class T>
void synthesizer_softmax_backward_ref(const T* P, bool causal, int64_t n, T* G) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t end = row_end(t, n, causal);
    double dot = 0;
    for (int64_t j = 0; j < end; ++j) dot += double(P[t * n + j]) * double(G[t * n + j]);
    for (int64_t j = 0; j < n; ++j)
      G[t * n + j] = j < end ? T(double(P[t * n + j]) * (double(G[t * n + j]) - dot)) : T(0);
  }
}

template <class T>
void synthesizer_factors_backward_ref(const T* G, const T* a, int64_t ld_a, int64_t fa, const T* b, int64_t ld_b,
                                      int64_t fb, bool causal, int64_t n, T* da, T* db) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t end = row_end(t, n, causal);
    // ∂S[t, j]/∂a[t, j / fb] = b[t, j mod fb] and ∂S[t, j]/∂b[t, j mod fb] = a[t, j / fb].
    std::vector<double> dat(size_t(fa), 0.0), dbt(size_t(fb), 0.0);
    for (int64_t j = 0; j < end; ++j) {
      const double g = G[t * n + j];
      dat[size_t(j / fb)] += g * double(b[t * ld_b + j % fb]);
      dbt[size_t(j % fb)] += g * double(a[t * ld_a + j / fb]);
    }
    for (int64_t q = 0; q < fa; ++q) da[t * ld_a + q] = T(dat[size_t(q)]);
    for (int64_t r = 0; r < fb; ++r) db[t * ld_b + r] = T(dbt[size_t(r)]);
  }
}

#define LF_INSTANTIATE(T)                                                                                           \
  template void synthesizer_softmax<T>(const T*, int64_t, const T*, const uint8_t*, bool, int64_t, T*);            \
  template void synthesizer_factorized_softmax<T>(const T*, int64_t, const T*, int64_t, int64_t, const uint8_t*,   \
                                                  bool, int64_t, T*);                                               \
  template void synthesizer_softmax_backward<T>(const T*, bool, int64_t, T*);                                      \
  template void synthesizer_factors_backward<T>(const T*, const T*, int64_t, int64_t, const T*, int64_t, int64_t,  \
                                                bool, int64_t, T*, T*);                                             \
  template void synthesizer_softmax_ref<T>(const T*, int64_t, const T*, const uint8_t*, bool, int64_t, T*);        \
  template void synthesizer_softmax_backward_ref<T>(const T*, bool, int64_t, T*);                                  \
  template void synthesizer_factors_backward_ref<T>(const T*, const T*, int64_t, int64_t, const T*, int64_t,       \
                                                    int64_t, bool, int64_t, T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
