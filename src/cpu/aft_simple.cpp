#include "cpu/aft_simple.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr int64_t kChannelBlock = 16;  // channels per task: one cache line of floats per row

// One call's tensors; the methods work on channels c0..c0+w of sample b.
template <class T>
struct AftSimpleCore {
  int64_t n, d;
  const uint8_t* mask;
  T* q;                   // Q on entry of the forward, σ(Q) after it
  const T *k, *v;
  T* o;                   // forward output
  T *r, *m, *s;           // the softmax means, maxima and sums (null: not kept)
  // Decoding: the running maximum, sum and numerator per (sample, channel) (B, d) before the first row,
  // updated to those after the last (null: start empty, not kept).
  T *state_m = nullptr, *state_s = nullptr, *state_num = nullptr;

  bool kept() const { return r != nullptr; }
  bool visible(int64_t b, int64_t t) const { return !mask || !mask[b * n + t]; }

  // Non-causal forward: per channel the maximum m over the visible keys, s = Σ exp(K − m),
  // r = Σ exp(K − m) V / s; then o_t = σ(Q_t) r for every row.
  void global_forward(int64_t b, int64_t c0, int64_t w) {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T mx[kChannelBlock], sum[kChannelBlock], num[kChannelBlock], rr[kChannelBlock];
    std::fill_n(mx, w, neg_inf);
    std::fill_n(sum, w, T(0));
    std::fill_n(num, w, T(0));
    for (int64_t t = 0; t < n; ++t) {
      if (!visible(b, t)) continue;
      const T* kt = k + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) mx[c] = std::max(mx[c], kt[c]);
    }
    for (int64_t t = 0; t < n; ++t) {
      if (!visible(b, t)) continue;
      const T* kt = k + (b * n + t) * d + c0;
      const T* vt = v + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) {
        const T e = exp_fast<T>(kt[c] - mx[c]);
        sum[c] += e;
        num[c] += e * vt[c];
      }
    }
    for (int64_t c = 0; c < w; ++c) rr[c] = sum[c] > T(0) ? num[c] / sum[c] : T(0);  // no visible key: 0
    if (kept()) {
      std::copy_n(rr, w, r + b * d + c0);
      std::copy_n(mx, w, m + b * d + c0);
      std::copy_n(sum, w, s + b * d + c0);
    }
    for (int64_t t = 0; t < n; ++t) {
      T* qt = q + (b * n + t) * d + c0;
      T* ot = o + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) {
        const T sg = sigmoid(qt[c]);
        ot[c] = sg * rr[c];
        qt[c] = sg;  // the backward needs σ(Q) only
      }
    }
  }

  // Causal forward: the online softmax down the rows, m_t = max over visible keys ≤ t, s_t and the
  // numerator rescaled by exp(m_{t−1} − m_t) when the maximum grows.
  void causal_forward(int64_t b, int64_t c0, int64_t w) {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T mx[kChannelBlock], sum[kChannelBlock], num[kChannelBlock];
    std::fill_n(mx, w, neg_inf);
    std::fill_n(sum, w, T(0));
    std::fill_n(num, w, T(0));
    if (state_m) {
      std::copy_n(state_m + b * d + c0, w, mx);
      std::copy_n(state_s + b * d + c0, w, sum);
      std::copy_n(state_num + b * d + c0, w, num);
    }
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      if (visible(b, t)) {
        const T* kt = k + row;
        const T* vt = v + row;
        for (int64_t c = 0; c < w; ++c) {
          const T mn = std::max(mx[c], kt[c]);
          const T scale = exp_fast<T>(mx[c] - mn);  // 0 before the first visible key (mx = −inf)
          const T e = exp_fast<T>(kt[c] - mn);
          sum[c] = sum[c] * scale + e;
          num[c] = num[c] * scale + e * vt[c];
          mx[c] = mn;
        }
      }
      T* qt = q + row;
      T* ot = o + row;
      for (int64_t c = 0; c < w; ++c) {
        const T rc = sum[c] > T(0) ? num[c] / sum[c] : T(0);
        const T sg = sigmoid(qt[c]);
        ot[c] = sg * rc;
        if (kept()) {
          qt[c] = sg;
          r[row + c] = rc;
          m[row + c] = mx[c];
          s[row + c] = sum[c];
        }
      }
    }
    if (state_m) {
      std::copy_n(mx, w, state_m + b * d + c0);
      std::copy_n(sum, w, state_s + b * d + c0);
      std::copy_n(num, w, state_num + b * d + c0);
    }
  }
};

template <class T>
struct AftSimpleGrad {
  int64_t n, d;
  const uint8_t* mask;
  const T *sgq, *k, *v, *r, *m, *s, *d_o;
  T *dq, *dk, *dv;

  bool visible(int64_t b, int64_t t) const { return !mask || !mask[b * n + t]; }

  // Non-causal backward. With g_t = dO_t σ(Q_t) and G = Σ_t g_t (every query shares r):
  // dQ_t = dO_t r σ'(Q_t), and for a visible key p_t' = exp(K_t' − m)/s, dV_t' = p_t' G,
  // dK_t' = p_t' G (V_t' − r). Padded keys: exactly 0.
  void global_backward(int64_t b, int64_t c0, int64_t w) const {
    T G[kChannelBlock];
    std::fill_n(G, w, T(0));
    const T* rr = r + b * d + c0;
    const T* mx = m + b * d + c0;
    const T* sum = s + b * d + c0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      const T* sg = sgq + row;
      const T* go = d_o + row;
      T* gq = dq + row;
      for (int64_t c = 0; c < w; ++c) {
        G[c] += go[c] * sg[c];
        gq[c] = go[c] * rr[c] * sg[c] * (T(1) - sg[c]);
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      key_grads(b, t, row, w, mx, sum, [&](int64_t c, T p, T vc) {
        const T pg = p * G[c];
        dv[row + c] = pg;
        dk[row + c] = pg * (vc - rr[c]);
      });
    }
  }

  // Causal backward. With L_t = m_t + log s_t (log of the denominator of row t) and p_{t,t'} =
  // exp(K_t' − L_t) for t' ≤ t: dV_t' = Σ_{t≥t'} p_{t,t'} g_t = exp(K_t' − L_t') H_t' and
  // dK_t' = Σ_{t≥t'} p_{t,t'} g_t (V_t' − r_t) = exp(K_t' − L_t') (V_t' H_t' − J_t'), where
  // H_t' = Σ_{t≥t'} g_t exp(L_t' − L_t) and J_t' likewise with g_t r_t, by the suffix recurrences
  // H_t = g_t + exp(L_t − L_{t+1}) H_{t+1}. L grows with t: every factor is ≤ 1, nothing overflows.
  void causal_backward(int64_t b, int64_t c0, int64_t w) const {
    T H[kChannelBlock], J[kChannelBlock];
    std::fill_n(H, w, T(0));
    std::fill_n(J, w, T(0));
    for (int64_t t = n - 1; t >= 0; --t) {
      const int64_t row = (b * n + t) * d + c0;
      const T* sg = sgq + row;
      const T* go = d_o + row;
      const T* rr = r + row;
      const T* mx = m + row;
      const T* sum = s + row;
      T* gq = dq + row;
      if (t + 1 < n) {  // carry the suffix sums from row t + 1: × exp(L_t − L_{t+1})
        const T* mx1 = m + row + d;
        const T* sum1 = s + row + d;
        for (int64_t c = 0; c < w; ++c) {
          // No visible key up to t (s_t = 0): row t's suffix is never read again.
          const T f = sum[c] > T(0) ? exp_fast<T>(mx[c] - mx1[c]) * sum[c] / sum1[c] : T(0);
          H[c] *= f;
          J[c] *= f;
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        const T g = go[c] * sg[c];
        gq[c] = go[c] * rr[c] * sg[c] * (T(1) - sg[c]);
        H[c] += g;
        J[c] += g * rr[c];
      }
      key_grads(b, t, row, w, mx, sum, [&](int64_t c, T p, T vc) {
        dv[row + c] = p * H[c];
        dk[row + c] = p * (vc * H[c] - J[c]);
      });
    }
  }

  // Row t's dK, dV (w channels at `row`): zeros at a hidden key; else grad(c, p, V_tc) writes them from
  // the key's weight p = exp(K_tc − m_c) / s_c (m, s: the shift and denominator of its softmax).
  template <class Grad>
  void key_grads(int64_t b, int64_t t, int64_t row, int64_t w, const T* mx, const T* sum, Grad grad) const {
    if (!visible(b, t)) {
      std::fill_n(dk + row, w, T(0));
      std::fill_n(dv + row, w, T(0));
      return;
    }
    const T* kt = k + row;
    const T* vt = v + row;
    for (int64_t c = 0; c < w; ++c) grad(c, exp_fast<T>(kt[c] - mx[c]) / sum[c], vt[c]);
  }
};

// Runs f(b, c0, w) for every (sample, channel block), in parallel above a size.
template <class F>
void for_channel_blocks(int64_t B, int64_t n, int64_t d, F f) {
  const int64_t blocks = (d + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
  for (int64_t task = 0; task < B * blocks; ++task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock;
    f(b, c0, std::min(kChannelBlock, d - c0));
  }
}

}  // namespace

template <class T>
void aft_simple_forward(T* q, const T* k, const T* v, const uint8_t* mask, T* o, T* r, T* m, T* s, int64_t B,
                        int64_t n, int64_t d, bool causal) {
  AftSimpleCore<T> core{n, d, mask, q, k, v, o, r, m, s};
  for_channel_blocks(B, n, d, [&](int64_t b, int64_t c0, int64_t w) {
    if (causal)
      core.causal_forward(b, c0, w);
    else
      core.global_forward(b, c0, w);
  });
}

template <class T>
void aft_simple_decode(const T* q, const T* k, const T* v, T* o, T* mx, T* sum, T* num, int64_t B, int64_t n,
                       int64_t d) {
  // The causal forward from the carried state; q is read only (nothing is kept for a backward).
  AftSimpleCore<T> core{n, d, nullptr, const_cast<T*>(q), k, v, o, nullptr, nullptr, nullptr, mx, sum, num};
  for_channel_blocks(B, n, d, [&](int64_t b, int64_t c0, int64_t w) { core.causal_forward(b, c0, w); });
}

template <class T>
void aft_simple_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const T* r, const T* m, const T* s,
                         const T* d_o, T* dq, T* dk, T* dv, int64_t B, int64_t n, int64_t d, bool causal) {
  const AftSimpleGrad<T> grad{n, d, mask, sg, k, v, r, m, s, d_o, dq, dk, dv};
  for_channel_blocks(B, n, d, [&](int64_t b, int64_t c0, int64_t w) {
    if (causal)
      grad.causal_backward(b, c0, w);
    else
      grad.global_backward(b, c0, w);
  });
}

namespace {

// The softmax weights p (n) of query t of (b, c) over its visible keys; false when it sees none.
template <class T>
bool ref_weights(const T* k, const uint8_t* mask, int64_t n, int64_t d, int64_t b, int64_t c, int64_t t, bool causal,
                 std::vector<double>& p) {
  const int64_t end = causal ? t + 1 : n;
  double mx = -INFINITY, sum = 0;
  for (int64_t u = 0; u < end; ++u)
    if (!mask || !mask[b * n + u]) mx = std::max(mx, double(k[(b * n + u) * d + c]));
  std::fill(p.begin(), p.end(), 0.0);
  if (mx == -INFINITY) return false;
  for (int64_t u = 0; u < end; ++u)
    if (!mask || !mask[b * n + u]) sum += p[size_t(u)] = std::exp(double(k[(b * n + u) * d + c]) - mx);
  for (double& e : p) e /= sum;
  return true;
}

double ref_sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

}  // namespace

template <class T>
void aft_simple_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, T* o, int64_t B, int64_t n,
                            int64_t d, bool causal) {
  std::vector<double> p(static_cast<size_t>(n));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < d; ++c)
      for (int64_t t = 0; t < n; ++t) {
        double mean = 0;
        if (ref_weights(k, mask, n, d, b, c, t, causal, p))
          for (int64_t u = 0; u < n; ++u) mean += p[size_t(u)] * double(v[(b * n + u) * d + c]);
        const int64_t i = (b * n + t) * d + c;
        o[i] = T(ref_sigmoid(double(q[i])) * mean);
      }
}

template <class T>
void aft_simple_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* d_o, T* dq, T* dk,
                             T* dv, int64_t B, int64_t n, int64_t d, bool causal) {
  const size_t len = static_cast<size_t>(n);
  std::vector<double> p(len), gk(len), gv(len);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < d; ++c) {
      std::fill(gk.begin(), gk.end(), 0.0);
      std::fill(gv.begin(), gv.end(), 0.0);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t i = (b * n + t) * d + c;
        const double sg = ref_sigmoid(double(q[i])), g = double(d_o[i]) * sg;
        double mean = 0;
        if (ref_weights(k, mask, n, d, b, c, t, causal, p))
          for (int64_t u = 0; u < n; ++u) mean += p[size_t(u)] * double(v[(b * n + u) * d + c]);
        dq[i] = T(double(d_o[i]) * mean * sg * (1 - sg));
        // dV_t' += p g, dK_t' += p g (V_t' − r_t).
        for (int64_t u = 0; u < n; ++u) {
          gv[size_t(u)] += p[size_t(u)] * g;
          gk[size_t(u)] += p[size_t(u)] * g * (double(v[(b * n + u) * d + c]) - mean);
        }
      }
      for (int64_t u = 0; u < n; ++u) {
        dk[(b * n + u) * d + c] = T(gk[size_t(u)]);
        dv[(b * n + u) * d + c] = T(gv[size_t(u)]);
      }
    }
}

template <class T>
void aft_simple_decode_ref(const T* q, const T* k, const T* v, T* o, T* mx, T* sum, T* num, int64_t B, int64_t n,
                           int64_t d) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < d; ++c) {
      double m = double(mx[b * d + c]), s = double(sum[b * d + c]), u = double(num[b * d + c]);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t i = (b * n + t) * d + c;
        const double kk = double(k[i]), mn = std::max(m, kk);
        const double scale = m == -INFINITY ? 0.0 : std::exp(m - mn);
        s = s * scale + std::exp(kk - mn);
        u = u * scale + std::exp(kk - mn) * double(v[i]);
        m = mn;
        o[i] = T(ref_sigmoid(double(q[i])) * u / s);
      }
      mx[b * d + c] = T(m);
      sum[b * d + c] = T(s);
      num[b * d + c] = T(u);
    }
}

#define LF_INSTANTIATE(T)                                                                                            \
  template void aft_simple_forward<T>(T*, const T*, const T*, const uint8_t*, T*, T*, T*, T*, int64_t, int64_t,      \
                                      int64_t, bool);                                                                \
  template void aft_simple_backward<T>(const T*, const T*, const T*, const uint8_t*, const T*, const T*, const T*,   \
                                       const T*, T*, T*, T*, int64_t, int64_t, int64_t, bool);                       \
  template void aft_simple_decode<T>(const T*, const T*, const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t);       \
  template void aft_simple_decode_ref<T>(const T*, const T*, const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t);   \
  template void aft_simple_forward_ref<T>(const T*, const T*, const T*, const uint8_t*, T*, int64_t, int64_t,        \
                                          int64_t, bool);                                                            \
  template void aft_simple_backward_ref<T>(const T*, const T*, const T*, const uint8_t*, const T*, T*, T*, T*,       \
                                           int64_t, int64_t, int64_t, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
