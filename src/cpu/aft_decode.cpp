#include "cpu/aft_decode.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr int64_t kChannelBlock = 16;

// The bias of row i, channel group g, cached key j (inside the row's window).
template <class T>
T bias_at(const AftDecodeShape& s, const AftDecodeBias<T>& b, int64_t i, int64_t g, int64_t j) {
  if (!b.band) return b.w[i * b.ld + j];
  const int64_t tap = j - (s.L - s.n + i - (s.window - 1));
  return b.w[i * b.ld + g * s.window + tap];
}

}  // namespace

template <class T>
void aft_window_decode(const AftDecodeShape& s, const T* q, const T* K, const T* V, const AftDecodeBias<T>& bias,
                       T* mx, T* sum, T* num, T* o) {
  const int64_t blocks = (s.d + kChannelBlock - 1) / kChannelBlock, per_k = s.d / s.dk, per_g = s.d / bias.groups;
  const T neg_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (s.B * s.n * s.d * std::min(s.L, s.window) > 32768)
  for (int64_t task = 0; task < s.B * blocks; ++task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock, w = std::min(kChannelBlock, s.d - c0);
    std::vector<T> e(static_cast<size_t>(std::min(s.L, s.window)));
    for (int64_t c = c0; c < c0 + w; ++c) {
      T m = mx ? mx[b * s.d + c] : neg_inf, den = mx ? sum[b * s.d + c] : T(0), nu = mx ? num[b * s.d + c] : T(0);
      const T* Kc = K + b * s.cap * s.dk + c / per_k;
      const T* Vc = V + b * s.cap * s.d + c;
      for (int64_t i = 0; i < s.n; ++i) {
        const int64_t self = s.L - s.n + i, lo = std::max<int64_t>(0, self - s.window + 1);
        // The window's exponents and the row's shift: their max and the prefix's.
        T top = m;
        for (int64_t j = lo; j <= self; ++j) {
          const T x = Kc[j * s.dk] + bias_at(s, bias, i, c / per_g, j);
          e[size_t(j - lo)] = x;
          top = std::max(top, x);
        }
        const T carry = m == neg_inf ? T(0) : exp_fast<T>(m - top);
        T rd = den * carry, rn = nu * carry;
        for (int64_t j = lo; j <= self; ++j) {
          const T p = exp_fast<T>(e[size_t(j - lo)] - top);
          rd += p;
          rn += p * Vc[j * s.d];
        }
        const int64_t row = (b * s.n + i) * s.d + c;
        o[row] = sigmoid(q[row]) * rn / rd;
        // The key leaving the window before the next row: into the prefix state, without its bias.
        const int64_t out = self - s.window + 1;
        if (mx && out >= 0) {
          const T k = Kc[out * s.dk], mn = std::max(m, k);
          const T scale = m == neg_inf ? T(0) : exp_fast<T>(m - mn), p = exp_fast<T>(k - mn);
          den = den * scale + p;
          nu = nu * scale + p * Vc[out * s.d];
          m = mn;
        }
      }
      if (mx) {
        mx[b * s.d + c] = m;
        sum[b * s.d + c] = den;
        num[b * s.d + c] = nu;
      }
    }
  }
}

template <class T>
void aft_window_decode_ref(const AftDecodeShape& s, const T* q, const T* K, const T* V, const AftDecodeBias<T>& bias,
                           T* mx, T* sum, T* num, T* o) {
  const int64_t per_k = s.d / s.dk, per_g = s.d / bias.groups;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.d; ++c) {
      double m = mx ? double(mx[b * s.d + c]) : -INFINITY, den = mx ? double(sum[b * s.d + c]) : 0.0,
             nu = mx ? double(num[b * s.d + c]) : 0.0;
      auto k_at = [&](int64_t j) { return double(K[(b * s.cap + j) * s.dk + c / per_k]); };
      auto v_at = [&](int64_t j) { return double(V[(b * s.cap + j) * s.d + c]); };
      for (int64_t i = 0; i < s.n; ++i) {
        const int64_t self = s.L - s.n + i, lo = std::max<int64_t>(0, self - s.window + 1);
        // Every term with the overall maximum subtracted: the prefix (m) and the window's keys.
        double top = m;
        for (int64_t j = lo; j <= self; ++j) top = std::max(top, k_at(j) + double(bias_at(s, bias, i, c / per_g, j)));
        double rd = m == -INFINITY ? 0.0 : den * std::exp(m - top), rn = m == -INFINITY ? 0.0 : nu * std::exp(m - top);
        for (int64_t j = lo; j <= self; ++j) {
          const double p = std::exp(k_at(j) + double(bias_at(s, bias, i, c / per_g, j)) - top);
          rd += p;
          rn += p * v_at(j);
        }
        const int64_t row = (b * s.n + i) * s.d + c;
        o[row] = T(rn / rd / (1 + std::exp(-double(q[row]))));
        const int64_t out = self - s.window + 1;
        if (mx && out >= 0) {
          const double mn = std::max(m, k_at(out));
          const double scale = m == -INFINITY ? 0.0 : std::exp(m - mn);
          den = den * scale + std::exp(k_at(out) - mn);
          nu = nu * scale + std::exp(k_at(out) - mn) * v_at(out);
          m = mn;
        }
      }
      if (mx) {
        mx[b * s.d + c] = T(m);
        sum[b * s.d + c] = T(den);
        num[b * s.d + c] = T(nu);
      }
    }
}

#define LF_INSTANTIATE(T)                                                                                             \
  template void aft_window_decode<T>(const AftDecodeShape&, const T*, const T*, const T*, const AftDecodeBias<T>&,    \
                                     T*, T*, T*, T*);                                                                 \
  template void aft_window_decode_ref<T>(const AftDecodeShape&, const T*, const T*, const T*, const AftDecodeBias<T>&, \
                                         T*, T*, T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
