#include "cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/error.h"

namespace lf {
namespace {

// Validates sizes and targets and returns the number of counted rows.
int64_t count_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index) {
  LF_REQUIRE(N >= 0 && V > 0, "cross_entropy: need N >= 0 and V > 0, got N=", N, " V=", V);
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] == ignore_index) continue;
    LF_REQUIRE(targets[r] >= 0 && targets[r] < V, "cross_entropy: target ", targets[r], " at row ", r,
               " is outside [0, ", V, ") and is not ignore_index (", ignore_index, ")");
    ++count;
  }
  return count;
}

template <class T>
inline T row_max(const T* x, int64_t V) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < V; ++j) mx = std::max(mx, x[j]);
  return mx;
}

}  // namespace

template <class T>
CrossEntropyResult cross_entropy_forward(const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                         int32_t ignore_index) {
  const int64_t count = count_targets(targets, N, V, ignore_index);
  if (count == 0) return {0.0, 0};
  // Per-row losses summed serially afterwards: the result does not depend on the thread count.
  std::vector<double> row_loss(size_t(N), 0.0);
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] == ignore_index) continue;
    const T* x = logits + r * V;
    const T mx = row_max(x, V);
    double s = 0;  // exp in T, the sum in double: the sum is cheap next to the exps
    for (int64_t j = 0; j < V; ++j) s += double(std::exp(x[j] - mx));
    row_loss[size_t(r)] = double(mx) + std::log(s) - double(x[targets[r]]);
  }
  double sum = 0;
  for (double l : row_loss) sum += l;
  return {sum / double(count), count};
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, T* dlogits, int64_t N, int64_t V, double grad,
                            int32_t ignore_index) {
  const int64_t count = count_targets(targets, N, V, ignore_index);
  const T scale = count ? T(grad / double(count)) : T(0);
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * V;
    T* d = dlogits + r * V;
    if (count == 0 || targets[r] == ignore_index) {
      std::fill(d, d + V, T(0));
      continue;
    }
    const T mx = row_max(x, V);
    T s = 0;
    for (int64_t j = 0; j < V; ++j) {  // reads x[j] before writing d[j]: safe when they alias
      d[j] = std::exp(x[j] - mx);
      s += d[j];
    }
    const T k = scale / s;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) d[j] *= k;
    d[targets[r]] -= scale;
  }
}

template <class T>
CrossEntropyResult cross_entropy_forward_ref(const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                             int32_t ignore_index) {
  const int64_t count = count_targets(targets, N, V, ignore_index);
  if (count == 0) return {0.0, 0};
  double sum = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] == ignore_index) continue;
    const T* x = logits + r * V;
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(x[j]));
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(x[j]) - mx);
    sum += mx + std::log(s) - double(x[targets[r]]);
  }
  return {sum / double(count), count};
}

template <class T>
void cross_entropy_backward_ref(const T* logits, const int32_t* targets, T* dlogits, int64_t N, int64_t V, double grad,
                                int32_t ignore_index) {
  const int64_t count = count_targets(targets, N, V, ignore_index);
  for (int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * V;
    T* d = dlogits + r * V;
    if (count == 0 || targets[r] == ignore_index) {
      for (int64_t j = 0; j < V; ++j) d[j] = T(0);
      continue;
    }
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(x[j]));
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(x[j]) - mx);
    const double scale = grad / double(count);
    std::vector<double> g(size_t(V), 0.0);
    for (int64_t j = 0; j < V; ++j) g[size_t(j)] = scale * (std::exp(double(x[j]) - mx) / s - (j == targets[r]));
    for (int64_t j = 0; j < V; ++j) d[j] = T(g[size_t(j)]);  // after all reads of x: aliasing is safe
  }
}

#define LF_INSTANTIATE(T)                                                                                        \
  template CrossEntropyResult cross_entropy_forward<T>(const T*, const int32_t*, int64_t, int64_t, int32_t);     \
  template void cross_entropy_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t, double, int32_t);      \
  template CrossEntropyResult cross_entropy_forward_ref<T>(const T*, const int32_t*, int64_t, int64_t, int32_t); \
  template void cross_entropy_backward_ref<T>(const T*, const int32_t*, T*, int64_t, int64_t, double, int32_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
