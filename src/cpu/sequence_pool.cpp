#include "cpu/sequence_pool.h"

#include <algorithm>

namespace lf {

template <class T>
void sequence_pool_forward(const T* h, const uint8_t* padding, int64_t B, int64_t n, int64_t d, bool first,
                           T* pooled) {
  std::fill_n(pooled, B * d, T(0));
  for (int64_t b = 0; b < B; ++b) {
    T* pb = pooled + b * d;
    if (first) {
      std::copy(h + b * n * d, h + b * n * d + d, pb);
      continue;
    }
    int64_t count = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (padding && padding[b * n + t]) continue;
      ++count;
      for (int64_t e = 0; e < d; ++e) pb[e] += h[(b * n + t) * d + e];
    }
    for (int64_t e = 0; e < d; ++e) pb[e] /= T(count);
  }
}

template <class T>
void sequence_pool_backward(const T* dpooled, const uint8_t* padding, int64_t B, int64_t n, int64_t d, bool first,
                            T* dh) {
  std::fill_n(dh, B * n * d, T(0));  // positions outside the pooling get none
  for (int64_t b = 0; b < B; ++b) {
    const T* dp = dpooled + b * d;
    if (first) {
      std::copy(dp, dp + d, dh + b * n * d);
      continue;
    }
    int64_t count = 0;
    for (int64_t t = 0; t < n; ++t) count += !padding || !padding[b * n + t];
    for (int64_t t = 0; t < n; ++t) {
      if (padding && padding[b * n + t]) continue;
      for (int64_t e = 0; e < d; ++e) dh[(b * n + t) * d + e] = dp[e] / T(count);
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                         \
  template void sequence_pool_forward<T>(const T*, const uint8_t*, int64_t, int64_t, int64_t, bool, T*);          \
  template void sequence_pool_backward<T>(const T*, const uint8_t*, int64_t, int64_t, int64_t, bool, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
