#include "cpu/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "linformer/error.h"

namespace lf {
namespace {

void check_options(int64_t n, int64_t t, const AdamWOptions& o) {
  LF_REQUIRE(n >= 0, "adamw: negative size ", n);
  LF_REQUIRE(t >= 1, "adamw: step number t is 1-based, got ", t);
  LF_REQUIRE(o.lr >= 0, "adamw: lr must be >= 0, got ", o.lr);
  LF_REQUIRE(o.beta1 >= 0 && o.beta1 < 1, "adamw: beta1 must be in [0, 1), got ", o.beta1);
  LF_REQUIRE(o.beta2 >= 0 && o.beta2 < 1, "adamw: beta2 must be in [0, 1), got ", o.beta2);
  LF_REQUIRE(o.eps >= 0, "adamw: eps must be >= 0, got ", o.eps);
  LF_REQUIRE(o.weight_decay >= 0, "adamw: weight_decay must be >= 0, got ", o.weight_decay);
}

constexpr int64_t kNormChunk = 16384;

}  // namespace

template <class T>
void adamw_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t t, const AdamWOptions& o) {
  check_options(n, t, o);
  // Per-step scalars in double, then rounded once to T: the loop body is plain T arithmetic. GCC keeps
  // sqrt's errno branch unless built with -fno-math-errno, and only then vectorises this loop (about 5×
  // faster; the step is a small part of a training step either way).
  const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
  const T decay = T(1 - o.lr * o.weight_decay), b1 = T(o.beta1), b2 = T(o.beta2);
  const T c1 = T(1 - o.beta1), c2 = T(1 - o.beta2), step = T(o.lr / bc1), inv_sqrt_bc2 = T(1 / std::sqrt(bc2));
  const T eps = T(o.eps);
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grads[i];
    const T mi = b1 * m[i] + c1 * g;
    const T vi = b2 * v[i] + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] * decay - step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

template <class T>
void adamw_step_ref(T* params, const T* grads, T* m, T* v, int64_t n, int64_t t, const AdamWOptions& o) {
  check_options(n, t, o);
  const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(grads[i]);
    double p = double(params[i]);
    p -= o.lr * o.weight_decay * p;
    const double mi = o.beta1 * double(m[i]) + (1 - o.beta1) * g;
    const double vi = o.beta2 * double(v[i]) + (1 - o.beta2) * g * g;
    p -= o.lr * (mi / bc1) / (std::sqrt(vi / bc2) + o.eps);
    m[i] = T(mi);
    v[i] = T(vi);
    params[i] = T(p);
  }
}

template <class T>
double grad_global_norm(const T* g, int64_t n) {
  LF_REQUIRE(n >= 0, "grad_global_norm: negative size ", n);
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> part(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kNormChunk);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = c * kNormChunk; i < end; ++i) s += double(g[i]) * double(g[i]);
    part[size_t(c)] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return std::sqrt(s);
}

template <class T>
void scale_inplace(T* x, int64_t n, double s) {
  LF_REQUIRE(n >= 0, "scale_inplace: negative size ", n);
  const T k = T(s);
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] *= k;
}

#define LF_INSTANTIATE(T)                                                                       \
  template void adamw_step<T>(T*, const T*, T*, T*, int64_t, int64_t, const AdamWOptions&);     \
  template void adamw_step_ref<T>(T*, const T*, T*, T*, int64_t, int64_t, const AdamWOptions&); \
  template double grad_global_norm<T>(const T*, int64_t);                                       \
  template void scale_inplace<T>(T*, int64_t, double);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
