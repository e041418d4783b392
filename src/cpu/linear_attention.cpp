// The linear-attention core (see linear_attention.h): chunked prefix sums with register-blocked tile
// products (flash_tile_gemm) inside one parallel loop over (batch, head).
//
// Notation per (batch, head), for one chunk of C positions starting at t0 (rows past the sequence
// and padded key rows packed as zeros): Aq (C × r) = φq rows, Ak (C × r) = φk rows, Vc (C × d_v),
// G (C × d_v) = dout_t / den_t, a (C) = −(dout_t · out_t) / den_t, tril(·) keeps entries s ≤ t.
//   forward:  num = Aq H + tril(Aq Akᵀ) Vc,  den = Aq z + rowsum(tril(Aq Akᵀ)) + eps;
//             then H += Akᵀ Vc, z += Σ rows of Ak (the carried state: keys of earlier chunks).
//   With key shifts μ (linear_attention.h): the state term of row t is scaled by g_t = e^{R_prev − R_t}
//   (R_prev: the state's scale), tril(Aq Akᵀ) entrywise by f_ts = e^{μ_s − R_t}, and at the chunk's
//   end the state is rescaled to R_end and its new key rows weighed by e^{μ_s − R_end}; the backward
//   applies the same factors to the same products.
//   backward: with Mx = tril(G Vcᵀ + a 1ᵀ) and the same prefix state H (recomputed going forward):
//             dφq = G Hᵀ + a zᵀ + Mx Ak;
//             going backward with the suffix state R = Σ_{later t} φq_tᵀ G_t, ρ = Σ_{later t} a_t φq_t:
//             dφk = Vc Rᵀ + 1 ρᵀ + Mxᵀ Aq,  dv = Ak R + tril(Aq Akᵀ)ᵀ G.
// Non-causal is the same without the intra-chunk terms, with H, z and R, ρ summed over every chunk.
#include "cpu/linear_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/tile_gemm.h"
#include "cpu/vmath.h"
#include "linformer/error.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

// Per-thread scratch and the views of one (batch, head).
template <class T>
class CoreTask {
 public:
  explicit CoreTask(const LinearCoreShape& s)
      : s_(s),
        C_(s.chunk),
        r_(s.r),
        dv_(s.dv),
        Aq_(size(C_ * r_)),
        Ak_(size(C_ * r_)),
        AkT_(size(r_ * C_)),
        Vc_(size(C_ * dv_)),
        VcT_(size(dv_ * C_)),
        G_(size(C_ * dv_)),
        a_(size(C_)),
        P_(size(C_ * C_)),
        Mx_(size(C_ * C_)),
        X_(size(C_ * dv_)),
        Y_(size(C_ * r_)),
        H_(size(r_ * dv_)),
        HT_(size(dv_ * r_)),
        z_(size(r_)),
        R_(size(r_ * dv_)),
        RT_(size(dv_ * r_)),
        rho_(size(r_)),
        mu_(size(C_)),
        run_(size(C_)),
        g_(size(C_), T(1)),
        F_(size(C_ * C_)) {}

  // Points the views at (batch b, head hd).
  void bind(int64_t b, int64_t hd, const T* phi_q, const T* phi_k, const T* v, const T* key_shift) {
    const LinearCoreShape& s = s_;
    ldf_ = s.h * r_;
    ldv_ = s.h * dv_;
    q_off_ = b * s.n * ldf_ + hd * r_;
    k_off_ = b * s.m * ldf_ + hd * r_;
    o_off_ = b * s.n * ldv_ + hd * dv_;
    v_off_ = b * s.m * ldv_ + hd * dv_;
    den_off_ = (b * s.h + hd) * s.n;
    Q_ = phi_q + q_off_;
    K_ = phi_k + k_off_;
    V_ = v + v_off_;
    km_ = s.key_mask ? s.key_mask + b * s.m : nullptr;
    shift_ = key_shift ? key_shift + (b * s.h + hd) * s.m : nullptr;
    bh_ = b * s.h + hd;
  }

  void forward(T* out, T* den, const LinearCoreState<T>* state) {
    T* O = out + o_off_;
    T* D = den + den_off_;
    zero(H_);
    zero(z_);
    T scale = kNegInf;  // R_prev: the scale of H and z
    if (state) {
      std::copy(state->H + bh_ * r_ * dv_, state->H + (bh_ + 1) * r_ * dv_, H_.begin());
      std::copy(state->z + bh_ * r_, state->z + (bh_ + 1) * r_, z_.begin());
      if (shift_) scale = state->scale[bh_];
    }
    if (!s_.causal) {
      for (int64_t t0 = 0; t0 < s_.m; t0 += C_) {
        pack_keys(t0, false);
        add_key_state(H_);
      }
      for (int64_t t0 = 0; t0 < s_.n; t0 += C_) {
        pack_queries(t0);
        flash_tile_gemm<T>(false, C_, dv_, r_, T(1), Aq_.data(), r_, H_.data(), dv_, false, X_.data(), dv_);
        write_outputs(t0, O, D, false);
      }
      return;
    }
    for (int64_t t0 = 0; t0 < s_.n; t0 += C_) {
      pack_queries(t0);
      pack_keys(t0, true);
      chunk_scales(t0, scale);
      flash_tile_gemm<T>(false, C_, dv_, r_, T(1), Aq_.data(), r_, H_.data(), dv_, false, X_.data(), dv_);
      scale_rows(X_.data(), dv_, g_);
      intra_scores();  // P = f ⊙ tril(Aq Akᵀ)
      flash_tile_gemm<T>(false, C_, dv_, C_, T(1), P_.data(), C_, Vc_.data(), dv_, true, X_.data(), dv_);
      write_outputs(t0, O, D, true);
      to_chunk_end(H_, scale);
      add_key_state(H_);
    }
    if (state) {
      std::copy(H_.begin(), H_.end(), state->H + bh_ * r_ * dv_);
      std::copy(z_.begin(), z_.end(), state->z + bh_ * r_);
      if (shift_) state->scale[bh_] = scale;
    }
  }

  void backward(const T* out, const T* den, const T* dout, T* dphi_q, T* dphi_k, T* dv) {
    const T* O = out + o_off_;
    const T* D = den + den_off_;
    const T* dO = dout + o_off_;
    T* dQ = dphi_q + q_off_;
    T* dK = dphi_k + k_off_;
    T* dV = dv + v_off_;
    // Prefix state in transposed form, HT (d_v × r), and z: every key (non-causal) or, going forward,
    // the keys before the chunk.
    zero(HT_);
    zero(z_);
    zero(R_);
    zero(rho_);
    if (!s_.causal) {
      for (int64_t t0 = 0; t0 < s_.m; t0 += C_) {
        pack_keys(t0, false);
        add_key_state_transposed();
      }
      for (int64_t t0 = 0; t0 < s_.n; t0 += C_) {
        pack_queries(t0);
        pack_grads(t0, O, D, dO);
        query_grads_from_state();
        write_rows(Y_.data(), r_, t0, std::min(C_, s_.n - t0), dQ, ldf_, nullptr);
        add_query_state();
      }
      transpose(R_, r_, dv_, RT_);
      for (int64_t t0 = 0; t0 < s_.m; t0 += C_) {
        pack_keys(t0, false);
        key_grads_from_state();
        write_rows(Y_.data(), r_, t0, std::min(C_, s_.m - t0), dK, ldf_, km_);
        write_rows(X_.data(), dv_, t0, std::min(C_, s_.m - t0), dV, ldv_, km_);
      }
      return;
    }
    // Causal, going forward: dφq, and the state's scale at each chunk's end (for the way back).
    const int64_t chunks = s_.key_chunks();
    std::vector<T> ends(size(chunks), kNegInf);
    T scale = kNegInf;
    for (int64_t c = 0, t0 = 0; t0 < s_.n; ++c, t0 += C_) {
      pack_keys(t0, true);
      pack_grads(t0, O, D, dO);
      chunk_scales(t0, scale);
      query_grads_from_state();
      scale_rows(Y_.data(), r_, g_);
      intra_grads();  // Mx = f ⊙ tril(G Vcᵀ + a 1ᵀ)
      flash_tile_gemm<T>(false, C_, r_, C_, T(1), Mx_.data(), C_, Ak_.data(), r_, true, Y_.data(), r_);
      write_rows(Y_.data(), r_, t0, std::min(C_, s_.n - t0), dQ, ldf_, nullptr);
      to_chunk_end(HT_, scale);
      add_key_state_transposed();
      ends[size(c)] = scale;
    }
    // Going backward: dφk and dv from the suffix state (R, ρ): the gradient of the state after chunk c.
    for (int64_t c = chunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C_, cl = std::min(C_, s_.n - t0);
      const T before = c > 0 ? ends[size(c - 1)] : kNegInf;
      transpose(R_, r_, dv_, RT_);
      pack_queries(t0);
      pack_keys(t0, true);
      pack_grads(t0, O, D, dO);
      chunk_scales(t0, before);
      key_grads_from_state();
      if (shift_) {  // the chunk's keys entered the state weighed by e^{μ_s − R_end}
        for (int64_t i = 0; i < C_; ++i) mu_[size(i)] = factor(mu_[size(i)], ends[size(c)]);
        scale_rows(Y_.data(), r_, mu_);
        scale_rows(X_.data(), dv_, mu_);
      }
      intra_grads();
      flash_tile_gemm<T>(true, C_, r_, C_, T(1), Mx_.data(), C_, Aq_.data(), r_, true, Y_.data(), r_);
      intra_scores();
      flash_tile_gemm<T>(true, C_, dv_, C_, T(1), P_.data(), C_, G_.data(), dv_, true, X_.data(), dv_);
      write_rows(Y_.data(), r_, t0, cl, dK, ldf_, km_);
      write_rows(X_.data(), dv_, t0, cl, dV, ldv_, km_);
      if (shift_) {  // onto the scale before the chunk, where its queries read the state (weighed by g_t)
        const T f = factor(before, ends[size(c)]);
        for (T& e : R_) e *= f;
        for (T& e : rho_) e *= f;
        scale_rows(G_.data(), dv_, g_);
        for (int64_t i = 0; i < C_; ++i) a_[size(i)] *= g_[size(i)];
      }
      add_query_state();
    }
  }

 private:
  static size_t size(int64_t n) { return static_cast<size_t>(n); }
  static void zero(std::vector<T>& x) { std::fill(x.begin(), x.end(), T(0)); }

  bool padded(int64_t t) const { return km_ && km_[t]; }

  static constexpr T kNegInf = -std::numeric_limits<T>::infinity();

  // e^{from − to} ≤ 1 (to ≥ from): 0 when `from` is −inf (no valid key: nothing to carry).
  static T factor(T from, T to) { return from == kNegInf ? T(0) : T(std::exp(from - to)); }

  // With key shifts, for the chunk at t0 whose state is on scale `prev`: μ (C) of its keys (−inf at
  // padding and past n), the running max R_t (run_), g_t = e^{prev − R_t}, and F (C × C) the
  // intra-chunk factors f_ts = e^{μ_s − R_t} for s ≤ t. Nothing without shifts (g stays 1).
  void chunk_scales(int64_t t0, T prev) {
    if (!shift_) return;
    const int64_t cl = std::min(C_, s_.n - t0);
    T run = prev;
    for (int64_t i = 0; i < C_; ++i) {
      const T mu = i < cl && !padded(t0 + i) ? shift_[t0 + i] : kNegInf;
      mu_[size(i)] = mu;
      run = std::max(run, mu);
      run_[size(i)] = run;
      g_[size(i)] = factor(prev, run);
      T* f = F_.data() + i * C_;
      if (run == kNegInf) {  // no valid key yet (−inf − −inf would be NaN)
        std::fill(f, f + i + 1, T(0));
        continue;
      }
      const T* mus = mu_.data();
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) f[j] = exp_fast<T>(mus[j] - run);  // a padded key's −inf gives 0
    }
  }

  // With key shifts, at the chunk's end: the state (H or HT, and z) from `scale` onto the chunk's last
  // running max, which `scale` becomes, and the key rows Ak weighed by e^{μ_s − R_end} for the state.
  void to_chunk_end(std::vector<T>& state, T& scale) {
    if (!shift_) return;
    const T end = run_[size(C_ - 1)];
    const T f = factor(scale, end);
    for (T& e : state) e *= f;
    for (T& e : z_) e *= f;
    for (int64_t i = 0; i < C_; ++i) {
      const T w = factor(mu_[size(i)], end);
      T* ak = Ak_.data() + i * r_;
      for (int64_t j = 0; j < r_; ++j) ak[j] *= w;
    }
    scale = end;
  }

  // Row i of A (C × w) times w_i, with key shifts.
  void scale_rows(T* A, int64_t w, const std::vector<T>& weights) const {
    if (!shift_) return;
    for (int64_t i = 0; i < C_; ++i)
      for (int64_t j = 0; j < w; ++j) A[i * w + j] *= weights[size(i)];
  }

  // P or Mx (C × C) times F entrywise, with key shifts (entries above the diagonal are already 0).
  void apply_intra_factors(std::vector<T>& M) const {
    if (!shift_) return;
    for (int64_t i = 0; i < C_; ++i)
      for (int64_t j = 0; j <= i; ++j) M[size(i * C_ + j)] *= F_[size(i * C_ + j)];
  }

  // Aq: the query rows t0.. (zeros past n).
  void pack_queries(int64_t t0) {
    const int64_t cl = std::min(C_, s_.n - t0);
    pack_rows(Q_ + t0 * ldf_, ldf_, cl, r_, Aq_.data());
    std::fill(Aq_.begin() + cl * r_, Aq_.end(), T(0));
  }

  // Ak, Vc (and, with transposed, AkT and VcT): the key/value rows t0.., zeros at padded keys and past m.
  void pack_keys(int64_t t0, bool transposed) {
    const int64_t cl = std::min(C_, s_.m - t0);
    for (int64_t i = 0; i < C_; ++i) {
      T* ak = Ak_.data() + i * r_;
      T* vc = Vc_.data() + i * dv_;
      if (i < cl && !padded(t0 + i)) {
        std::copy(K_ + (t0 + i) * ldf_, K_ + (t0 + i) * ldf_ + r_, ak);
        std::copy(V_ + (t0 + i) * ldv_, V_ + (t0 + i) * ldv_ + dv_, vc);
      } else {
        std::fill(ak, ak + r_, T(0));
        std::fill(vc, vc + dv_, T(0));
      }
    }
    if (!transposed) return;
    for (int64_t i = 0; i < C_; ++i) {
      for (int64_t j = 0; j < r_; ++j) AkT_[size(j * C_ + i)] = Ak_[size(i * r_ + j)];
      for (int64_t j = 0; j < dv_; ++j) VcT_[size(j * C_ + i)] = Vc_[size(i * dv_ + j)];
    }
  }

  // G = dout_t / den_t and a_t = −(dout_t · out_t) / den_t for the query rows t0.. (zeros past n).
  void pack_grads(int64_t t0, const T* O, const T* D, const T* dO) {
    const int64_t cl = std::min(C_, s_.n - t0);
    for (int64_t i = 0; i < C_; ++i) {
      T* g = G_.data() + i * dv_;
      if (i >= cl) {
        std::fill(g, g + dv_, T(0));
        a_[size(i)] = T(0);
        continue;
      }
      const T* go = dO + (t0 + i) * ldv_;
      const T* o = O + (t0 + i) * ldv_;
      const T inv = T(1) / D[t0 + i];
      T dot = 0;
      for (int64_t e = 0; e < dv_; ++e) {
        g[e] = go[e] * inv;
        dot += go[e] * o[e];
      }
      a_[size(i)] = -dot * inv;
    }
  }

  // H (r × d_v) += Akᵀ Vc, z += Σ rows of Ak.
  void add_key_state(std::vector<T>& H) {
    flash_tile_gemm<T>(true, r_, dv_, C_, T(1), Ak_.data(), r_, Vc_.data(), dv_, true, H.data(), dv_);
    add_row_sums(Ak_.data());
  }

  // HT (d_v × r) += Vcᵀ Ak, z += Σ rows of Ak.
  void add_key_state_transposed() {
    flash_tile_gemm<T>(true, dv_, r_, C_, T(1), Vc_.data(), dv_, Ak_.data(), r_, true, HT_.data(), r_);
    add_row_sums(Ak_.data());
  }

  void add_row_sums(const T* A) {
    for (int64_t i = 0; i < C_; ++i) {
      const T* row = A + i * r_;
#pragma omp simd
      for (int64_t j = 0; j < r_; ++j) z_[size(j)] += row[j];
    }
  }

  // R (r × d_v) += Aqᵀ G, ρ += Σ_t a_t Aq_t.
  void add_query_state() {
    flash_tile_gemm<T>(true, r_, dv_, C_, T(1), Aq_.data(), r_, G_.data(), dv_, true, R_.data(), dv_);
    for (int64_t i = 0; i < C_; ++i) {
      const T* row = Aq_.data() + i * r_;
      const T ai = a_[size(i)];
#pragma omp simd
      for (int64_t j = 0; j < r_; ++j) rho_[size(j)] += ai * row[j];
    }
  }

  // P (C × C) = Aq Akᵀ with the entries s > t set to zero.
  void intra_scores() {
    flash_tile_gemm<T>(false, C_, C_, r_, T(1), Aq_.data(), r_, AkT_.data(), C_, false, P_.data(), C_);
    for (int64_t i = 0; i < C_; ++i) std::fill(P_.begin() + i * C_ + i + 1, P_.begin() + (i + 1) * C_, T(0));
    apply_intra_factors(P_);
  }

  // Mx (C × C) = G Vcᵀ + a 1ᵀ with the entries s > t set to zero.
  void intra_grads() {
    flash_tile_gemm<T>(false, C_, C_, dv_, T(1), G_.data(), dv_, VcT_.data(), C_, false, Mx_.data(), C_);
    for (int64_t i = 0; i < C_; ++i) {
      T* row = Mx_.data() + i * C_;
      const T ai = a_[size(i)];
      for (int64_t j = 0; j <= i; ++j) row[j] += ai;
      std::fill(row + i + 1, row + C_, T(0));
    }
    apply_intra_factors(Mx_);
  }

  // Y (C × r) = G Hᵀ + a zᵀ, from HT and z.
  void query_grads_from_state() {
    flash_tile_gemm<T>(false, C_, r_, dv_, T(1), G_.data(), dv_, HT_.data(), r_, false, Y_.data(), r_);
    for (int64_t i = 0; i < C_; ++i) {
      T* y = Y_.data() + i * r_;
      const T ai = a_[size(i)];
#pragma omp simd
      for (int64_t j = 0; j < r_; ++j) y[j] += ai * z_[size(j)];
    }
  }

  // Y (C × r) = Vc Rᵀ + 1 ρᵀ (from RT) and X (C × d_v) = Ak R.
  void key_grads_from_state() {
    flash_tile_gemm<T>(false, C_, r_, dv_, T(1), Vc_.data(), dv_, RT_.data(), r_, false, Y_.data(), r_);
    for (int64_t i = 0; i < C_; ++i) {
      T* y = Y_.data() + i * r_;
#pragma omp simd
      for (int64_t j = 0; j < r_; ++j) y[j] += rho_[size(j)];
    }
    flash_tile_gemm<T>(false, C_, dv_, r_, T(1), Ak_.data(), r_, R_.data(), dv_, false, X_.data(), dv_);
  }

  // out_t = X_t / den_t, den_t = Aq_t · z (+ the intra-chunk row sum of P) + eps, for the rows t0...
  void write_outputs(int64_t t0, T* O, T* D, bool intra) {
    const int64_t cl = std::min(C_, s_.n - t0);
    const T eps = T(s_.eps);
    for (int64_t i = 0; i < cl; ++i) {
      const T* aq = Aq_.data() + i * r_;
      T dn = 0;
      for (int64_t j = 0; j < r_; ++j) dn += aq[j] * z_[size(j)];
      dn *= g_[size(i)];
      if (intra) {
        const T* p = P_.data() + i * C_;
        T within = 0;
        for (int64_t j = 0; j <= i; ++j) within += p[j];
        dn += within;
      }
      dn += eps;
      D[t0 + i] = dn;
      const T inv = T(1) / dn;
      const T* x = X_.data() + i * dv_;
      T* o = O + (t0 + i) * ldv_;
      for (int64_t e = 0; e < dv_; ++e) o[e] = x[e] * inv;
    }
  }

  // Rows 0..cl of src (row stride w) into dst rows t0.. (stride ld); zeros at padded keys (mask).
  void write_rows(const T* src, int64_t w, int64_t t0, int64_t cl, T* dst, int64_t ld, const uint8_t* mask) const {
    for (int64_t i = 0; i < cl; ++i) {
      T* d = dst + (t0 + i) * ld;
      if (mask && mask[t0 + i])
        std::fill(d, d + w, T(0));
      else
        std::copy(src + i * w, src + (i + 1) * w, d);
    }
  }

  static void transpose(const std::vector<T>& A, int64_t rows, int64_t cols, std::vector<T>& At) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) At[size(j * rows + i)] = A[size(i * cols + j)];
  }

  const LinearCoreShape& s_;
  const int64_t C_, r_, dv_;
  std::vector<T> Aq_, Ak_, AkT_, Vc_, VcT_, G_, a_, P_, Mx_, X_, Y_;
  std::vector<T> H_, HT_, z_, R_, RT_, rho_;
  std::vector<T> mu_, run_, g_, F_;  // key shifts: see chunk_scales
  int64_t ldf_ = 0, ldv_ = 0, q_off_ = 0, k_off_ = 0, o_off_ = 0, v_off_ = 0, den_off_ = 0;
  const T* Q_ = nullptr;
  const T* K_ = nullptr;
  const T* V_ = nullptr;
  const uint8_t* km_ = nullptr;
  const T* shift_ = nullptr;
  int64_t bh_ = 0;
};

void check_shape(const LinearCoreShape& s) {
  LF_REQUIRE(s.B > 0 && s.h > 0 && s.n > 0 && s.m > 0 && s.r > 0 && s.dv > 0, "linear attention core: bad shape B=",
             s.B, " h=", s.h, " n=", s.n, " m=", s.m, " r=", s.r, " d_v=", s.dv);
  LF_REQUIRE(s.chunk > 0, "linear attention core: the chunk must be positive, got ", s.chunk);
  LF_REQUIRE(!s.causal || s.n == s.m, "linear attention core: causal needs as many keys as queries");
  LF_REQUIRE(std::isfinite(s.eps) && s.eps > 0, "linear attention core: eps must be positive, got ", s.eps);
}

// Below about a million multiply-adds a parallel region costs more than it saves.
bool worth_threads(const LinearCoreShape& s) {
  return s.B * s.h > 1 && linear_core_flops(s) >= double(1 << 21);
}

}  // namespace

double linear_core_flops(const LinearCoreShape& s) {
  const double bh = double(s.B) * s.h, r = double(s.r), dv = double(s.dv);
  if (!s.causal) return 2.0 * bh * double(s.n + s.m) * r * (dv + 1);
  const double padded_n = double(s.key_chunks() * s.chunk), C = double(s.chunk);
  return 2.0 * bh * padded_n * (2.0 * r * (dv + 1) + C * (r + dv + 1));
}

double linear_core_scratch_bytes(const LinearCoreShape& s, int64_t element_size) {
  const double C = double(s.chunk), r = double(s.r), dv = double(s.dv);
  const double per_thread = 4.0 * C * r + 4.0 * C * dv + 3.0 * C * C + 4.0 * r * dv + 2.0 * r + 4.0 * C;
  return double(element_size) * per_thread * double(std::max(1, num_threads()));
}

template <class T>
void linear_core_forward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                         T* out, T* den, const LinearCoreState<T>* state) {
  check_shape(s);
  LF_REQUIRE(!state || (s.causal && !s.key_mask && state->H && state->z && (state->scale || !key_shift)),
             "linear attention core: a carried state needs causal attention without a key mask");
  const int64_t tasks = s.B * s.h;
#pragma omp parallel if (worth_threads(s))
  {
    CoreTask<T> task(s);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < tasks; ++bh) {
      task.bind(bh / s.h, bh % s.h, phi_q, phi_k, v, key_shift);
      task.forward(out, den, state);
    }
  }
}

template <class T>
void linear_core_backward(const LinearCoreShape& s, const T* phi_q, const T* phi_k, const T* v, const T* key_shift,
                          const T* out, const T* den, const T* dout, T* dphi_q, T* dphi_k, T* dv) {
  check_shape(s);
  const int64_t tasks = s.B * s.h;
#pragma omp parallel if (worth_threads(s))
  {
    CoreTask<T> task(s);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < tasks; ++bh) {
      task.bind(bh / s.h, bh % s.h, phi_q, phi_k, v, key_shift);
      task.backward(out, den, dout, dphi_q, dphi_k, dv);
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                          \
  template void linear_core_forward<T>(const LinearCoreShape&, const T*, const T*, const T*, const T*, T*, T*,     \
                                       const LinearCoreState<T>*);                                                 \
  template void linear_core_backward<T>(const LinearCoreShape&, const T*, const T*, const T*, const T*, const T*, \
                                        const T*, const T*, T*, T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
