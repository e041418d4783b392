// The cores of AFT-full and AFT-local, moved from their kind (src/attention/aft_position.cpp, whose
// opening comment has the method) as they were: the same operations, order and threading.
#include "cpu/aft_position.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr int64_t kChunk = 64;  // channels per task in the scans and scatters

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// exp(a − b) for a ≤ b, 0 when a = −inf (where −inf − −inf would give NaN).
template <class T>
inline T exp_below(T a, T b) {
  return a == neg_inf<T>() ? T(0) : exp_fast<T>(a - b);
}

// Denominators below this take the exact path (see the header).
template <class T>
T denominator_floor(int64_t n) {
  return T(4.0 * double(n) * double(std::numeric_limits<T>::min()) / double(std::numeric_limits<T>::epsilon()));
}
// ---- the exact path of one (sample, row, channel) -----------------------------------------------

// A = Σ_t' softmax(K_t' + bias(t')) V_t' over the visible keys t' < kend, in double with the maximum
// subtracted; 0 when no key is visible. k, v: channel c of the sample (stride d).
template <class T, class Bias>
T exact_output(const T* k, const T* v, int64_t d, const uint8_t* valid, int64_t kend, const Bias& bias) {
  double mx = -INFINITY;
  for (int64_t u = 0; u < kend; ++u)
    if (valid[u]) mx = std::max(mx, double(k[u * d]) + double(bias(u)));
  if (mx == -INFINITY) return T(0);
  double num = 0, den = 0;
  for (int64_t u = 0; u < kend; ++u) {
    if (!valid[u]) continue;
    const double e = std::exp(double(k[u * d]) + double(bias(u)) - mx);
    num += e * double(v[u * d]);
    den += e;
  }
  return T(num / den);
}

// Its backward for dL/dA = g: add(t', g·P_t', g·P_t'·(V_t' − A)) for every visible key, the
// contributions to dV_t'c and to dK_t'c (= dw_tt' for this channel).
template <class T, class Bias, class Add>
void exact_output_backward(const T* k, const T* v, int64_t d, const uint8_t* valid, int64_t kend, const Bias& bias,
                           double a, double g, const Add& add) {
  double mx = -INFINITY;
  for (int64_t u = 0; u < kend; ++u)
    if (valid[u]) mx = std::max(mx, double(k[u * d]) + double(bias(u)));
  if (mx == -INFINITY) return;
  double den = 0;
  for (int64_t u = 0; u < kend; ++u)
    if (valid[u]) den += std::exp(double(k[u * d]) + double(bias(u)) - mx);
  for (int64_t u = 0; u < kend; ++u) {
    if (!valid[u]) continue;
    const double gp = g * std::exp(double(k[u * d]) + double(bias(u)) - mx) / den;
    add(u, T(gp), T(gp * (double(v[u * d]) - a)));
  }
}

// ---- what both kinds share: the gate σ(Q), the key maxima ---------------------------------------

// One call's tensors: K, V (B, n, d), the visibility of the keys, A and the shifted denominators.
template <class T>
class AftCore {
 public:
  AftCore(const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* a, T* den, int64_t B,
          int64_t n, int64_t d, int64_t row_block, bool causal)
      : B_(B), n_(n), d_(d), R_(row_block), causal_(causal), k_(k), v_(v), a_(a), den_(den), bias_(bias),
        valid_(static_cast<size_t>(B * n), 1) {
    if (mask)
      for (int64_t i = 0; i < B * n; ++i) valid_[size_t(i)] = mask[i] ? 0 : 1;
  }

  void set_bias_grad(const AftPositionBiasGrad<T>& grad) { grad_ = grad; }

  // q (B, n, d) becomes σ(Q).
  void gate(T* q) const {
    const int64_t total = B_ * n_ * d_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; ++i) q[i] = T(1) / (T(1) + exp_fast<T>(-q[i]));
  }
  // o = σ(Q) ⊙ A.
  void gate_output(const T* sg, T* o) const {
    for (int64_t i = 0; i < B_ * n_ * d_; ++i) o[i] = sg[i] * a_[i];
  }
  // From d_y = dL/dY: dq, and d_y becomes H = dL/dA; dk, dv zeroed for the core's sums.
  void gate_backward(const T* sg, T* d_y, T* dq, T* dk, T* dv) const {
    const int64_t total = B_ * n_ * d_;
    for (int64_t i = 0; i < total; ++i) {
      const T s = sg[i], dy = d_y[i];
      dq[i] = dy * a_[i] * s * (T(1) - s);
      d_y[i] = dy * s;
    }
    std::fill(dk, dk + total, T(0));
    std::fill(dv, dv + total, T(0));
  }

 protected:
  // Whether element idx (of (B, n, d)) took the exact path: its shifted denominator is below the floor.
  bool on_exact_path(int64_t idx, T floor) const { return !(den_[size_t(idx)] >= floor); }

  // m (B, n, d): the running maximum of K over the visible keys t' ≤ t (−inf before the first).
  void running_max(T* m) const {
    const int64_t d = d_;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t t = 0; t < n_; ++t) {
        const int64_t row = (b * n_ + t) * d;
        const bool ok = valid_[size_t(b * n_ + t)];
        for (int64_t c = 0; c < d; ++c) {
          const T prev = t > 0 ? m[size_t(row - d + c)] : neg_inf<T>();
          m[size_t(row + c)] = ok ? std::max(prev, k_[size_t(row + c)]) : prev;
        }
      }
  }

  // (B, d): the maximum of K over the visible keys of each sample and channel.
  std::vector<T> key_max() const {
    const int64_t d = d_;
    std::vector<T> m(static_cast<size_t>(B_ * d), neg_inf<T>());
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t t = 0; t < n_; ++t)
        if (valid_[size_t(b * n_ + t)])
          for (int64_t c = 0; c < d; ++c)
            m[size_t(b * d + c)] = std::max(m[size_t(b * d + c)], k_[size_t((b * n_ + t) * d + c)]);
    return m;
  }
  // Key row u's share of a query's sums (d channels): e = a · exp(K_u − m), N += e ⊙ V_u, D += e.
  void add_key(T a, const T* kr, const T* m, const T* vr, T* N, T* D) const {
    const int64_t d = d_;
    for (int64_t c = 0; c < d; ++c) {
      const T e = a * exp_fast<T>(kr[c] - m[c]);
      N[c] += e * vr[c];
      D[c] += e;
    }
  }


  int64_t B_, n_, d_;
  const int64_t R_;  // query rows per block
  bool causal_;
  const T *k_, *v_;
  T *a_, *den_;  // (B, n, d): A (before the gate) and the shifted denominators
  AftPositionBias<T> bias_;
  AftPositionBiasGrad<T> grad_;  // the backward's
  std::vector<uint8_t> valid_;   // (B, n): 1 = a real key
};

// ---- aft_full -----------------------------------------------------------------------------------

template <class T>
class AftFullCore final : public AftCore<T> {
  using Base = AftCore<T>;
  using Base::a_, Base::B_, Base::R_, Base::den_, Base::d_, Base::causal_, Base::k_, Base::n_, Base::v_, Base::valid_,
      Base::bias_, Base::grad_;

 public:
  AftFullCore(const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* a, T* den, T* keys,
              int64_t B, int64_t n, int64_t d, int64_t row_block, bool causal)
      : Base(k, v, mask, bias, a, den, B, n, d, row_block, causal), F_(keys) {}

  void core_forward() {
    const int64_t n = n_, d = d_, BD = B_ * 2 * d;
    const bool causal = causal_;
    const T floor = denominator_floor<T>(n);
    start_keys();
    wblk_.resize(size_t(R_ * n));
    ew_.resize(size_t(R_ * n));
    std::vector<T> nd(static_cast<size_t>(R_ * BD));
    for (int64_t r0 = 0; r0 < n; r0 += R_) {
      const int64_t r1 = std::min(n, r0 + R_), rows = r1 - r0, ncols = causal ? r1 : n, kend = causal ? r0 : n;
      bias_rows(r0, r1, ncols);
      if (causal) shift_keys(r0);
      // [N | D] per sample for the block's rows: exp(w) · [exp(K)⊙V | exp(K)] over the GEMM's keys.
      if (kend > 0)
        gemm<T>(false, false, rows, BD, kend, T(1), ew_.data(), ncols, F_, BD, T(0), nd.data(), BD);
      else
        std::fill(nd.begin(), nd.end(), T(0));
#pragma omp parallel for schedule(static, 1)
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t t = r0 + i;
        for (int64_t b = 0; b < B_; ++b) {
          T* N = nd.data() + i * BD + b * 2 * d;
          T* D = N + d;
          if (causal) own_block_forward(b, t, r0, i, ncols, N, D);
          const int64_t row = (b * n + t) * d;
          for (int64_t c = 0; c < d; ++c) {
            den_[size_t(row + c)] = D[c];
            a_[size_t(row + c)] = D[c] >= floor ? N[c] / D[c] : exact_value(b, t, c, i, ncols);
          }
        }
      }
    }
  }

  void core_backward(const T* h, T* dk, T* dv) {
    const int64_t n = n_, d = d_, BD = B_ * 2 * d, r = bias_.rank;
    const bool causal = causal_;
    const T floor = denominator_floor<T>(n);
    if (causal) start_keys();  // replays the forward's shifts; non-causal F_ was kept
    wblk_.resize(size_t(R_ * n));
    ew_.resize(size_t(R_ * n));
    std::vector<T> dw(static_cast<size_t>(R_ * n)), L(static_cast<size_t>(R_ * BD)),
        Z(static_cast<size_t>(n * BD), T(0));
    rho_.resize(size_t(B_ * n * d));  // ρ = H/D, 0 on the exact path
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < B_ * n * d; ++j)
      rho_[size_t(j)] = this->on_exact_path(j, floor) ? T(0) : h[j] / den_[size_t(j)];
    for (int64_t r0 = 0; r0 < n; r0 += R_) {
      const int64_t r1 = std::min(n, r0 + R_), rows = r1 - r0, ncols = causal ? r1 : n, kend = causal ? r0 : n;
      bias_rows(r0, r1, ncols);
      if (causal) shift_keys(r0);
      // L = [ρs | −ρs⊙A] (s: the causal rescale of the GEMM's keys, 1 otherwise).
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t t = r0 + i;
        for (int64_t b = 0; b < B_; ++b) {
          const int64_t row = (b * n + t) * d;
          T* l = L.data() + i * BD + b * 2 * d;
          for (int64_t c = 0; c < d; ++c) {
            T rho = rho_[size_t(row + c)];
            if (causal)
              rho *= r0 > 0 ? exp_below(mrun_[size_t((b * n + r0 - 1) * d + c)], mrun_[size_t(row + c)]) : T(0);
            l[c] = rho;
            l[d + c] = -rho * a_[size_t(row + c)];
          }
        }
      }
      if (kend > 0) {
        // dw (rows × kend) = exp(w) ⊙ (L · Fᵀ); Z = exp(w)ᵀ L gives dV = F₂⊙Z₁, dK = F₁⊙Z₁ + F₂⊙Z₂.
        gemm<T>(false, true, rows, kend, BD, T(1), L.data(), BD, F_, BD, T(0), dw.data(), ncols);
        gemm<T>(true, false, kend, BD, rows, T(1), ew_.data(), ncols, L.data(), BD, causal ? T(0) : T(1), Z.data(), BD);
        if (causal) key_grads(Z.data(), kend, dk, dv);  // the table changes shift from block to block
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t u = 0; u < kend; ++u) dw[size_t(i * ncols + u)] *= ew_[size_t(i * ncols + u)];
      }
      if (causal) own_block_backward(r0, r1, ncols, dk, dv, dw.data());
      // The exact path's elements, in a fixed order.
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t t = r0 + i;
        for (int64_t b = 0; b < B_; ++b)
          for (int64_t c = 0; c < d; ++c) {
            const int64_t idx = (b * n + t) * d + c;
            if (!this->on_exact_path(idx, floor)) continue;
            const T* wr = wblk_.data() + i * ncols;
            exact_output_backward(
                k_ + b * n * d + c, v_ + b * n * d + c, d, valid_.data() + b * n, causal ? t + 1 : n,
                [wr](int64_t u) { return wr[u]; }, double(a_[size_t(idx)]), double(h[idx]),
                [&](int64_t u, T gv, T gk) {
                  dv[(b * n + u) * d + c] += gv;
                  dk[(b * n + u) * d + c] += gk;
                  dw[size_t(i * ncols + u)] += gk;
                });
          }
      }
      // The bias: dU = dw V, dV += dwᵀ U (or dw itself).
      if (r > 0) {
        const T* U = bias_.u;
        const T* P = bias_.v;
        gemm<T>(false, false, rows, r, ncols, T(1), dw.data(), ncols, P, r, T(1), grad_.u + r0 * r, r);
        gemm<T>(true, false, ncols, r, rows, T(1), dw.data(), ncols, U + r0 * r, r, T(1), grad_.v, r);
      } else {
        T* gw = grad_.w;
        const int64_t Lm = bias_.max_len;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t u = 0; u < ncols; ++u) gw[(r0 + i) * Lm + u] += dw[size_t(i * ncols + u)];
      }
    }
    if (!causal) key_grads(Z.data(), n, dk, dv);
  }

  // The key table F (n × B·2d): row t', sample b: [exp(K − m)⊙V | exp(K − m)], 0 at padding.
  // Non-causal: m = the maximum over the sample's keys, built here. Causal: built block by block by
  // shift_keys.
  void start_keys() {
    const int64_t n = n_, d = d_, BD = B_ * 2 * d;
    std::fill(F_, F_ + n * BD, T(0));
    if (causal_) {
      mrun_.resize(size_t(B_ * n_ * d_));
      this->running_max(mrun_.data());
      mcur_.assign(size_t(B_ * d), neg_inf<T>());
      built_ = 0;
      return;
    }
    const std::vector<T> m = this->key_max();
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < n; ++u) fill_key_row(u, m.data(), nullptr);
  }

  // Causal: F's rows t' < r0 at the shift m = the running maximum at r0 − 1. Rows built for an
  // earlier block are redone only in the channels whose maximum has grown since.
  void shift_keys(int64_t r0) {
    const int64_t d = d_;
    std::vector<T> m(static_cast<size_t>(B_ * d));
    std::vector<uint8_t> changed(static_cast<size_t>(B_ * d));
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t c = 0; c < d; ++c) {
        const size_t j = size_t(b * d + c);
        m[j] = r0 > 0 ? mrun_[size_t((b * n_ + r0 - 1) * d + c)] : neg_inf<T>();
        changed[j] = m[j] != mcur_[j];
      }
    const int64_t built = built_;
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < r0; ++u) fill_key_row(u, m.data(), u < built ? changed.data() : nullptr);
    mcur_ = m;
    built_ = r0;
  }

  // Row u of F at the shifts m (B × d); only the channels flagged in `only` when given.
  void fill_key_row(int64_t u, const T* m, const uint8_t* only) {
    const int64_t d = d_, BD = B_ * 2 * d;
    for (int64_t b = 0; b < B_; ++b) {
      T* f = F_ + u * BD + b * 2 * d;
      const T* kr = k_ + (b * n_ + u) * d;
      const T* vr = v_ + (b * n_ + u) * d;
      const bool ok = valid_[size_t(b * n_ + u)];
      for (int64_t c = 0; c < d; ++c) {
        if (only && !only[b * d + c]) continue;
        const T e = ok ? exp_fast<T>(kr[c] - m[b * d + c]) : T(0);
        f[c] = ok ? e * vr[c] : T(0);
        f[d + c] = e;
      }
    }
  }

  // wblk_ (rows × ncols) = w[r0:r1, :ncols]; ew_ = exp(w − row maximum), 0 at t' > t when causal.
  void bias_rows(int64_t r0, int64_t r1, int64_t ncols) {
    const int64_t rows = r1 - r0, r = bias_.rank, Lm = bias_.max_len;
    T* w = wblk_.data();
    if (r > 0) {
      gemm<T>(false, true, rows, ncols, r, T(1), bias_.u + r0 * r, r, bias_.v, r, T(0), w, ncols);
    } else {
      const T* W = bias_.w;
      for (int64_t i = 0; i < rows; ++i) std::copy(W + (r0 + i) * Lm, W + (r0 + i) * Lm + ncols, w + i * ncols);
    }
    const bool causal = causal_;
    T* ew = ew_.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t lim = causal ? r0 + i + 1 : ncols;
      const T* wr = w + i * ncols;
      T* er = ew + i * ncols;
      T mx = wr[0];
      for (int64_t u = 1; u < lim; ++u) mx = std::max(mx, wr[u]);
      for (int64_t u = 0; u < lim; ++u) er[u] = exp_fast<T>(wr[u] - mx);
      std::fill(er + lim, er + ncols, T(0));
    }
  }

  // Causal, row t of the block starting at r0: the GEMM's sums (keys < r0, shift m_{r0−1}) rescaled to
  // the running maximum m_t, plus the block's own keys r0 ≤ t' ≤ t.
  void own_block_forward(int64_t b, int64_t t, int64_t r0, int64_t i, int64_t ncols, T* N, T* D) const {
    const int64_t d = d_, n = n_;
    const T* m = mrun_.data() + (b * n + t) * d;
    for (int64_t c = 0; c < d; ++c) {
      const T s = r0 > 0 ? exp_below(mrun_[size_t((b * n + r0 - 1) * d + c)], m[c]) : T(0);
      N[c] *= s;
      D[c] *= s;
    }
    for (int64_t u = r0; u <= t; ++u) {
      if (!valid_[size_t(b * n + u)]) continue;
      this->add_key(ew_[size_t(i * ncols + u)], k_ + (b * n + u) * d, m, v_ + (b * n + u) * d, N, D);
    }
  }

  // Its backward: for each key u of the block (one thread per u, so no two threads add to one row),
  // the rows t ≥ u of the block; dw's columns r0..r1 (0 above the diagonal).
  void own_block_backward(int64_t r0, int64_t r1, int64_t ncols, T* dk, T* dv, T* dw) const {
    const int64_t d = d_, n = n_;
#pragma omp parallel for schedule(static, 1)
    for (int64_t u = r0; u < r1; ++u) {
      for (int64_t t = r0; t < u; ++t) dw[(t - r0) * ncols + u] = T(0);
      for (int64_t t = u; t < r1; ++t) {
        const int64_t i = t - r0;
        const T a = ew_[size_t(i * ncols + u)];
        T acc = 0;
        for (int64_t b = 0; b < B_; ++b) {
          if (!valid_[size_t(b * n + u)]) continue;
          const int64_t row = (b * n + t) * d, key = (b * n + u) * d;
          const T *kr = k_ + key, *vr = v_ + key, *m = mrun_.data() + row, *rr = rho_.data() + row,
                  *ar = a_ + row;
          T *dvr = dv + key, *dkr = dk + key;
#pragma omp simd reduction(+ : acc)
          for (int64_t c = 0; c < d; ++c) {
            const T g = a * exp_fast<T>(kr[c] - m[c]) * rr[c];
            const T gk = g * (vr[c] - ar[c]);
            dvr[c] += g;
            dkr[c] += gk;
            acc += gk;
          }
        }
        dw[i * ncols + u] = acc;
      }
    }
  }

  // dV += F₂ ⊙ Z₁, dK += F₁ ⊙ Z₁ + F₂ ⊙ Z₂ for the keys u < kend (Z: kend × B·2d, as L's columns).
  void key_grads(const T* Z, int64_t kend, T* dk, T* dv) const {
    const int64_t d = d_, BD = B_ * 2 * d;
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < kend; ++u)
      for (int64_t b = 0; b < B_; ++b) {
        const T* f = F_ + u * BD + b * 2 * d;
        const T* z = Z + u * BD + b * 2 * d;
        const int64_t key = (b * n_ + u) * d;
        for (int64_t c = 0; c < d; ++c) {
          dv[key + c] += f[d + c] * z[c];
          dk[key + c] += f[c] * z[c] + f[d + c] * z[d + c];
        }
      }
  }

  T exact_value(int64_t b, int64_t t, int64_t c, int64_t i, int64_t ncols) const {
    const int64_t d = d_;
    const T* wr = wblk_.data() + i * ncols;
    return exact_output(k_ + b * n_ * d + c, v_ + b * n_ * d + c, d, valid_.data() + b * n_,
                        causal_ ? t + 1 : n_, [wr](int64_t u) { return wr[u]; });
  }

  T* F_;                      // (n, B, 2d) key table
  std::vector<T> mrun_;       // causal: (B, n, d) running maximum of K
  std::vector<T> mcur_;       // causal: (B, d) the shift F_ is built at
  int64_t built_ = 0;         // causal: F_'s rows < built_ exist
  std::vector<T> wblk_, ew_;  // (R, ncols): w and exp(w − row max) of the current block
  std::vector<T> rho_;        // backward: (B, n, d) H/D (0 on the exact path)
};

// ---- aft_local ----------------------------------------------------------------------------------

template <class T>
class AftLocalCore final : public AftCore<T> {
  using Base = AftCore<T>;
  using Base::a_, Base::B_, Base::R_, Base::den_, Base::d_, Base::causal_, Base::k_, Base::n_, Base::v_, Base::valid_,
      Base::bias_, Base::grad_;

 public:
  AftLocalCore(const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* a, T* den,
               T* key_state, int64_t B, int64_t n, int64_t d, int64_t window, int64_t row_block, bool causal)
      : Base(k, v, mask, bias, a, den, B, n, d, row_block, causal),
        s_(window),
        W_(causal ? window : 2 * window - 1),
        ek_(key_state),
        mrun_(key_state) {}

  int64_t lo(int64_t t) const { return std::max<int64_t>(0, t - s_ + 1); }
  int64_t hi(int64_t t) const { return causal_ ? t + 1 : std::min(n_, t + s_); }

  // exp(K_t'c − m) of window key u in row t, for channels c0 ≤ c < c1 (read as p[c]): m is the
  // sample's maximum (non-causal: the kept ek_) or the running maximum at t (causal: into scratch).
  const T* key_weights(int64_t b, int64_t t, int64_t u, int64_t c0, int64_t c1, T* scratch) const {
    const int64_t d = d_;
    if (!causal_) return ek_ + (b * n_ + u) * d;
    const T* kr = k_ + (b * n_ + u) * d;
    const T* m = mrun_ + (b * n_ + t) * d;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) scratch[c] = exp_fast<T>(kr[c] - m[c]);
    return scratch;
  }

  void core_forward() {
    const int64_t n = n_, d = d_;
    const bool causal = causal_;
    const T floor = denominator_floor<T>(n);
    // The keys outside the window, into a_ (numerator) and den_ (denominator), unscaled by β_t yet.
    std::fill(a_, a_ + B_ * n * d, T(0));
    std::fill(den_, den_ + B_ * n * d, T(0));
    if (causal) {
      this->running_max(mrun_);
      outside_forward_causal();
    } else {
      const std::vector<T> m = this->key_max();
      for (int64_t b = 0; b < B_; ++b)
        for (int64_t u = 0; u < n; ++u) {
          const bool ok = valid_[size_t(b * n + u)];
          for (int64_t c = 0; c < d; ++c) {
            const size_t j = size_t((b * n + u) * d + c);
            ek_[j] = ok ? exp_fast<T>(k_[j] - m[size_t(b * d + c)]) : T(0);
          }
        }
      outside_forward();
    }
    beta_.resize(size_t(n));
    for (int64_t r0 = 0; r0 < n; r0 += R_) {
      const int64_t r1 = std::min(n, r0 + R_);
      band_rows(r0, r1);
#pragma omp parallel for schedule(static)
      for (int64_t t = r0; t < r1; ++t) {
        const int64_t i = t - r0, l = lo(t), h = hi(t);
        const T beta = beta_[size_t(t)];
        for (int64_t b = 0; b < B_; ++b) {
          T* N = a_ + (b * n + t) * d;
          T* D = den_ + (b * n + t) * d;
          for (int64_t c = 0; c < d; ++c) {
            N[c] *= beta;
            D[c] *= beta;
          }
          for (int64_t u = l; u < h; ++u) {
            if (!valid_[size_t(b * n + u)]) continue;
            const T al = al_[size_t(i * W_ + u - t + s_ - 1)];
            const T* vr = v_ + (b * n + u) * d;
            if (causal) {
              this->add_key(al, k_ + (b * n + u) * d, mrun_ + (b * n + t) * d, vr, N, D);
            } else {
              const T* er = ek_ + (b * n + u) * d;
              for (int64_t c = 0; c < d; ++c) {
                const T e = al * er[c];
                N[c] += e * vr[c];
                D[c] += e;
              }
            }
          }
          for (int64_t c = 0; c < d; ++c) N[c] = D[c] >= floor ? N[c] / D[c] : exact_value(b, t, c, i);
        }
      }
    }
  }

  // Non-causal: Σ_{t' ≤ t−s} and Σ_{t' ≥ t+s} of exp(K − m)⊙V and exp(K − m), by a forward and a
  // backward running sum per (sample, channel chunk).
  void outside_forward() {
    const int64_t n = n_, d = d_, chunks = (d + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B_ * chunks; ++task) {
      const int64_t b = task / chunks, c0 = task % chunks * kChunk, c1 = std::min(d, c0 + kChunk);
      T sn[kChunk] = {}, sd[kChunk] = {};
      for (int64_t u = 0; u + s_ < n; ++u) {  // after key u: row u + s
        const int64_t key = (b * n + u) * d, row = (b * n + u + s_) * d;
        for (int64_t c = c0; c < c1; ++c) {
          sn[c - c0] += ek_[size_t(key + c)] * v_[size_t(key + c)];
          sd[c - c0] += ek_[size_t(key + c)];
          a_[size_t(row + c)] += sn[c - c0];
          den_[size_t(row + c)] += sd[c - c0];
        }
      }
      std::fill(sn, sn + kChunk, T(0));
      std::fill(sd, sd + kChunk, T(0));
      for (int64_t u = n - 1; u >= s_; --u) {  // after key u (from the end): row u − s
        const int64_t key = (b * n + u) * d, row = (b * n + u - s_) * d;
        for (int64_t c = c0; c < c1; ++c) {
          sn[c - c0] += ek_[size_t(key + c)] * v_[size_t(key + c)];
          sd[c - c0] += ek_[size_t(key + c)];
          a_[size_t(row + c)] += sn[c - c0];
          den_[size_t(row + c)] += sd[c - c0];
        }
      }
    }
  }

  // Causal: P_u = Σ_{t' ≤ u} exp(K_t' − m_u)(V_t', 1), rescaled as the running maximum m grows; row
  // t = u + s receives P_u · exp(m_u − m_t).
  void outside_forward_causal() {
    const int64_t n = n_, d = d_, chunks = (d + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B_ * chunks; ++task) {
      const int64_t b = task / chunks, c0 = task % chunks * kChunk, c1 = std::min(d, c0 + kChunk);
      T sn[kChunk] = {}, sd[kChunk] = {};
      for (int64_t u = 0; u + s_ < n; ++u) {
        const int64_t key = (b * n + u) * d, row = (b * n + u + s_) * d;
        const bool ok = valid_[size_t(b * n + u)];
        for (int64_t c = c0; c < c1; ++c) {
          const T m = mrun_[size_t(key + c)];
          const T f = u > 0 ? exp_below(mrun_[size_t(key - d + c)], m) : T(0);
          const T e = ok ? exp_fast<T>(k_[size_t(key + c)] - m) : T(0);
          sn[c - c0] = sn[c - c0] * f + (ok ? e * v_[size_t(key + c)] : T(0));
          sd[c - c0] = sd[c - c0] * f + e;
          const T g = exp_below(m, mrun_[size_t(row + c)]);
          a_[size_t(row + c)] = sn[c - c0] * g;
          den_[size_t(row + c)] = sd[c - c0] * g;
        }
      }
    }
  }

  void core_backward(const T* h, T* dk, T* dv) {
    const int64_t n = n_, d = d_, chunks = (d + kChunk - 1) / kChunk;
    const bool causal = causal_;
    const T floor = denominator_floor<T>(n);
    rho_.resize(size_t(B_ * n * d));
    beta_.resize(size_t(n));  // band_rows recomputes the forward's β block by block
    for (int64_t j = 0; j < B_ * n * d; ++j)
      rho_[size_t(j)] = this->on_exact_path(j, floor) ? T(0) : h[j] / den_[size_t(j)];
    std::vector<T> dw(static_cast<size_t>(R_ * W_));
    for (int64_t r0 = 0; r0 < n; r0 += R_) {
      const int64_t r1 = std::min(n, r0 + R_);
      band_rows(r0, r1);
      // dw_tt' = α_tt' Σ_b Σ_c exp(K_t'c − m) ρ_tc (V_t'c − A_tc), one row per thread.
#pragma omp parallel
      {
        std::vector<T> scratch(static_cast<size_t>(d));
#pragma omp for schedule(static)
        for (int64_t t = r0; t < r1; ++t) {
          const int64_t i = t - r0, l = lo(t), hh = hi(t);
          T* dwr = dw.data() + i * W_;
          std::fill(dwr, dwr + W_, T(0));
          for (int64_t u = l; u < hh; ++u) {
            T acc = 0;
            for (int64_t b = 0; b < B_; ++b) {
              if (!valid_[size_t(b * n + u)]) continue;
              const int64_t row = (b * n + t) * d, key = (b * n + u) * d;
              const T *e = key_weights(b, t, u, 0, d, scratch.data()), *rr = rho_.data() + row, *vr = v_ + key,
                      *ar = a_ + row;
#pragma omp simd reduction(+ : acc)
              for (int64_t c = 0; c < d; ++c) acc += e[c] * rr[c] * (vr[c] - ar[c]);
            }
            dwr[u - t + s_ - 1] = al_[size_t(i * W_ + u - t + s_ - 1)] * acc;
          }
        }
      }
      // dV, dK of the window keys: one (sample, channel chunk) per thread, rows in order.
#pragma omp parallel
      {
        std::vector<T> scratch(static_cast<size_t>(d));
#pragma omp for schedule(static)
        for (int64_t task = 0; task < B_ * chunks; ++task) {
          const int64_t b = task / chunks, c0 = task % chunks * kChunk, c1 = std::min(d, c0 + kChunk);
          for (int64_t t = r0; t < r1; ++t) {
            const int64_t i = t - r0, row = (b * n + t) * d;
            for (int64_t u = lo(t); u < hi(t); ++u) {
              if (!valid_[size_t(b * n + u)]) continue;
              const T al = al_[size_t(i * W_ + u - t + s_ - 1)];
              const int64_t key = (b * n + u) * d;
              const T *e = key_weights(b, t, u, c0, c1, scratch.data()), *rr = rho_.data() + row, *vr = v_ + key,
                      *ar = a_ + row;
              T *dvr = dv + key, *dkr = dk + key;
#pragma omp simd
              for (int64_t c = c0; c < c1; ++c) {
                const T g = al * e[c] * rr[c];
                dvr[c] += g;
                dkr[c] += g * (vr[c] - ar[c]);
              }
            }
          }
        }
      }
      // The exact path's elements, in a fixed order.
      for (int64_t t = r0; t < r1; ++t) {
        const int64_t i = t - r0;
        for (int64_t b = 0; b < B_; ++b)
          for (int64_t c = 0; c < d; ++c) {
            const int64_t idx = (b * n + t) * d + c;
            if (!this->on_exact_path(idx, floor)) continue;
            exact_output_backward(k_ + b * n * d + c, v_ + b * n * d + c, d, valid_.data() + b * n,
                                  causal ? t + 1 : n, bias_fn(t, i), double(a_[size_t(idx)]), double(h[idx]),
                                  [&](int64_t u, T gv, T gk) {
                                    dv[(b * n + u) * d + c] += gv;
                                    dk[(b * n + u) * d + c] += gk;
                                    if (u >= lo(t) && u < hi(t)) dw[size_t(i * W_ + u - t + s_ - 1)] += gk;
                                  });
          }
      }
      band_grads(r0, r1, dw.data());
    }
    if (causal)
      outside_backward_causal(dk, dv);
    else
      outside_backward(dk, dv);
  }

  // Non-causal, keys outside the window: dV_t' += exp(K_t' − m) Σ_{|t−t'|≥s} β_t ρ_t, dK_t' likewise
  // with (V_t' − A_t), by running sums over the rows.
  void outside_backward(T* dk, T* dv) const {
    const int64_t n = n_, d = d_, chunks = (d + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B_ * chunks; ++task) {
      const int64_t b = task / chunks, c0 = task % chunks * kChunk, c1 = std::min(d, c0 + kChunk);
      for (int pass = 0; pass < 2; ++pass) {
        T s1[kChunk] = {}, s2[kChunk] = {};
        for (int64_t step = 0; step + s_ < n; ++step) {
          const int64_t t = pass == 0 ? step : n - 1 - step, u = pass == 0 ? t + s_ : t - s_;  // row t, then key u
          const T beta = beta_[size_t(t)];
          const int64_t row = (b * n + t) * d, key = (b * n + u) * d;
          for (int64_t c = c0; c < c1; ++c) {
            const T rb = beta * rho_[size_t(row + c)];
            s1[c - c0] += rb;
            s2[c - c0] += rb * a_[size_t(row + c)];
            const T e = ek_[size_t(key + c)];
            dv[key + c] += e * s1[c - c0];
            dk[key + c] += e * (v_[size_t(key + c)] * s1[c - c0] - s2[c - c0]);
          }
        }
      }
    }
  }

  // Causal: S_u = Σ_{t ≥ u} β_t ρ_t exp(m_u − m_t) by a backward running sum; key t' = u − s gets
  // exp(K_t' − m_u) S_u.
  void outside_backward_causal(T* dk, T* dv) const {
    const int64_t n = n_, d = d_, chunks = (d + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B_ * chunks; ++task) {
      const int64_t b = task / chunks, c0 = task % chunks * kChunk, c1 = std::min(d, c0 + kChunk);
      T s1[kChunk] = {}, s2[kChunk] = {};
      for (int64_t u = n - 1; u >= s_; --u) {
        const T beta = beta_[size_t(u)];
        const int64_t row = (b * n + u) * d, key = (b * n + u - s_) * d;
        const bool ok = valid_[size_t(b * n + u - s_)];
        for (int64_t c = c0; c < c1; ++c) {
          const T m = mrun_[size_t(row + c)];
          const T f = u + 1 < n ? exp_below(m, mrun_[size_t(row + d + c)]) : T(0);
          const T rb = beta * rho_[size_t(row + c)];
          s1[c - c0] = s1[c - c0] * f + rb;
          s2[c - c0] = s2[c - c0] * f + rb * a_[size_t(row + c)];
          if (!ok) continue;
          const T e = exp_fast<T>(k_[size_t(key + c)] - m);
          dv[key + c] += e * s1[c - c0];
          dk[key + c] += e * (v_[size_t(key + c)] * s1[c - c0] - s2[c - c0]);
        }
      }
    }
  }

  // wb_ (rows × W): the window's bias of rows r0..r1 (0 outside [lo, hi)); β_t = exp(−μ_t) for the
  // keys outside (0 when there are none) and al_ = exp(w − μ_t) in the window, μ_t the maximum of the
  // row's biases, 0 included when keys outside exist.
  void band_rows(int64_t r0, int64_t r1) {
    const int64_t rows = r1 - r0, r = bias_.rank, W = W_;
    wb_.resize(size_t(rows * W));
    al_.resize(size_t(rows * W));
    const int64_t slo = lo(r0), span = hi(r1 - 1) - slo;
    if (r > 0) {
      span_.resize(size_t(rows * span));
      gemm<T>(false, true, rows, span, r, T(1), bias_.u + r0 * r, r, bias_.v + slo * r, r, T(0),
              span_.data(), span);
    }
    const T* band = r > 0 ? nullptr : bias_.w;
#pragma omp parallel for schedule(static)
    for (int64_t t = r0; t < r1; ++t) {
      const int64_t i = t - r0, l = lo(t), h = hi(t), j0 = l - t + s_ - 1, j1 = h - t + s_ - 1;
      T* w = wb_.data() + i * W;
      T* al = al_.data() + i * W;
      std::fill(w, w + W, T(0));
      std::fill(al, al + W, T(0));
      for (int64_t j = j0; j < j1; ++j) w[j] = band ? band[t * W + j] : span_[size_t(i * span + t + j - s_ + 1 - slo)];
      const bool outside = l > 0 || h < n_;
      T mx = outside ? T(0) : neg_inf<T>();
      for (int64_t j = j0; j < j1; ++j) mx = std::max(mx, w[j]);
      beta_[size_t(t)] = outside ? exp_fast<T>(-mx) : T(0);
      for (int64_t j = j0; j < j1; ++j) al[j] = exp_fast<T>(w[j] - mx);
    }
  }

  // dw (rows × W) into the bias: the band directly, or dU = dw V, dV += dwᵀ U through the span.
  void band_grads(int64_t r0, int64_t r1, const T* dw) {
    const int64_t rows = r1 - r0, r = bias_.rank, W = W_;
    if (r == 0) {
      T* g = grad_.w;
#pragma omp parallel for schedule(static)
      for (int64_t t = r0; t < r1; ++t)
        for (int64_t j = lo(t) - t + s_ - 1; j < hi(t) - t + s_ - 1; ++j) g[t * W + j] += dw[(t - r0) * W + j];
      return;
    }
    const int64_t slo = lo(r0), span = hi(r1 - 1) - slo;
    std::fill(span_.begin(), span_.begin() + rows * span, T(0));
    for (int64_t t = r0; t < r1; ++t)
      for (int64_t j = lo(t) - t + s_ - 1; j < hi(t) - t + s_ - 1; ++j)
        span_[size_t((t - r0) * span + t + j - s_ + 1 - slo)] = dw[(t - r0) * W + j];
    gemm<T>(false, false, rows, r, span, T(1), span_.data(), span, bias_.v + slo * r, r, T(1),
            grad_.u + r0 * r, r);
    gemm<T>(true, false, span, r, rows, T(1), span_.data(), span, bias_.u + r0 * r, r, T(1),
            grad_.v + slo * r, r);
  }

  // w̃_tt' of row t (block row i): the band inside the window, 0 outside.
  auto bias_fn(int64_t t, int64_t i) const {
    const T* w = wb_.data() + i * W_;
    const int64_t l = lo(t), h = hi(t), off = s_ - 1 - t;
    return [w, l, h, off](int64_t u) { return u >= l && u < h ? w[u + off] : T(0); };
  }

  T exact_value(int64_t b, int64_t t, int64_t c, int64_t i) const {
    const int64_t d = d_;
    return exact_output(k_ + b * n_ * d + c, v_ + b * n_ * d + c, d, valid_.data() + b * n_,
                        causal_ ? t + 1 : n_, bias_fn(t, i));
  }

  int64_t s_, W_;
  T* ek_;                   // non-causal: (B, n, d) exp(K − m), 0 at padding
  T* mrun_;                 // causal: (B, n, d) running maximum of K
  std::vector<T> beta_;     // (n): the outside keys' weight exp(−μ_t)
  std::vector<T> wb_, al_;  // (R, W): the block's window biases and exp(w − μ)
  std::vector<T> span_;     // (R, span): U_blk V_spanᵀ, or dw scattered for the GEMMs
  std::vector<T> rho_;      // backward: (B, n, d) H/D (0 on the exact path)
};


// The gate around a kind's core: q becomes σ(Q), then A, then o = σ(Q) ⊙ A.
template <class Core, class T>
void run_forward(Core& core, T* q, T* o) {
  core.gate(q);
  core.core_forward();
  core.gate_output(q, o);
}

// dq and H = dL/dA (into d_y) from dL/dY, then the core's gradients.
template <class Core, class T>
void run_backward(Core& core, const AftPositionBiasGrad<T>& grad, const T* sg, T* d_y, T* dq, T* dk, T* dv) {
  core.set_bias_grad(grad);
  core.gate_backward(sg, d_y, dq, dk, dv);
  core.core_backward(d_y, dk, dv);
}

}  // namespace

template <class T>
void aft_full_forward(T* q, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* o, T* a,
                      T* den, T* keys, int64_t B, int64_t n, int64_t d, int64_t row_block, bool causal) {
  AftFullCore<T> core(k, v, mask, bias, a, den, keys, B, n, d, row_block, causal);
  run_forward(core, q, o);
}

template <class T>
void aft_full_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias,
                       const T* a, const T* den, T* keys, T* d_y, T* dq, T* dk, T* dv,
                       const AftPositionBiasGrad<T>& grad, int64_t B, int64_t n, int64_t d, int64_t row_block,
                       bool causal) {
  // The backward only reads a and den.
  AftFullCore<T> core(k, v, mask, bias, const_cast<T*>(a), const_cast<T*>(den), keys, B, n, d, row_block, causal);
  run_backward(core, grad, sg, d_y, dq, dk, dv);
}

template <class T>
void aft_local_forward(T* q, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias, T* o, T* a,
                       T* den, T* key_state, int64_t B, int64_t n, int64_t d, int64_t window, int64_t row_block,
                       bool causal) {
  AftLocalCore<T> core(k, v, mask, bias, a, den, key_state, B, n, d, window, row_block, causal);
  run_forward(core, q, o);
}

template <class T>
void aft_local_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const AftPositionBias<T>& bias,
                        const T* a, const T* den, const T* key_state, T* d_y, T* dq, T* dk, T* dv,
                        const AftPositionBiasGrad<T>& grad, int64_t B, int64_t n, int64_t d, int64_t window,
                        int64_t row_block, bool causal) {
  // The backward only reads a, den and the key state.
  AftLocalCore<T> core(k, v, mask, bias, const_cast<T*>(a), const_cast<T*>(den), const_cast<T*>(key_state), B, n, d,
                       window, row_block, causal);
  run_backward(core, grad, sg, d_y, dq, dk, dv);
}

// ---- plain references ----------------------------------------------------------------------------

namespace {

// P (n keys) = the softmax weights of query (b, t) in channel c over its visible keys, in double;
// false when none is visible.
template <class T>
bool reference_weights(const T* k, const uint8_t* mask, const T* bias, int64_t b, int64_t t, int64_t c, int64_t n,
                       int64_t d, bool causal, std::vector<double>& p) {
  const int64_t kend = causal ? t + 1 : n;
  auto visible = [&](int64_t u) { return !mask || !mask[b * n + u]; };
  double mx = -INFINITY;
  for (int64_t u = 0; u < kend; ++u)
    if (visible(u)) mx = std::max(mx, double(k[(b * n + u) * d + c]) + double(bias[t * n + u]));
  std::fill(p.begin(), p.end(), 0.0);
  if (mx == -INFINITY) return false;
  double den = 0;
  for (int64_t u = 0; u < kend; ++u)
    if (visible(u)) den += p[size_t(u)] = std::exp(double(k[(b * n + u) * d + c]) + double(bias[t * n + u]) - mx);
  for (double& x : p) x /= den;
  return true;
}

}  // namespace

template <class T>
void aft_position_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* bias, T* o, int64_t B,
                              int64_t n, int64_t d, bool causal) {
  std::vector<double> p(static_cast<size_t>(n));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const int64_t idx = (b * n + t) * d + c;
        double y = 0;
        if (reference_weights(k, mask, bias, b, t, c, n, d, causal, p))
          for (int64_t u = 0; u < n; ++u) y += p[size_t(u)] * double(v[(b * n + u) * d + c]);
        o[idx] = T(y / (1.0 + std::exp(-double(q[idx]))));
      }
}

template <class T>
void aft_position_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* bias, const T* d_y,
                               T* dq, T* dk, T* dv, T* dbias, int64_t B, int64_t n, int64_t d, bool causal) {
  std::vector<double> p(static_cast<size_t>(n)), gk(static_cast<size_t>(B * n * d), 0.0),
      gv(static_cast<size_t>(B * n * d), 0.0), gw(static_cast<size_t>(n * n), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const int64_t idx = (b * n + t) * d + c;
        const double s = 1.0 / (1.0 + std::exp(-double(q[idx]))), dy = double(d_y[idx]);
        double a = 0;
        const bool any = reference_weights(k, mask, bias, b, t, c, n, d, causal, p);
        if (any)
          for (int64_t u = 0; u < n; ++u) a += p[size_t(u)] * double(v[(b * n + u) * d + c]);
        dq[idx] = T(dy * a * s * (1.0 - s));
        if (!any) continue;
        const double g = dy * s;  // dL/dA
        for (int64_t u = 0; u < n; ++u) {
          const int64_t key = (b * n + u) * d + c;
          const double gp = g * p[size_t(u)], gl = gp * (double(v[key]) - a);  // gl: dL/d(K + w̃)
          gv[size_t(key)] += gp;
          gk[size_t(key)] += gl;
          gw[size_t(t * n + u)] += gl;
        }
      }
  for (size_t i = 0; i < gk.size(); ++i) {
    dk[i] = T(gk[i]);
    dv[i] = T(gv[i]);
  }
  for (size_t i = 0; i < gw.size(); ++i) dbias[i] = T(gw[i]);
}

#define LF_INSTANTIATE(T)                                                                                            \
  template void aft_full_forward<T>(T*, const T*, const T*, const uint8_t*, const AftPositionBias<T>&, T*, T*, T*,   \
                                    T*, int64_t, int64_t, int64_t, int64_t, bool);                                 \
  template void aft_full_backward<T>(const T*, const T*, const T*, const uint8_t*, const AftPositionBias<T>&,       \
                                     const T*, const T*, T*, T*, T*, T*, T*, const AftPositionBiasGrad<T>&, int64_t, \
                                     int64_t, int64_t, int64_t, bool);                                             \
  template void aft_local_forward<T>(T*, const T*, const T*, const uint8_t*, const AftPositionBias<T>&, T*, T*, T*,  \
                                     T*, int64_t, int64_t, int64_t, int64_t, int64_t, bool);                       \
  template void aft_local_backward<T>(const T*, const T*, const T*, const uint8_t*, const AftPositionBias<T>&,      \
                                      const T*, const T*, const T*, T*, T*, T*, T*, const AftPositionBiasGrad<T>&,  \
                                      int64_t, int64_t, int64_t, int64_t, int64_t, bool);                          \
  template void aft_position_forward_ref<T>(const T*, const T*, const T*, const uint8_t*, const T*, T*, int64_t,     \
                                            int64_t, int64_t, bool);                                               \
  template void aft_position_backward_ref<T>(const T*, const T*, const T*, const uint8_t*, const T*, const T*, T*,   \
                                             T*, T*, T*, int64_t, int64_t, int64_t, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
