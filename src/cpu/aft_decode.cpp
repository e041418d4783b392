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
  const int64_t span = std::min(s.L, s.window);  // keys a row weighs with their bias, at most
  const T neg_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (s.B * s.n * s.d * span > 32768)
  for (int64_t task = 0; task < s.B * blocks; ++task) {
    // A block of channels walks the cached rows together: each row's keys and values are read once,
    // contiguously, for the whole block.
    const int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock, w = std::min(kChannelBlock, s.d - c0);
    std::vector<T> e(static_cast<size_t>(span * kChannelBlock));  // the window's exponents, row by row
    T m[kChannelBlock], den[kChannelBlock], nu[kChannelBlock], top[kChannelBlock], rd[kChannelBlock],
        rn[kChannelBlock];
    for (int64_t c = 0; c < w; ++c) {
      m[c] = mx ? mx[b * s.d + c0 + c] : neg_inf;
      den[c] = mx ? sum[b * s.d + c0 + c] : T(0);
      nu[c] = mx ? num[b * s.d + c0 + c] : T(0);
    }
    const T* Kb = K + b * s.cap * s.dk;
    const T* Vb = V + b * s.cap * s.d + c0;
    for (int64_t i = 0; i < s.n; ++i) {
      const int64_t self = s.L - s.n + i, lo = std::max<int64_t>(0, self - s.window + 1);
      // The window's exponents and each channel's shift: their max and the prefix's.
      std::copy_n(m, w, top);
      for (int64_t j = lo; j <= self; ++j) {
        const T* kr = Kb + j * s.dk;
        T* ej = e.data() + (j - lo) * kChannelBlock;
        for (int64_t c = 0; c < w; ++c) {
          const T x = kr[(c0 + c) / per_k] + bias_at(s, bias, i, (c0 + c) / per_g, j);
          ej[c] = x;
          top[c] = std::max(top[c], x);
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        const T carry = m[c] == neg_inf ? T(0) : exp_fast<T>(m[c] - top[c]);
        rd[c] = den[c] * carry;
        rn[c] = nu[c] * carry;
      }
      for (int64_t j = lo; j <= self; ++j) {
        const T* ej = e.data() + (j - lo) * kChannelBlock;
        const T* vr = Vb + j * s.d;
#pragma omp simd
        for (int64_t c = 0; c < w; ++c) {
          const T p = exp_fast<T>(ej[c] - top[c]);
          rd[c] += p;
          rn[c] += p * vr[c];
        }
      }
      const int64_t row = (b * s.n + i) * s.d + c0;
      for (int64_t c = 0; c < w; ++c) o[row + c] = sigmoid(q[row + c]) * rn[c] / rd[c];
      // The key leaving the window before the next row: into the prefix state, without its bias.
      const int64_t out = self - s.window + 1;
      if (mx && out >= 0) {
        const T* kr = Kb + out * s.dk;
        const T* vr = Vb + out * s.d;
        for (int64_t c = 0; c < w; ++c) {
          const T k = kr[(c0 + c) / per_k], mn = std::max(m[c], k);
          const T scale = m[c] == neg_inf ? T(0) : exp_fast<T>(m[c] - mn), p = exp_fast<T>(k - mn);
          den[c] = den[c] * scale + p;
          nu[c] = nu[c] * scale + p * vr[c];
          m[c] = mn;
        }
      }
    }
    if (mx)
      for (int64_t c = 0; c < w; ++c) {
        mx[b * s.d + c0 + c] = m[c];
        sum[b * s.d + c0 + c] = den[c];
        num[b * s.d + c0 + c] = nu[c];
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
