#include "cpu/dropout.h"

#include "linformer/error.h"
#include "linformer/rng.h"

namespace lf {

template <class T>
void dropout_forward(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  LF_REQUIRE(p >= 0 && p < 1, "dropout probability must be in [0, 1), got ", p);
  if (p == 0) {
    if (x != y)
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) y[i] = x[i];
    return;
  }
  const float pf = float(p);
  const T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i)
    y[i] = uniform01(seed, stream, offset + uint64_t(i)) >= pf ? x[i] * scale : T(0);
}

template <class T>
void dropout_backward(const T* dy, T* dx, int64_t n, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  dropout_forward(dy, dx, n, p, seed, stream, offset);  // the same masked scaling
}

template <class T>
void dropout_forward_ref(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = double(uniform01(seed, stream, offset + uint64_t(i))) >= double(float(p));
    y[i] = keep ? T(double(x[i]) / (1.0 - p)) : T(0);
  }
}

#define LF_INSTANTIATE(T)                                                                              \
  template void dropout_forward<T>(const T*, T*, int64_t, double, uint64_t, uint64_t, uint64_t);      \
  template void dropout_backward<T>(const T*, T*, int64_t, double, uint64_t, uint64_t, uint64_t);     \
  template void dropout_forward_ref<T>(const T*, T*, int64_t, double, uint64_t, uint64_t, uint64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
