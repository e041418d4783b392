#include "cpu/aft_conv.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/vmath.h"

namespace lf {
namespace {

// One call's tensors; the methods work on one (sample b, head i). The backward only reads q_, r_,
// den_, m_ (its entry point casts its inputs to fill the same struct).
template <class T>
struct AftConvCore {
  int64_t n_, d_, h_, s_;
  bool causal_;
  const uint8_t* mask_;
  const T *k_, *v_, *omega_;  // K (B, n, h), V (B, n, d), ω (h, s)
  T *q_, *o_, *r_;            // (B, n, d): Q then σ(Q), the output, Y / σ(Q) (null: not kept)
  T *den_, *m_;               // (B, h, n): denominators (relative to m) and shifts

  // Per-thread work arrays of one (sample, head): O(n) scalars.
  struct Scratch {
    explicit Scratch(int64_t n)
        : k(static_cast<size_t>(n)), e(static_cast<size_t>(n)), mx(static_cast<size_t>(n)),
          sum(static_cast<size_t>(n + 1)), vis(static_cast<size_t>(n)) {}
    std::vector<T> k, e, mx, sum;
    std::vector<uint8_t> vis;
  };

  // Offset of kernel tap j: t' = t + offset(j).
  int64_t offset(int64_t j) const { return causal_ ? j - (s_ - 1) : j - s_ / 2; }

  // The keys of (b, head i): K into sc.k, visibility into sc.vis, and the shift m_t (non-causal: the
  // maximum over the visible keys; causal: the running maximum up to t; −inf while none is visible)
  // into sc.mx and m_.
  void load_keys(int64_t b, int64_t i, Scratch& sc) {
    const int64_t n = n_, h = h_;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T run = neg_inf;
    for (int64_t t = 0; t < n; ++t) {
      sc.k[size_t(t)] = k_[size_t((b * n + t) * h + i)];
      sc.vis[size_t(t)] = !mask_ || !mask_[b * n + t];
      if (sc.vis[size_t(t)]) run = std::max(run, sc.k[size_t(t)]);
      sc.mx[size_t(t)] = run;
    }
    if (!causal_) std::fill(sc.mx.begin(), sc.mx.end(), run);
    std::copy(sc.mx.begin(), sc.mx.end(), m_ + (b * h + i) * n);
  }

  // Row t of (b, head i): num (d_h) += the window's exp(ŵ_j) e_{t'} V_{t'}, returns the window's
  // Σ exp(ŵ_j) e_{t'}. e_{t'} = exp(K_{t'} − m_t) (the non-causal shift is one number: sc.e holds it).
  T window_forward(int64_t b, int64_t i, int64_t t, const Scratch& sc, T* num) const {
    const int64_t n = n_, d = d_, dh = d / h_, s = s_;
    const T* omega = omega_ + i * s;
    T den = 0;
    for (int64_t j = 0; j < s; ++j) {
      const int64_t u = t + offset(j);
      if (u < 0 || u >= n || !sc.vis[size_t(u)]) continue;
      const T e = causal_ ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(t)]) : sc.e[size_t(u)];
      const T c = omega[j] * e;
      const T* v = v_ + (b * n + u) * d + i * dh;
      for (int64_t x = 0; x < dh; ++x) num[x] += c * v[x];
      den += c;
    }
    return den;
  }

  // Row t's result from its numerator and denominator: r = num/den (0 when no key is visible),
  // o = σ(Q) r; q_ becomes σ(Q) and r_ is kept for the backward.
  void finish_row(int64_t b, int64_t i, int64_t t, const T* num, T den) {
    const int64_t n = n_, d = d_, dh = d / h_, row = (b * n + t) * d + i * dh;
    den_[size_t((b * h_ + i) * n + t)] = den;
    const T inv = den > T(0) ? T(1) / den : T(0);
    T* q = q_ + row;
    T* o = o_ + row;
    T* r = r_ ? r_ + row : nullptr;
    for (int64_t x = 0; x < dh; ++x) {
      const T rx = num[x] * inv;
      const T sg = sigmoid(q[x]);
      o[x] = sg * rx;
      q[x] = sg;
      if (r) r[x] = rx;
    }
  }

  void head_forward(int64_t b, int64_t i, Scratch& sc) {
    const int64_t n = n_, d = d_, dh = d / h_, s = s_;
    load_keys(b, i, sc);
    std::vector<T> pn(static_cast<size_t>(dh), T(0)), num(static_cast<size_t>(dh));
    T pd = 0;
    auto vrow = [&](int64_t u) { return v_ + (b * n + u) * d + i * dh; };
    auto orow = [&](int64_t u) { return o_ + (b * n + u) * d + i * dh; };
    if (!causal_) {
      const int64_t a = s / 2;  // the window is t − a .. t + a
      for (int64_t u = 0; u < n; ++u)
        sc.e[size_t(u)] = sc.vis[size_t(u)] ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(u)]) : T(0);
      // Suffix sums Σ_{t' ≥ u} e V into o_'s rows (row u is read before it is overwritten: row t reads
      // the suffix at t + a + 1 > t), and Σ e into sc.sum.
      sc.sum[size_t(n)] = 0;
      for (int64_t u = n - 1; u >= 0; --u) {
        T* o = orow(u);
        const T* v = vrow(u);
        const T e = sc.e[size_t(u)];
        const bool vis = sc.vis[size_t(u)];
        if (u + 1 < n) {
          const T* o1 = orow(u + 1);
          for (int64_t x = 0; x < dh; ++x) o[x] = vis ? o1[x] + e * v[x] : o1[x];
        } else {
          for (int64_t x = 0; x < dh; ++x) o[x] = vis ? e * v[x] : T(0);
        }
        sc.sum[size_t(u)] = sc.sum[size_t(u + 1)] + e;
      }
      for (int64_t t = 0; t < n; ++t) {
        const int64_t u = t - a - 1;  // joins the prefix left of the window
        if (u >= 0 && sc.vis[size_t(u)]) {
          const T* v = vrow(u);
          const T e = sc.e[size_t(u)];
          for (int64_t x = 0; x < dh; ++x) pn[size_t(x)] += e * v[x];
          pd += e;
        }
        T den = pd;
        if (t + a + 1 < n) {
          const T* suffix = orow(t + a + 1);
          for (int64_t x = 0; x < dh; ++x) num[size_t(x)] = pn[size_t(x)] + suffix[x];
          den += sc.sum[size_t(t + a + 1)];
        } else {
          std::copy(pn.begin(), pn.end(), num.begin());
        }
        den += window_forward(b, i, t, sc, num.data());
        finish_row(b, i, t, num.data(), den);
      }
      return;
    }
    // Causal: the prefix left of the window, t' ≤ t − s, held relative to its own running maximum pm
    // and brought to m_t when read.
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T pm = neg_inf;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t u = t - s;
      if (u >= 0 && sc.vis[size_t(u)]) {
        const T mn = sc.mx[size_t(u)];
        const T scale = exp_fast<T>(pm - mn);  // 0 for the first key (pm = −inf)
        const T e = exp_fast<T>(sc.k[size_t(u)] - mn);
        const T* v = vrow(u);
        for (int64_t x = 0; x < dh; ++x) pn[size_t(x)] = pn[size_t(x)] * scale + e * v[x];
        pd = pd * scale + e;
        pm = mn;
      }
      T den = 0;
      std::fill(num.begin(), num.end(), T(0));
      if (sc.mx[size_t(t)] != neg_inf) {  // else no visible key up to t: Y = 0
        const T f = exp_fast<T>(pm - sc.mx[size_t(t)]);
        for (int64_t x = 0; x < dh; ++x) num[size_t(x)] = f * pn[size_t(x)];
        den = f * pd + window_forward(b, i, t, sc, num.data());
      }
      finish_row(b, i, t, num.data(), den);
    }
  }

  // Backward of (b, head i). With D_t the denominator (relative to m_t), p_{t,t'} = a_{t,t'}/D_t the
  // normalised weight (a = exp(ŵ_j) e_{t'} in the window, e_{t'} outside), g_t = dO_t ⊙ σ(Q_t),
  // h_t = g_t/D_t, η_t = g_t·r_t/D_t:
  //   dQ_t = dO_t ⊙ r_t ⊙ σ'(Q_t),   dV_t' = Σ_t p_{t,t'} g_t,
  //   dK_t' = V_t'·dV_t' − Σ_t p_{t,t'} (g_t·r_t),   dŵ_j = Σ_t p_{t,t+o_j} (g_t·V_{t+o_j} − g_t·r_t).
  // The sums over t outside the window go through prefix/suffix sums of h and η; causal, the suffix
  // U_u = Σ_{t≥u} h_t exp(m_u − m_t) by U_u = h_u + exp(m_u − m_{u+1}) U_{u+1} (factors ≤ 1).
  void head_backward(int64_t b, int64_t i, const T* d_o, T* dq, T* dk, T* dv, T* hg, double* dwhat, Scratch& sc) {
    const int64_t n = n_, d = d_, h = h_, dh = d / h, s = s_;
    // The shifts of the forward (kept in m_) and its keys.
    for (int64_t t = 0; t < n; ++t) {
      sc.k[size_t(t)] = k_[size_t((b * n + t) * h + i)];
      sc.vis[size_t(t)] = !mask_ || !mask_[b * n + t];
      sc.mx[size_t(t)] = m_[size_t((b * h + i) * n + t)];
    }
    const T* den = den_ + (b * h + i) * n;
    std::vector<T> eta(static_cast<size_t>(n));
    auto at = [&](int64_t u) { return (b * n + u) * d + i * dh; };  // row u of this head in (B, n, d)
    // g, dQ, h = g/D, η = g·r/D.
    for (int64_t t = 0; t < n; ++t) {
      const T* sg = q_ + at(t);
      const T* r = r_ + at(t);
      const T* go = d_o + at(t);
      T* gq = dq + at(t);
      T* ht = hg + at(t);
      const T inv = den[t] > T(0) ? T(1) / den[t] : T(0);
      T beta = 0;
      for (int64_t x = 0; x < dh; ++x) {
        const T g = go[x] * sg[x];
        gq[x] = go[x] * r[x] * sg[x] * (T(1) - sg[x]);
        beta += g * r[x];
        ht[x] = g * inv;
      }
      eta[size_t(t)] = beta * inv;
    }
    // Outside the window: dV_t' = e_t' (Σ_t h_t over the queries whose window misses t'), dK_t' the
    // matching −e_t' Σ η_t. Suffix sums go into dv's rows (each read before it is overwritten).
    T* se = sc.sum.data();  // suffix sums of η
    se[n] = 0;
    if (!causal_) {
      const int64_t a = s / 2;
      for (int64_t u = 0; u < n; ++u)
        sc.e[size_t(u)] = sc.vis[size_t(u)] ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(u)]) : T(0);
      for (int64_t u = n - 1; u >= 0; --u) {
        T* su = dv + at(u);
        const T* hu = hg + at(u);
        if (u + 1 < n) {
          const T* su1 = dv + at(u + 1);
          for (int64_t x = 0; x < dh; ++x) su[x] = hu[x] + su1[x];
        } else {
          std::copy(hu, hu + dh, su);
        }
        se[u] = eta[size_t(u)] + se[u + 1];
      }
      std::vector<T> pu(static_cast<size_t>(dh), T(0));
      T pe = 0;
      // Key t lies outside the window of the queries u ≤ t − a − 1 (running prefix pu, pe) and
      // u ≥ t + a + 1 (the suffix sums).
      for (int64_t t = 0; t < n; ++t) {
        const int64_t u = t - a - 1;
        if (u >= 0) {
          const T* hu = hg + at(u);
          for (int64_t x = 0; x < dh; ++x) pu[size_t(x)] += hu[x];
          pe += eta[size_t(u)];
        }
        T* out = dv + at(t);
        if (!sc.vis[size_t(t)]) {
          std::fill(out, out + dh, T(0));
          dk[(b * n + t) * h + i] = 0;
          continue;
        }
        const T e = sc.e[size_t(t)];
        T esum = pe;
        if (t + a + 1 < n) {
          const T* su = dv + at(t + a + 1);
          for (int64_t x = 0; x < dh; ++x) out[x] = e * (pu[size_t(x)] + su[x]);
          esum += se[t + a + 1];
        } else {
          for (int64_t x = 0; x < dh; ++x) out[x] = e * pu[size_t(x)];
        }
        dk[(b * n + t) * h + i] = -e * esum;
      }
    } else {
      const T neg_inf = -std::numeric_limits<T>::infinity();
      for (int64_t u = n - 1; u >= 0; --u) {
        T* su = dv + at(u);
        const T* hu = hg + at(u);
        // No visible key up to u (m_u = −inf): the suffix at u is only read for padded keys.
        const T f = u + 1 < n && sc.mx[size_t(u)] != neg_inf ? exp_fast<T>(sc.mx[size_t(u)] - sc.mx[size_t(u + 1)])
                                                              : T(0);
        if (u + 1 < n) {
          const T* su1 = dv + at(u + 1);
          for (int64_t x = 0; x < dh; ++x) su[x] = hu[x] + f * su1[x];
        } else {
          std::copy(hu, hu + dh, su);
        }
        se[u] = eta[size_t(u)] + f * se[u + 1];
      }
      for (int64_t t = 0; t < n; ++t) {  // key t is outside the window of the queries u ≥ t + s
        T* out = dv + at(t);
        if (!sc.vis[size_t(t)] || t + s >= n) {
          std::fill(out, out + dh, T(0));
          dk[(b * n + t) * h + i] = 0;
          continue;
        }
        const T c = exp_fast<T>(sc.k[size_t(t)] - sc.mx[size_t(t + s)]);
        const T* su = dv + at(t + s);
        for (int64_t x = 0; x < dh; ++x) out[x] = c * su[x];
        dk[(b * n + t) * h + i] = -c * se[t + s];
      }
    }
    // The window: query t, tap j, key u = t + o_j.
    const T* omega = omega_ + i * s;
    for (int64_t t = 0; t < n; ++t) {
      if (!(den[t] > T(0))) continue;  // no visible key: nothing flows back
      const T* ht = hg + at(t);
      for (int64_t j = 0; j < s; ++j) {
        const int64_t u = t + offset(j);
        if (u < 0 || u >= n || !sc.vis[size_t(u)]) continue;
        const T e = causal_ ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(t)]) : sc.e[size_t(u)];
        const T c = omega[j] * e;
        const T* v = v_ + at(u);
        T* out = dv + at(u);
        T dot = 0;
        for (int64_t x = 0; x < dh; ++x) {
          out[x] += c * ht[x];
          dot += ht[x] * v[x];
        }
        dk[(b * n + u) * h + i] -= c * eta[size_t(t)];
        dwhat[j] += double(c * (dot - eta[size_t(t)]));
      }
    }
    // dK_t' += V_t'·dV_t'.
    for (int64_t t = 0; t < n; ++t) {
      if (!sc.vis[size_t(t)]) continue;
      const T* v = v_ + at(t);
      const T* g = dv + at(t);
      T dot = 0;
      for (int64_t x = 0; x < dh; ++x) dot += v[x] * g[x];
      dk[(b * n + t) * h + i] += dot;
    }
  }

};

// Runs f(b, i, scratch) for every (sample, head), in parallel above a size, one scratch per thread.
template <class T, class F>
void for_heads(int64_t B, int64_t n, int64_t d, int64_t h, F f) {
#pragma omp parallel if (B * h > 1 && B * n * d > 32768)
  {
    typename AftConvCore<T>::Scratch sc(n);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * h; ++bh) f(bh / h, bh % h, sc);
  }
}

}  // namespace

template <class T>
void aft_conv_forward(T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, T* o, T* r, T* den, T* m,
                      int64_t B, int64_t n, int64_t d, int64_t h, int64_t s, bool causal) {
  AftConvCore<T> core{n, d, h, s, causal, mask, k, v, omega, q, o, r, den, m};
  for_heads<T>(B, n, d, h, [&](int64_t b, int64_t i, auto& sc) { core.head_forward(b, i, sc); });
}

template <class T>
void aft_conv_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const T* omega, const T* r,
                       const T* den, const T* m, const T* d_o, T* dq, T* dk, T* dv, double* dwhat, int64_t B,
                       int64_t n, int64_t d, int64_t h, int64_t s, bool causal) {
  AftConvCore<T> core{n,       d, h, s, causal, mask, k, v, omega, const_cast<T*>(sg), nullptr, const_cast<T*>(r),
                      const_cast<T*>(den), const_cast<T*>(m)};
  std::vector<T> hg(static_cast<size_t>(B * n * d));
  std::vector<double> dwhat_part(static_cast<size_t>(B * h * s), 0.0);  // ∂loss/∂ŵ per (sample, head)
  for_heads<T>(B, n, d, h, [&](int64_t b, int64_t i, auto& sc) {
    core.head_backward(b, i, d_o, dq, dk, dv, hg.data(), dwhat_part.data() + (b * h + i) * s, sc);
  });
  std::fill(dwhat, dwhat + h * s, 0.0);
  for (int64_t b = 0; b < B; ++b)  // a fixed order: independent of the thread count
    for (int64_t e = 0; e < h * s; ++e) dwhat[e] += dwhat_part[size_t(b * h * s + e)];
}

template <class T>
void aft_conv_kernel_forward(const T* w, const T* gamma, const T* beta, T* omega, double* z, double* inv_std,
                             int64_t h, int64_t s, double eps) {
  for (int64_t i = 0; i < h; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < s; ++j) mean += double(w[i * s + j]);
    mean /= double(s);
    for (int64_t j = 0; j < s; ++j) var += (double(w[i * s + j]) - mean) * (double(w[i * s + j]) - mean);
    var /= double(s);
    inv_std[i] = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < s; ++j) {
      z[i * s + j] = (double(w[i * s + j]) - mean) * inv_std[i];
      omega[i * s + j] = T(std::exp(double(gamma[i]) * z[i * s + j] + double(beta[i])));
    }
  }
}

template <class T>
void aft_conv_kernel_backward(const T* gamma, const double* z, const double* inv_std, const double* dwhat, T* gw,
                              T* gg, T* gb, int64_t h, int64_t s) {
  for (int64_t i = 0; i < h; ++i) {
    double dg = 0, db = 0, mean_dz = 0, mean_dzz = 0;
    for (int64_t j = 0; j < s; ++j) {
      const double g = dwhat[i * s + j], zj = z[i * s + j];
      dg += g * zj;
      db += g;
      mean_dz += double(gamma[i]) * g;
      mean_dzz += double(gamma[i]) * g * zj;
    }
    mean_dz /= double(s);
    mean_dzz /= double(s);
    gg[i] += T(dg);
    gb[i] += T(db);
    // z = (w − μ)/σ with σ² = var + ε: ∂/∂w_j = (dz_j − mean(dz) − z_j mean(dz z)) / σ.
    for (int64_t j = 0; j < s; ++j) {
      const double dz = double(gamma[i]) * dwhat[i * s + j], zj = z[i * s + j];
      gw[i * s + j] += T((dz - mean_dz - zj * mean_dzz) * inv_std[i]);
    }
  }
}

namespace {

// The normalised weights p (n) of query t of (b, head i) over its visible keys; false when it sees
// none.
template <class T>
bool conv_ref_weights(const T* k, const uint8_t* mask, const T* omega, int64_t n, int64_t h, int64_t s, bool causal,
                      int64_t b, int64_t i, int64_t t, std::vector<double>& p) {
  const int64_t end = causal ? t + 1 : n, first = causal ? s - 1 : s / 2;  // tap j reaches u = t + j − first
  double mx = -INFINITY, sum = 0;
  for (int64_t u = 0; u < end; ++u)
    if (!mask || !mask[b * n + u]) mx = std::max(mx, double(k[(b * n + u) * h + i]));
  std::fill(p.begin(), p.end(), 0.0);
  if (mx == -INFINITY) return false;
  for (int64_t u = 0; u < end; ++u) {
    if (mask && mask[b * n + u]) continue;
    const int64_t j = u - t + first;
    const double kernel = j >= 0 && j < s ? double(omega[i * s + j]) : 1.0;
    sum += p[size_t(u)] = kernel * std::exp(double(k[(b * n + u) * h + i]) - mx);
  }
  for (double& e : p) e /= sum;
  return true;
}

double conv_ref_sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

}  // namespace

template <class T>
void aft_conv_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, T* o, int64_t B,
                          int64_t n, int64_t d, int64_t h, int64_t s, bool causal) {
  const int64_t dh = d / h;
  std::vector<double> p(static_cast<size_t>(n));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t t = 0; t < n; ++t) {
        const bool any = conv_ref_weights(k, mask, omega, n, h, s, causal, b, i, t, p);
        for (int64_t x = 0; x < dh; ++x) {
          double mean = 0;
          for (int64_t u = 0; any && u < n; ++u) mean += p[size_t(u)] * double(v[(b * n + u) * d + i * dh + x]);
          const int64_t e = (b * n + t) * d + i * dh + x;
          o[e] = T(conv_ref_sigmoid(double(q[e])) * mean);
        }
      }
}

template <class T>
void aft_conv_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* omega, const T* d_o,
                           T* dq, T* dk, T* dv, double* dwhat, int64_t B, int64_t n, int64_t d, int64_t h, int64_t s,
                           bool causal) {
  const int64_t dh = d / h, first = causal ? s - 1 : s / 2;
  std::vector<double> p(static_cast<size_t>(n)), r(static_cast<size_t>(dh)), g(static_cast<size_t>(dh));
  std::vector<double> gk(static_cast<size_t>(B * n * h), 0.0), gv(static_cast<size_t>(B * n * d), 0.0);
  std::fill(dwhat, dwhat + h * s, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t t = 0; t < n; ++t) {
        const bool any = conv_ref_weights(k, mask, omega, n, h, s, causal, b, i, t, p);
        double gr = 0;  // g · r
        for (int64_t x = 0; x < dh; ++x) {
          const int64_t e = (b * n + t) * d + i * dh + x;
          r[size_t(x)] = 0;
          for (int64_t u = 0; any && u < n; ++u) r[size_t(x)] += p[size_t(u)] * double(v[(b * n + u) * d + i * dh + x]);
          const double sg = conv_ref_sigmoid(double(q[e]));
          g[size_t(x)] = double(d_o[e]) * sg;
          dq[e] = T(double(d_o[e]) * r[size_t(x)] * sg * (1 - sg));
          gr += g[size_t(x)] * r[size_t(x)];
        }
        if (!any) continue;
        // Key u: dV_u += p_u g; its log-weight (K_u, and ŵ_j inside the window) gets p_u (g·V_u − g·r).
        for (int64_t u = 0; u < n; ++u) {
          double gvu = 0;
          for (int64_t x = 0; x < dh; ++x) {
            gvu += g[size_t(x)] * double(v[(b * n + u) * d + i * dh + x]);
            gv[size_t((b * n + u) * d + i * dh + x)] += p[size_t(u)] * g[size_t(x)];
          }
          const double dlog = p[size_t(u)] * (gvu - gr);
          gk[size_t((b * n + u) * h + i)] += dlog;
          const int64_t j = u - t + first;
          if (j >= 0 && j < s) dwhat[i * s + j] += dlog;
        }
      }
  for (size_t e = 0; e < gk.size(); ++e) dk[e] = T(gk[e]);
  for (size_t e = 0; e < gv.size(); ++e) dv[e] = T(gv[e]);
}

#define LF_INSTANTIATE(T)                                                                                            \
  template void aft_conv_forward<T>(T*, const T*, const T*, const uint8_t*, const T*, T*, T*, T*, T*, int64_t,       \
                                    int64_t, int64_t, int64_t, int64_t, bool);                                       \
  template void aft_conv_backward<T>(const T*, const T*, const T*, const uint8_t*, const T*, const T*, const T*,     \
                                     const T*, const T*, T*, T*, T*, double*, int64_t, int64_t, int64_t, int64_t,    \
                                     int64_t, bool);                                                                 \
  template void aft_conv_kernel_forward<T>(const T*, const T*, const T*, T*, double*, double*, int64_t, int64_t,     \
                                           double);                                                                  \
  template void aft_conv_kernel_backward<T>(const T*, const double*, const double*, const double*, T*, T*, T*,       \
                                            int64_t, int64_t);                                                       \
  template void aft_conv_forward_ref<T>(const T*, const T*, const T*, const uint8_t*, const T*, T*, int64_t,         \
                                        int64_t, int64_t, int64_t, int64_t, bool);                                   \
  template void aft_conv_backward_ref<T>(const T*, const T*, const T*, const uint8_t*, const T*, const T*, T*, T*,   \
                                         T*, double*, int64_t, int64_t, int64_t, int64_t, int64_t, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
