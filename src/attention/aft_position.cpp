// `aft_full` and `aft_local`: the position-biased kinds of the Attention Free Transformer (Zhai et
// al. 2021). No dot products and no heads (n_heads is not used): every channel c mixes the values
// along the sequence with weights from its keys and a learned position bias w (max_len × max_len,
// the top-left n × n used):
//   Q = x W_qᵀ, K = x W_kᵀ, V = x W_vᵀ (padded rows of K and V selected away)
//   aft_full:  Y_tc = σ(Q_tc) · Σ_t' exp(K_t'c + w_tt') V_t'c / Σ_t' exp(K_t'c + w_tt')
//   aft_local: the same with w̃_tt' = w_tt' for |t − t'| < s and 0 outside the window (not −∞: every
//              key stays visible)
//   out = Y W_oᵀ + b_o
// over the visible keys t' (not padding; causal: t' ≤ t); no visible key gives Y = 0. w = U Vᵀ with
// U, V (max_len × d') (`pos_bias.u`, `pos_bias.v`), or, with bias_rank 0, stored as read: aft_full
// the matrix `pos_bias.w` (max_len × max_len), aft_local its band `pos_bias.band` (max_len × W,
// W = 2s − 1, causal s; entry [t, j] = w_{t, t+j−s+1}).
//
// Stable exp. A term exp(K_t'c + w_tt') is computed as exp(K_t'c − m_c) · exp(w_tt' − μ_t), with m_c
// the maximum of K over the visible keys of channel c and μ_t the maximum of row t of the bias: both
// factors are ≤ 1, and the dropped factor exp(m_c + μ_t) is common to the numerator and denominator of
// (t, c), so it cancels. Causal, m is the running maximum over t' ≤ t (so nothing depends on a later
// position, bit for bit in double): aft_full rescales the earlier blocks' sums by exp(m_{r0−1} − m_t),
// aft_local its prefix sums. The shifts are constants in the backward (they cancel exactly). The
// separable shift can underflow: when the maxima of K and of w sit on different keys by more than the
// float exponent range, every term of a denominator may round to 0. A denominator below
// 4·n·min/ε (float: 2·10⁻³¹·n) therefore falls back to the exact softmax of that (t, c) in double
// with max_t'(K_t'c + w_tt') subtracted, forward and backward; above it, the terms lost to underflow
// weigh less than ε.
//
// aft_full runs query rows in blocks of R (min(max_len/8, d/2) within [16, 256]): exp(w) for R rows
// × n keys (E), then [numerator | denominator] = E · [exp(K)⊙V | exp(K)] for all samples in one GEMM;
// the backward recomputes E. Causal: the GEMM covers the keys before the block, the block's own
// triangle is done per row. Time O(B·n²·d + n²·d'), memory O(B·n·d + R·n), never n×n.
// aft_local: the keys outside the window enter through prefix/suffix sums (causal: running sums
// rescaled to the running maximum), the window's (2s − 1) keys per row directly: time
// O(B·n·s·d + n·(R + s)·d'), memory O(B·n·d + R·(R + s)).
// No probabilities are formed, so `dropout` is not applied.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "linformer/attention.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/error.h"
#include "cpu/gemm.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

// R, the query rows per block: min(max_len/8, d/2) within [16, 256], so that the R × n block buffers
// stay below a (n, d) buffer (256 rows keep the GEMMs near the machine's peak at d = 512). It depends
// on the layer, not on a call's n: a shorter causal sequence is cut into the same blocks.
int64_t row_block(const AttentionDims& dims) {
  return std::clamp<int64_t>(std::min(dims.max_len / 8, dims.d_model / 2), 16, 256);
}
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

// ---- options ------------------------------------------------------------------------------------

struct AftOptions {
  int64_t bias_rank = 0;
  int64_t window = 0;  // aft_local only
  bool qkv_bias = false;
};

AftOptions parse_aft_options(const std::string& kind, const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r(kind, options);
  AftOptions o;
  if (kind == "aft_local") {
    o.window = r.get_int("window", std::min<int64_t>(32, dims.max_len));
    LF_REQUIRE(o.window >= 1 && o.window <= dims.max_len, r.where("window"), " must be in [1, max_len = ", dims.max_len,
               "] (keys with |t − t'| < window get the bias), got ", o.window);
  }
  o.bias_rank = r.get_int("bias_rank", std::min<int64_t>(128, dims.max_len));
  LF_REQUIRE(o.bias_rank >= 0 && o.bias_rank <= dims.max_len, r.where("bias_rank"),
             " must be in [0, max_len = ", dims.max_len,
             "] (0: the bias stored unfactorised; a rank above max_len adds nothing), got ", o.bias_rank);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
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

// ---- what both kinds share: the maps, the gate σ(Q), the buffers ---------------------------------

// U, V (max_len × d') initialised N(0, 0.1/√d'), so that w = U Vᵀ starts with entries of standard
// deviation 0.1; the unfactorised bias starts at 0.
Init factor_init(int64_t rank) { return Init::normal(std::sqrt(0.1 / std::sqrt(double(rank)))); }

template <class T>
class AftBase : public Attention<T> {
 public:
  AftBase(const AttentionSpec& spec, const AftOptions& options, ParamArena<T>& arena, const AttentionKindInfo& info)
      : info_(info),
        dims_(spec.dims),
        opts_(options),
        arena_(arena),
        maps_(arena, spec.prefix, spec.dims.d_model, opts_.qkv_bias),
        R_(row_block(spec.dims)) {}

  void forward(const AttentionInput<T>& in, T* out, bool /*training*/, uint64_t /*seed*/) override {
    validate_input(in, dims_, info_);
    in_ = in;
    kept_ = in.keep_for_backward;
    B_ = in.B;
    n_ = in.n;
    const int64_t d = dims_.d_model, total = B_ * n_ * d;
    maps_.project_in(in, q_, k_, v_);
    valid_.assign(static_cast<size_t>(B_ * n_), 1);
    if (in.key_padding_mask)
      for (int64_t i = 0; i < B_ * n_; ++i) valid_[size_t(i)] = in.key_padding_mask[i] ? 0 : 1;
    T* q = q_.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; ++i) q[i] = T(1) / (T(1) + exp_fast<T>(-q[i]));  // q_ holds σ(Q) from here
    a_.resize(size_t(total));
    den_.resize(size_t(total));
    core_forward();
    o_.resize(size_t(total));
    for (int64_t i = 0; i < total; ++i) o_[size_t(i)] = q_[size_t(i)] * a_[size_t(i)];
    maps_.project_out(o_.data(), out, B_ * n_);
    if (!kept_) release_all();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, info_.name);
    const int64_t total = B_ * n_ * dims_.d_model;
    std::vector<T> h(static_cast<size_t>(total)), dq(static_cast<size_t>(total)), dk(static_cast<size_t>(total), T(0)),
        dv(static_cast<size_t>(total), T(0));
    maps_.backward_out(o_.data(), dout, h.data(), B_ * n_);  // dY
    for (int64_t i = 0; i < total; ++i) {
      const T s = q_[size_t(i)], dy = h[size_t(i)];
      dq[size_t(i)] = dy * a_[size_t(i)] * s * (T(1) - s);
      h[size_t(i)] = dy * s;  // H = dL/dA
    }
    core_backward(h.data(), dk.data(), dv.data());
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, info_.name);
    release_all();  // one backward per forward
    kept_ = false;
  }

 protected:
  // Fill a_ (A, before the gate) and den_ (the shifted denominators) from q_ (σ), k_, v_, valid_.
  virtual void core_forward() = 0;
  // dk, dv (B, n, d), zero on entry, receive the gradients of K and V from h = dL/dA; the bias
  // gradients accumulate into the arena.
  virtual void core_backward(const T* h, T* dk, T* dv) = 0;
  virtual void release_core() = 0;

  // Whether element idx (of (B, n, d)) took the exact path: its shifted denominator is below the floor.
  bool on_exact_path(int64_t idx, T floor) const { return !(den_[size_t(idx)] >= floor); }

  // m (B, n, d): the running maximum of K over the visible keys t' ≤ t (−inf before the first).
  void running_max(std::vector<T>& m) const {
    const int64_t d = dims_.d_model;
    m.resize(size_t(B_ * n_ * d));
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
    const int64_t d = dims_.d_model;
    std::vector<T> m(static_cast<size_t>(B_ * d), neg_inf<T>());
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t t = 0; t < n_; ++t)
        if (valid_[size_t(b * n_ + t)])
          for (int64_t c = 0; c < d; ++c)
            m[size_t(b * d + c)] = std::max(m[size_t(b * d + c)], k_[size_t((b * n_ + t) * d + c)]);
    return m;
  }

  void release_all() {
    release_buffers(q_, k_, v_, a_, den_, o_, valid_);
    release_core();
    maps_.release();
  }

  // The factored bias w = U Vᵀ (pos_bias.u, pos_bias.v) when bias_rank > 0; false when the kind is
  // to declare its own unfactored one.
  bool declare_bias_factors(const AttentionSpec& spec, ParamArena<T>& arena) {
    const int64_t L = dims_.max_len, r = opts_.bias_rank;
    if (r <= 0) return false;
    u_ = arena.declare(spec.prefix + "pos_bias.u", {L, r}, factor_init(r));
    pv_ = arena.declare(spec.prefix + "pos_bias.v", {L, r}, factor_init(r));
    return true;
  }

  // Key row u's share of a query's sums (d channels): e = a · exp(K_u − m), N += e ⊙ V_u, D += e.
  void add_key(T a, const T* kr, const T* m, const T* vr, T* N, T* D) const {
    const int64_t d = dims_.d_model;
    for (int64_t c = 0; c < d; ++c) {
      const T e = a * exp_fast<T>(kr[c] - m[c]);
      N[c] += e * vr[c];
      D[c] += e;
    }
  }

  const AttentionKindInfo& info_;
  AttentionDims dims_;
  AftOptions opts_;
  ParamArena<T>& arena_;
  QkvoProjections<T> maps_;
  const int64_t R_;       // query rows per block
  AttentionInput<T> in_;  // the caller keeps in_.x alive until the backward
  bool kept_ = false;
  int64_t B_ = 0, n_ = 0;
  std::vector<T> q_, k_, v_, a_, den_, o_;  // (B, n, d); q_ holds σ(Q)
  std::vector<uint8_t> valid_;              // (B, n): 1 = a real key
  int u_ = -1, pv_ = -1;                    // the bias factors U, V (max_len × d'), when factored
};

// ---- aft_full -----------------------------------------------------------------------------------

const AttentionKindInfo& aft_full_info() {
  static const AttentionKindInfo info{
      "aft_full", "Attention Free Transformer, full position bias w = U Vᵀ, O(n²·d) time, O(n·d) memory",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true,
                       /*cross_attention=*/false},
      // O(n²·d) time: the benchmarks stop at 8192.
      /*quadratic_memory=*/false, /*bench_options=*/json::object(), /*bench_max_len=*/8192};
  return info;
}

const AttentionKindInfo& aft_local_info() {
  static const AttentionKindInfo info{
      "aft_local", "Attention Free Transformer, position bias within a window of s (0 outside), O(n·s·d)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true,
                       /*cross_attention=*/false}};
  return info;
}

template <class T>
class AftFull final : public AftBase<T> {
  using Base = AftBase<T>;
  using Base::a_, Base::arena_, Base::B_, Base::R_, Base::den_, Base::dims_, Base::k_, Base::n_, Base::opts_, Base::v_,
      Base::valid_, Base::u_, Base::pv_;

 public:
  AftFull(const AttentionSpec& spec, const AftOptions& options, ParamArena<T>& arena)
      : Base(spec, options, arena, aft_full_info()) {
    if (!this->declare_bias_factors(spec, arena))
      w_ = arena.declare(spec.prefix + "pos_bias.w", {dims_.max_len, dims_.max_len}, Init::zeros());
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double half = dims_.causal ? 0.5 : 1.0, nn = double(n) * double(n);
    return this->maps_.flops(B, n, m) + 2.0 * nn * double(opts_.bias_rank) +
           half * 2.0 * double(B) * nn * 2.0 * double(dims_.d_model);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t, bool training) const override {
    const double bnd = double(B) * n * dims_.d_model, R = double(std::min(R_, n));
    // Kept: σ(Q), K, V, A, D, the gate's output, the key table (2), the running maximum, the masked input copy;
    // blocks: w, exp(w) (R × n), the block products (R × 2Bd). Backward: dY/H, dQ, dK, dV, ρ, Z (2), the
    // maps' own buffer, dw (R × n) and L (R × 2Bd).
    if (!training) return sizeof(T) * (10 * bnd + 2 * R * n + 2 * R * B * dims_.d_model);
    return sizeof(T) * (18 * bnd + 3 * R * n + 4 * R * B * dims_.d_model);
  }

 private:
  void core_forward() override {
    const int64_t n = n_, d = dims_.d_model, BD = B_ * 2 * d;
    const bool causal = dims_.causal;
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
        gemm<T>(false, false, rows, BD, kend, T(1), ew_.data(), ncols, F_.data(), BD, T(0), nd.data(), BD);
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
    if (causal)
      release_core();  // the backward replays the shifts block by block
    else
      release_buffers(wblk_, ew_);  // F_ stays for the backward
  }

  void core_backward(const T* h, T* dk, T* dv) override {
    const int64_t n = n_, d = dims_.d_model, BD = B_ * 2 * d, r = opts_.bias_rank;
    const bool causal = dims_.causal;
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
        gemm<T>(false, true, rows, kend, BD, T(1), L.data(), BD, F_.data(), BD, T(0), dw.data(), ncols);
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
                k_.data() + b * n * d + c, v_.data() + b * n * d + c, d, valid_.data() + b * n, causal ? t + 1 : n,
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
        const T* U = arena_.value(u_);
        const T* P = arena_.value(pv_);
        gemm<T>(false, false, rows, r, ncols, T(1), dw.data(), ncols, P, r, T(1), arena_.grad(u_) + r0 * r, r);
        gemm<T>(true, false, ncols, r, rows, T(1), dw.data(), ncols, U + r0 * r, r, T(1), arena_.grad(pv_), r);
      } else {
        T* gw = arena_.grad(w_);
        const int64_t Lm = dims_.max_len;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t u = 0; u < ncols; ++u) gw[(r0 + i) * Lm + u] += dw[size_t(i * ncols + u)];
      }
    }
    if (!causal) key_grads(Z.data(), n, dk, dv);
    release_buffers(rho_);
  }

  void release_core() override { release_buffers(F_, mrun_, mcur_, wblk_, ew_, rho_); }

  // The key table F (n × B·2d): row t', sample b: [exp(K − m)⊙V | exp(K − m)], 0 at padding.
  // Non-causal: m = the maximum over the sample's keys, built here. Causal: built block by block by
  // shift_keys.
  void start_keys() {
    const int64_t n = n_, d = dims_.d_model, BD = B_ * 2 * d;
    F_.assign(size_t(n * BD), T(0));
    if (dims_.causal) {
      this->running_max(mrun_);
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
    const int64_t d = dims_.d_model;
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
    const int64_t d = dims_.d_model, BD = B_ * 2 * d;
    for (int64_t b = 0; b < B_; ++b) {
      T* f = F_.data() + u * BD + b * 2 * d;
      const T* kr = k_.data() + (b * n_ + u) * d;
      const T* vr = v_.data() + (b * n_ + u) * d;
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
    const int64_t rows = r1 - r0, r = opts_.bias_rank, Lm = dims_.max_len;
    T* w = wblk_.data();
    if (r > 0) {
      gemm<T>(false, true, rows, ncols, r, T(1), arena_.value(u_) + r0 * r, r, arena_.value(pv_), r, T(0), w, ncols);
    } else {
      const T* W = arena_.value(w_);
      for (int64_t i = 0; i < rows; ++i) std::copy(W + (r0 + i) * Lm, W + (r0 + i) * Lm + ncols, w + i * ncols);
    }
    const bool causal = dims_.causal;
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
    const int64_t d = dims_.d_model, n = n_;
    const T* m = mrun_.data() + (b * n + t) * d;
    for (int64_t c = 0; c < d; ++c) {
      const T s = r0 > 0 ? exp_below(mrun_[size_t((b * n + r0 - 1) * d + c)], m[c]) : T(0);
      N[c] *= s;
      D[c] *= s;
    }
    for (int64_t u = r0; u <= t; ++u) {
      if (!valid_[size_t(b * n + u)]) continue;
      this->add_key(ew_[size_t(i * ncols + u)], k_.data() + (b * n + u) * d, m, v_.data() + (b * n + u) * d, N, D);
    }
  }

  // Its backward: for each key u of the block (one thread per u, so no two threads add to one row),
  // the rows t ≥ u of the block; dw's columns r0..r1 (0 above the diagonal).
  void own_block_backward(int64_t r0, int64_t r1, int64_t ncols, T* dk, T* dv, T* dw) const {
    const int64_t d = dims_.d_model, n = n_;
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
          const T *kr = k_.data() + key, *vr = v_.data() + key, *m = mrun_.data() + row, *rr = rho_.data() + row,
                  *ar = a_.data() + row;
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
    const int64_t d = dims_.d_model, BD = B_ * 2 * d;
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < kend; ++u)
      for (int64_t b = 0; b < B_; ++b) {
        const T* f = F_.data() + u * BD + b * 2 * d;
        const T* z = Z + u * BD + b * 2 * d;
        const int64_t key = (b * n_ + u) * d;
        for (int64_t c = 0; c < d; ++c) {
          dv[key + c] += f[d + c] * z[c];
          dk[key + c] += f[c] * z[c] + f[d + c] * z[d + c];
        }
      }
  }

  T exact_value(int64_t b, int64_t t, int64_t c, int64_t i, int64_t ncols) const {
    const int64_t d = dims_.d_model;
    const T* wr = wblk_.data() + i * ncols;
    return exact_output(k_.data() + b * n_ * d + c, v_.data() + b * n_ * d + c, d, valid_.data() + b * n_,
                        dims_.causal ? t + 1 : n_, [wr](int64_t u) { return wr[u]; });
  }

  int w_ = -1;
  std::vector<T> F_;          // (n, B, 2d) key table
  std::vector<T> mrun_;       // causal: (B, n, d) running maximum of K
  std::vector<T> mcur_;       // causal: (B, d) the shift F_ is built at
  int64_t built_ = 0;         // causal: F_'s rows < built_ exist
  std::vector<T> wblk_, ew_;  // (R, ncols): w and exp(w − row max) of the current block
  std::vector<T> rho_;        // backward: (B, n, d) H/D (0 on the exact path)
};

// ---- aft_local ----------------------------------------------------------------------------------

template <class T>
class AftLocal final : public AftBase<T> {
  using Base = AftBase<T>;
  using Base::a_, Base::arena_, Base::B_, Base::R_, Base::den_, Base::dims_, Base::k_, Base::n_, Base::opts_, Base::v_,
      Base::valid_, Base::u_, Base::pv_;

 public:
  AftLocal(const AttentionSpec& spec, const AftOptions& options, ParamArena<T>& arena)
      : Base(spec, options, arena, aft_local_info()), s_(opts_.window), W_(dims_.causal ? s_ : 2 * s_ - 1) {
    if (!this->declare_bias_factors(spec, arena))
      band_ = arena.declare(spec.prefix + "pos_bias.band", {dims_.max_len, W_}, Init::zeros());
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double keys = double(std::min(W_, 2 * n - 1)), R = double(std::min(R_, n));
    const double span = std::min(double(n), R + keys);  // the bias GEMM's columns per row
    return this->maps_.flops(B, n, m) + 2.0 * double(n) * span * double(opts_.bias_rank) +
           4.0 * double(B) * double(n) * keys * double(dims_.d_model);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t, bool training) const override {
    const double bnd = double(B) * n * dims_.d_model, R = double(std::min(R_, n));
    const double band = R * double(W_), span = R * std::min(double(n), R + double(W_));
    // Kept: σ(Q), K, V, A, D, the gate's output, exp(K) or the running maximum, the masked input copy;
    // blocks: w, exp(w), the bias GEMM's span. Backward: dY/H, dQ, dK, dV, ρ, the maps' own buffer, dw.
    if (!training) return sizeof(T) * (8 * bnd + 2 * band + span + n);
    return sizeof(T) * (14 * bnd + 3 * band + span + n);
  }

 private:
  // Row t's window: keys [lo, hi) (causal: hi = t + 1); band column j = t' − t + s − 1.
  int64_t lo(int64_t t) const { return std::max<int64_t>(0, t - s_ + 1); }
  int64_t hi(int64_t t) const { return dims_.causal ? t + 1 : std::min(n_, t + s_); }

  // exp(K_t'c − m) of window key u in row t, for channels c0 ≤ c < c1 (read as p[c]): m is the
  // sample's maximum (non-causal: the kept ek_) or the running maximum at t (causal: into scratch).
  const T* key_weights(int64_t b, int64_t t, int64_t u, int64_t c0, int64_t c1, T* scratch) const {
    const int64_t d = dims_.d_model;
    if (!dims_.causal) return ek_.data() + (b * n_ + u) * d;
    const T* kr = k_.data() + (b * n_ + u) * d;
    const T* m = mrun_.data() + (b * n_ + t) * d;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) scratch[c] = exp_fast<T>(kr[c] - m[c]);
    return scratch;
  }

  void core_forward() override {
    const int64_t n = n_, d = dims_.d_model;
    const bool causal = dims_.causal;
    const T floor = denominator_floor<T>(n);
    // The keys outside the window, into a_ (numerator) and den_ (denominator), unscaled by β_t yet.
    std::fill(a_.begin(), a_.end(), T(0));
    std::fill(den_.begin(), den_.end(), T(0));
    if (causal) {
      this->running_max(mrun_);
      outside_forward_causal();
    } else {
      const std::vector<T> m = this->key_max();
      ek_.resize(size_t(B_ * n * d));
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
          T* N = a_.data() + (b * n + t) * d;
          T* D = den_.data() + (b * n + t) * d;
          for (int64_t c = 0; c < d; ++c) {
            N[c] *= beta;
            D[c] *= beta;
          }
          for (int64_t u = l; u < h; ++u) {
            if (!valid_[size_t(b * n + u)]) continue;
            const T al = al_[size_t(i * W_ + u - t + s_ - 1)];
            const T* vr = v_.data() + (b * n + u) * d;
            if (causal) {
              this->add_key(al, k_.data() + (b * n + u) * d, mrun_.data() + (b * n + t) * d, vr, N, D);
            } else {
              const T* er = ek_.data() + (b * n + u) * d;
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
    release_buffers(wb_, al_, span_);
  }

  // Non-causal: Σ_{t' ≤ t−s} and Σ_{t' ≥ t+s} of exp(K − m)⊙V and exp(K − m), by a forward and a
  // backward running sum per (sample, channel chunk).
  void outside_forward() {
    const int64_t n = n_, d = dims_.d_model, chunks = (d + kChunk - 1) / kChunk;
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
    const int64_t n = n_, d = dims_.d_model, chunks = (d + kChunk - 1) / kChunk;
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

  void core_backward(const T* h, T* dk, T* dv) override {
    const int64_t n = n_, d = dims_.d_model, chunks = (d + kChunk - 1) / kChunk;
    const bool causal = dims_.causal;
    const T floor = denominator_floor<T>(n);
    rho_.resize(size_t(B_ * n * d));
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
              const T *e = key_weights(b, t, u, 0, d, scratch.data()), *rr = rho_.data() + row, *vr = v_.data() + key,
                      *ar = a_.data() + row;
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
              const T *e = key_weights(b, t, u, c0, c1, scratch.data()), *rr = rho_.data() + row, *vr = v_.data() + key,
                      *ar = a_.data() + row;
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
            exact_output_backward(k_.data() + b * n * d + c, v_.data() + b * n * d + c, d, valid_.data() + b * n,
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
    release_buffers(wb_, al_, span_, rho_);
  }

  // Non-causal, keys outside the window: dV_t' += exp(K_t' − m) Σ_{|t−t'|≥s} β_t ρ_t, dK_t' likewise
  // with (V_t' − A_t), by running sums over the rows.
  void outside_backward(T* dk, T* dv) const {
    const int64_t n = n_, d = dims_.d_model, chunks = (d + kChunk - 1) / kChunk;
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
    const int64_t n = n_, d = dims_.d_model, chunks = (d + kChunk - 1) / kChunk;
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
    const int64_t rows = r1 - r0, r = opts_.bias_rank, W = W_;
    wb_.resize(size_t(rows * W));
    al_.resize(size_t(rows * W));
    const int64_t slo = lo(r0), span = hi(r1 - 1) - slo;
    if (r > 0) {
      span_.resize(size_t(rows * span));
      gemm<T>(false, true, rows, span, r, T(1), arena_.value(u_) + r0 * r, r, arena_.value(pv_) + slo * r, r, T(0),
              span_.data(), span);
    }
    const T* band = r > 0 ? nullptr : arena_.value(band_);
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
    const int64_t rows = r1 - r0, r = opts_.bias_rank, W = W_;
    if (r == 0) {
      T* g = arena_.grad(band_);
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
    gemm<T>(false, false, rows, r, span, T(1), span_.data(), span, arena_.value(pv_) + slo * r, r, T(1),
            arena_.grad(u_) + r0 * r, r);
    gemm<T>(true, false, span, r, rows, T(1), span_.data(), span, arena_.value(u_) + r0 * r, r, T(1),
            arena_.grad(pv_) + slo * r, r);
  }

  // w̃_tt' of row t (block row i): the band inside the window, 0 outside.
  auto bias_fn(int64_t t, int64_t i) const {
    const T* w = wb_.data() + i * W_;
    const int64_t l = lo(t), h = hi(t), off = s_ - 1 - t;
    return [w, l, h, off](int64_t u) { return u >= l && u < h ? w[u + off] : T(0); };
  }

  T exact_value(int64_t b, int64_t t, int64_t c, int64_t i) const {
    const int64_t d = dims_.d_model;
    return exact_output(k_.data() + b * n_ * d + c, v_.data() + b * n_ * d + c, d, valid_.data() + b * n_,
                        dims_.causal ? t + 1 : n_, bias_fn(t, i));
  }

  void release_core() override { release_buffers(ek_, mrun_, beta_, wb_, al_, span_, rho_); }

  int64_t s_, W_;
  int band_ = -1;
  std::vector<T> ek_;       // non-causal: (B, n, d) exp(K − m), 0 at padding
  std::vector<T> mrun_;     // causal: (B, n, d) running maximum of K
  std::vector<T> beta_;     // (n): the outside keys' weight exp(−μ_t)
  std::vector<T> wb_, al_;  // (R, W): the block's window biases and exp(w − μ)
  std::vector<T> span_;     // (R, span): U_blk V_spanᵀ, or dw scattered for the GEMMs
  std::vector<T> rho_;      // backward: (B, n, d) H/D (0 on the exact path)
};

// parse_aft_options for one of the two kinds (for register_kind).
auto aft_parser(const std::string& kind) {
  return [kind](const AttentionDims& dims, const json& options, json* resolved) {
    return parse_aft_options(kind, dims, options, resolved);
  };
}

}  // namespace

void register_aft_full_attention(AttentionRegistry& registry) {
  register_kind<AftFull>(registry, aft_full_info(), aft_parser("aft_full"));
}
void register_aft_local_attention(AttentionRegistry& registry) {
  register_kind<AftLocal>(registry, aft_local_info(), aft_parser("aft_local"));
}

}  // namespace lf
