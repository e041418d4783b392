// The linear-attention feature maps (feature_maps.h): e^x by exp_fast on the fast paths, libm in the
// references.
#include "cpu/feature_maps.h"

#include <algorithm>
#include <vector>
#include <cmath>
#include <limits>

#include "cpu/vmath.h"

namespace lf {

template <class T>
void elu_plus_one_forward(const T* x, const uint8_t* row_mask, T* y, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    const T* in = x + i * d;
    T* row = y + i * d;
    if (row_mask && row_mask[i]) {
      std::fill(row, row + d, T(0));
      continue;
    }
#pragma omp simd
    for (int64_t e = 0; e < d; ++e) row[e] = in[e] > T(0) ? in[e] + T(1) : exp_fast<T>(in[e]);
  }
}

template <class T>
void elu_plus_one_backward(const T* phi, const T* dy, T* dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * std::min(phi[i], T(1));
}

template <class T>
void relu_features_forward(const T* u, T eps, T* phi, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) phi[i] = std::max(u[i], T(0)) + eps;
}

template <class T>
void relu_features_backward(const T* phi, T eps, const T* dphi, T* du, int64_t n) {
  // φ > eps exactly where u > 0 (but for u below half an ulp of eps, where φ rounds to eps: there
  // the derivative is taken as 0, one of ReLU's subgradients' neighbours by at most 1e-10·|dφ|).
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) du[i] = phi[i] > eps ? dphi[i] : T(0);
}

// Per (b, head): column sums over the positions in position order (the same order for any thread
// count), then the scaling. Rows of (b, s, head) are r wide.
template <class T>
void column_softmax_forward(int64_t B, int64_t m, int64_t h, int64_t r, const T* phi, T* y) {
#pragma omp parallel if (B * m * h * r > 65536)
  {
    std::vector<T> sum(static_cast<size_t>(r));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h;
      std::fill(sum.begin(), sum.end(), T(0));
      for (int64_t s = 0; s < m; ++s) {
        const T* p = phi + ((b * m + s) * h + hd) * r;
        for (int64_t c = 0; c < r; ++c) sum[size_t(c)] += p[c];
      }
      for (T& x : sum) x = x > T(0) ? T(1) / x : T(0);
      for (int64_t s = 0; s < m; ++s) {
        const int64_t row = ((b * m + s) * h + hd) * r;
        for (int64_t c = 0; c < r; ++c) y[row + c] = phi[row + c] * sum[size_t(c)];
      }
    }
  }
}

template <class T>
void column_softmax_forward_ref(int64_t B, int64_t m, int64_t h, int64_t r, const T* phi, T* y) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hd = 0; hd < h; ++hd)
      for (int64_t c = 0; c < r; ++c) {
        double sum = 0;
        for (int64_t s = 0; s < m; ++s) sum += double(phi[((b * m + s) * h + hd) * r + c]);
        for (int64_t s = 0; s < m; ++s) {
          const int64_t e = ((b * m + s) * h + hd) * r + c;
          y[e] = sum > 0 ? T(double(phi[e]) / sum) : T(0);
        }
      }
}

template <class T>
void column_softmax_backward(int64_t B, int64_t m, int64_t h, int64_t r, const T* y, const T* dy, T* du) {
#pragma omp parallel if (B * m * h * r > 65536)
  {
    std::vector<T> dot(static_cast<size_t>(r));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h;
      std::fill(dot.begin(), dot.end(), T(0));
      for (int64_t s = 0; s < m; ++s) {
        const int64_t row = ((b * m + s) * h + hd) * r;
        for (int64_t c = 0; c < r; ++c) dot[size_t(c)] += y[row + c] * dy[row + c];
      }
      for (int64_t s = 0; s < m; ++s) {
        const int64_t row = ((b * m + s) * h + hd) * r;
        for (int64_t c = 0; c < r; ++c) du[row + c] = y[row + c] * (dy[row + c] - dot[size_t(c)]);
      }
    }
  }
}

template <class T>
void column_softmax_backward_ref(int64_t B, int64_t m, int64_t h, int64_t r, const T* y, const T* dy, T* du) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hd = 0; hd < h; ++hd)
      for (int64_t c = 0; c < r; ++c) {
        double dot = 0;
        for (int64_t s = 0; s < m; ++s) {
          const int64_t e = ((b * m + s) * h + hd) * r + c;
          dot += double(y[e]) * double(dy[e]);
        }
        for (int64_t s = 0; s < m; ++s) {
          const int64_t e = ((b * m + s) * h + hd) * r + c;
          du[e] = T(double(y[e]) * (double(dy[e]) - dot));
        }
      }
}

template <class T>
void favor_query_features(const T* u, T* phi, int64_t rows, int64_t mf) {
  const T inv_sqrt = T(1.0 / std::sqrt(double(mf)));
#pragma omp parallel for schedule(static) if (rows * mf > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    const T* ui = u + i * mf;
    T* p = phi + i * mf;
    T mx = ui[0];
    for (int64_t j = 1; j < mf; ++j) mx = std::max(mx, ui[j]);
#pragma omp simd
    for (int64_t j = 0; j < mf; ++j) p[j] = exp_fast<T>(ui[j] - mx) * inv_sqrt;
  }
}

template <class T>
void favor_query_features_ref(const T* u, T* phi, int64_t rows, int64_t mf) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* ui = u + i * mf;
    const double mx = double(*std::max_element(ui, ui + mf));
    for (int64_t j = 0; j < mf; ++j) phi[i * mf + j] = T(std::exp(double(ui[j]) - mx) / std::sqrt(double(mf)));
  }
}

template <class T>
void favor_key_features(const FavorKeyShape& s, const T* k, const T* u, const uint8_t* key_mask, T half_sq_scale,
                        T* phi, T* key_max) {
  const int64_t B = s.B, m = s.m, h = s.h, dh = s.d_h, mf = s.mf, span = s.span, spans = s.spans();
  const T inv_sqrt = T(1.0 / std::sqrt(double(mf)));
  const T neg_inf = -std::numeric_limits<T>::infinity();
  // e_j, and the max per (batch, head, span): rows are (b, s, head).
  std::fill(key_max, key_max + B * h * spans, neg_inf);
#pragma omp parallel for schedule(static) if (B * m * h * mf > 65536)
  for (int64_t bh = 0; bh < B * h; ++bh) {
    const int64_t b = bh / h, hd = bh % h;
    for (int64_t t = 0; t < m; ++t) {
      if (key_mask && key_mask[b * m + t]) continue;
      const int64_t row = (b * m + t) * h + hd;
      const T* kr = k + row * dh;
      T sq = 0;
      for (int64_t e = 0; e < dh; ++e) sq += kr[e] * kr[e];
      const T half = half_sq_scale * sq;
      const T* ur = u + row * mf;
      T* p = phi + row * mf;
      T mx = neg_inf;
      for (int64_t j = 0; j < mf; ++j) {
        p[j] = ur[j] - half;
        mx = std::max(mx, p[j]);
      }
      T& cm = key_max[bh * spans + t / span];
      cm = std::max(cm, mx);
    }
  }
#pragma omp parallel for schedule(static) if (B * m * h * mf > 65536)
  for (int64_t bs = 0; bs < B * m; ++bs) {
    const int64_t b = bs / m, t = bs % m;
    for (int64_t hd = 0; hd < h; ++hd) {
      T* p = phi + (bs * h + hd) * mf;
      if (key_mask && key_mask[bs]) {
        std::fill(p, p + mf, T(0));
        continue;
      }
      const T M = key_max[(b * h + hd) * spans + t / span];
#pragma omp simd
      for (int64_t j = 0; j < mf; ++j) p[j] = exp_fast<T>(p[j] - M) * inv_sqrt;
    }
  }
}

template <class T>
void favor_key_features_ref(const FavorKeyShape& s, const T* k, const T* u, const uint8_t* key_mask, T half_sq_scale,
                            T* phi, T* key_max) {
  const int64_t spans = s.spans();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t hd = 0; hd < s.h; ++hd) {
      T* M = key_max + (b * s.h + hd) * spans;
      std::fill(M, M + spans, -std::numeric_limits<T>::infinity());
      // e, and each span's max over its valid keys.
      for (int64_t t = 0; t < s.m; ++t) {
        if (key_mask && key_mask[b * s.m + t]) continue;
        const int64_t row = (b * s.m + t) * s.h + hd;
        double sq = 0;
        for (int64_t e = 0; e < s.d_h; ++e) sq += double(k[row * s.d_h + e]) * double(k[row * s.d_h + e]);
        for (int64_t j = 0; j < s.mf; ++j) {
          phi[row * s.mf + j] = T(double(u[row * s.mf + j]) - double(half_sq_scale) * sq);
          M[t / s.span] = std::max(M[t / s.span], phi[row * s.mf + j]);
        }
      }
      for (int64_t t = 0; t < s.m; ++t) {
        const int64_t row = (b * s.m + t) * s.h + hd;
        const bool padded = key_mask && key_mask[b * s.m + t];
        for (int64_t j = 0; j < s.mf; ++j)
          phi[row * s.mf + j] =
              padded ? T(0)
                     : T(std::exp(double(phi[row * s.mf + j]) - double(M[t / s.span])) / std::sqrt(double(s.mf)));
      }
    }
}

template <class T>
void favor_features_backward(const T* phi, const T* dphi, T* du, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) du[i] = dphi[i] * phi[i];
}

template <class T>
void favor_key_norm_backward(const T* k, const T* du, T sq_scale, int64_t rows, int64_t d_h, int64_t mf, T* dk) {
#pragma omp parallel for schedule(static) if (rows * mf > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    const T* g = du + i * mf;
    T sum = 0;
    for (int64_t j = 0; j < mf; ++j) sum += g[j];
    const T* kr = k + i * d_h;
    T* dkr = dk + i * d_h;
    for (int64_t e = 0; e < d_h; ++e) dkr[e] -= sq_scale * sum * kr[e];
  }
}

template <class T>
void favor_key_norm_backward_ref(const T* k, const T* du, T sq_scale, int64_t rows, int64_t d_h, int64_t mf, T* dk) {
  for (int64_t i = 0; i < rows; ++i) {
    double sum = 0;
    for (int64_t j = 0; j < mf; ++j) sum += double(du[i * mf + j]);
    for (int64_t e = 0; e < d_h; ++e)
      dk[i * d_h + e] = T(double(dk[i * d_h + e]) - double(sq_scale) * sum * double(k[i * d_h + e]));
  }
}

#define LF_INSTANTIATE(T)                                                                                       \
  template void elu_plus_one_forward<T>(const T*, const uint8_t*, T*, int64_t, int64_t);                        \
  template void elu_plus_one_backward<T>(const T*, const T*, T*, int64_t);                                      \
  template void relu_features_forward<T>(const T*, T, T*, int64_t);                                             \
  template void column_softmax_forward<T>(int64_t, int64_t, int64_t, int64_t, const T*, T*);                   \
  template void column_softmax_forward_ref<T>(int64_t, int64_t, int64_t, int64_t, const T*, T*);               \
  template void column_softmax_backward<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*, T*);        \
  template void column_softmax_backward_ref<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*, T*);    \
  template void relu_features_backward<T>(const T*, T, const T*, T*, int64_t);                                  \
  template void favor_query_features<T>(const T*, T*, int64_t, int64_t);                                        \
  template void favor_query_features_ref<T>(const T*, T*, int64_t, int64_t);                                    \
  template void favor_key_features<T>(const FavorKeyShape&, const T*, const T*, const uint8_t*, T, T*, T*);     \
  template void favor_key_features_ref<T>(const FavorKeyShape&, const T*, const T*, const uint8_t*, T, T*, T*); \
  template void favor_features_backward<T>(const T*, const T*, T*, int64_t);                                    \
  template void favor_key_norm_backward<T>(const T*, const T*, T, int64_t, int64_t, int64_t, T*);               \
  template void favor_key_norm_backward_ref<T>(const T*, const T*, T, int64_t, int64_t, int64_t, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
