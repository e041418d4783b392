// `aft_conv`: AFT-conv (Zhai et al. 2021, arXiv 2105.14103), here on sequences: per head, a depth-wise
// 1-D convolution of exp(K) ⊙ V with a learned kernel plus AFT-simple's global sum, divided by the same
// two terms of exp(K). h heads of width d_h = d/h; K has one channel per head, shared by the head's
// d_h value channels. With σ the logistic sigmoid, i a head, t a position:
//   Q = x W_qᵀ (B, n, d),  K = x W_kᵀ (B, n, h),  V = x W_vᵀ (B, n, d)
//   ŵ^i = γ_i (w^i − mean(w^i)) / √(var(w^i) + ε) + β_i     w^i ∈ R^s, var the population variance
//                                                             (mean of squares), ε = 1e-5; γ, β ∈ R^h
//   κ^i_j = exp(ŵ^i_j) − 1, at offset o_j = j − ⌊s/2⌋ (non-causal, s odd) or o_j = j − (s − 1) (causal)
//   Y^i_t = σ(Q^i_t) ⊙ [Σ_j κ^i_j e^i_{t+o_j} V^i_{t+o_j} + Σ_{t'} e^i_{t'} V^i_{t'}]
//                      / [Σ_j κ^i_j e^i_{t+o_j}             + Σ_{t'} e^i_{t'}],     e^i_{t'} = exp(K^i_{t'})
//   out = Y W_oᵀ + b_o
// Both sums run over the keys that exist and are not padding; causal: t' ≤ t (the window is then
// t − s + 1 .. t). The kernel index is PyTorch's conv1d (a cross-correlation with padding ⌊s/2⌋, or
// s − 1 on the left when causal). A query that sees no key gets Y = 0.
// κ may be negative (down to −1: the paper's formula, kept as it is), but the two terms together weight
// key t' by exp(ŵ_j) e_{t'} > 0 inside the window and by e_{t'} outside. The layer evaluates that
// same quantity as a sum of positive weights: outside the window by prefix and suffix sums (never the
// total minus the window, which would cancel when the window holds most of the mass), inside it by
// exp(ŵ_j) e_{t'} directly.
// Stability: e is taken as exp(K − m) with m the maximum of K over the visible keys of the (sample,
// head) (causal: the running maximum up to t, so that row t reads rows ≤ t only and a shorter
// sequence gives the same prefix bit for bit); the shift cancels in the ratio, the backward
// differentiates the exact function and its suffix recurrences only multiply by factors ≤ 1. The
// kernel enters as the factor exp(ŵ) ≤ exp(|γ|·√(s − 1) + |β|), which overflows only for a learned
// ŵ > 88 (float).
// There is no attention matrix to drop out: dims.dropout is ignored.
// Time O(B·n·d·s) besides the maps, memory O(B·n·d); never n×n. Parallel over (sample, head).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/attention.h"
#include "attention/options.h"
#include "linformer/error.h"
#include "cpu/linear.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr double kKernelEps = 1e-5;  // ε of the kernel's normalisation

struct AftConvOptions {
  int64_t window = 7;
  bool qkv_bias = false;
};

// The widest kernel whose every offset can reach a key of a max_len sequence.
int64_t widest_window(const AttentionDims& dims) { return dims.causal ? dims.max_len : 2 * dims.max_len - 1; }

AftConvOptions parse_aft_conv(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("aft_conv", options);
  AftConvOptions o;
  const int64_t widest = widest_window(dims);
  o.window = r.get_int("window", std::min<int64_t>(7, widest));
  LF_REQUIRE(o.window >= 1, r.where("window"), " must be at least 1, got ", o.window);
  LF_REQUIRE(dims.causal || o.window % 2 == 1, r.where("window"),
             " must be odd without causal masking (offsets −⌊s/2⌋..⌊s/2⌋ centred on the query), got ", o.window);
  LF_REQUIRE(o.window <= widest, r.where("window"), " (", o.window, ") is wider than a sequence of max_len ",
             dims.max_len, " can use: at most ", widest, dims.causal ? " (causal: max_len)" : " (2·max_len − 1)");
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& aft_conv_info() {
  static const AttentionKindInfo info{
      "aft_conv", "AFT-conv: per-head 1-D kernel exp(ŵ)−1 on exp(K)⊙V plus the global sum, O(n·d·s), no n×n",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false}};
  return info;
}

template <class T>
class AftConvAttention final : public Attention<T> {
 public:
  AftConvAttention(const AttentionSpec& spec, const AftConvOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims), opt_(options), arena_(arena) {
    const int64_t d = dims_.d_model, h = dims_.n_heads;
    const Init lin = Init::uniform(1.0 / std::sqrt(double(d)));  // nn.Linear's default bound
    wq_ = arena.declare(spec.prefix + "to_q.weight", {d, d}, lin);
    wk_ = arena.declare(spec.prefix + "to_k.weight", {h, d}, lin);
    wv_ = arena.declare(spec.prefix + "to_v.weight", {d, d}, lin);
    if (opt_.qkv_bias) {
      bq_ = arena.declare(spec.prefix + "to_q.bias", {d}, lin);
      bk_ = arena.declare(spec.prefix + "to_k.bias", {h}, lin);
      bv_ = arena.declare(spec.prefix + "to_v.bias", {d}, lin);
    }
    wo_ = arena.declare(spec.prefix + "to_out.weight", {d, d}, lin);
    bo_ = arena.declare(spec.prefix + "to_out.bias", {d}, lin);
    // γ = β = 0 at the start: ŵ = 0, κ = 0, the layer begins as per-head global pooling and learns
    // its kernel's gain and offset (w's shape is drawn at random, its scale is normalised away).
    kw_ = arena.declare(spec.prefix + "kernel.weight", {h, opt_.window}, Init::uniform(1.0));
    kg_ = arena.declare(spec.prefix + "kernel.gamma", {h}, Init::zeros());
    kb_ = arena.declare(spec.prefix + "kernel.beta", {h}, Init::zeros());
  }

  void forward(const AttentionInput<T>& in, T* out, bool /*training: no dropout*/, uint64_t /*seed*/) override {
    validate_input(in, dims_, aft_conv_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, d = dims_.d_model, h = dims_.n_heads;
    // Padded rows of the key/value source are zeros (a select): nothing they hold reaches K, V or,
    // in the backward, the weights' gradients.
    const T* src = zero_padded_rows(in.x, in.key_padding_mask, B, n, d, clean_);
    q_.resize(size_t(B * n * d));
    k_.resize(size_t(B * n * h));
    v_.resize(size_t(B * n * d));
    linear_forward(in.x, arena_.value(wq_), value_or_null(bq_), q_.data(), B * n, d, d);
    linear_forward(src, arena_.value(wk_), value_or_null(bk_), k_.data(), B * n, d, h);
    linear_forward(src, arena_.value(wv_), value_or_null(bv_), v_.data(), B * n, d, d);
    kernel_forward();
    o_.resize(size_t(B * n * d));
    if (kept_) r_.resize(size_t(B * n * d));
    den_.resize(size_t(B * h * n));
    m_.resize(size_t(B * h * n));
#pragma omp parallel if (in_parallel())
    {
      Scratch s(n);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * h; ++bh) head_forward(bh / h, bh % h, s);
    }
    linear_forward(o_.data(), arena_.value(wo_), arena_.value(bo_), out, B * n, d, d);
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "aft_conv");
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, s = opt_.window;
    std::vector<T> d_o(size_t(B * n * d));
    linear_backward(o_.data(), arena_.value(wo_), dout, d_o.data(), arena_.grad(wo_), arena_.grad(bo_), B * n, d, d);
    release_buffers(o_);
    std::vector<T> dq(size_t(B * n * d)), dk(size_t(B * n * h)), dv(size_t(B * n * d)), hg(size_t(B * n * d));
    std::vector<double> dwhat_part(size_t(B * h * s), 0.0);  // ∂loss/∂ŵ per (sample, head), summed below
#pragma omp parallel if (in_parallel())
    {
      Scratch sc(n);
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * h; ++bh)
        head_backward(bh / h, bh % h, d_o.data(), dq.data(), dk.data(), dv.data(), hg.data(),
                      dwhat_part.data() + bh * s, sc);
    }
    std::vector<double> dwhat(size_t(h * s), 0.0);
    for (int64_t b = 0; b < B; ++b)  // a fixed order: independent of the thread count
      for (int64_t e = 0; e < h * s; ++e) dwhat[size_t(e)] += dwhat_part[size_t(b * h * s + e)];
    kernel_backward(dwhat);
    // The maps: dx = dQ W_q + dK W_k + dV W_v (dK, dV are exactly 0 at padded keys).
    const T* src = in_.key_padding_mask ? clean_.data() : in_.x;
    linear_backward(in_.x, arena_.value(wq_), dq.data(), dx, arena_.grad(wq_), grad_or_null(bq_), B * n, d, d);
    linear_backward(src, arena_.value(wk_), dk.data(), dx, arena_.grad(wk_), grad_or_null(bk_), B * n, d, h, true);
    linear_backward(src, arena_.value(wv_), dv.data(), dx, arena_.grad(wv_), grad_or_null(bv_), B * n, d, d, true);
    (void)dcontext;  // no cross-attention
    release();  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double d = double(dims_.d_model), h = double(dims_.n_heads);
    // Q, V, out: d → d; K: d → h; the window (s multiply-adds per element) and the global sums.
    return 2.0 * B * n * d * (3.0 * d + h) + 2.0 * B * n * d * double(opt_.window + 3);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double bnd = double(B) * n * dims_.d_model, bnh = double(B) * n * dims_.n_heads;
    // q, v, o, the masked copy of x; K, the denominators and maxima; per-thread scratch is O(n).
    if (!training) return sizeof(T) * (4.0 * bnd + 3.0 * bnh) + 8.0 * 8.0 * n;
    // Kept: those and r; backward: dO, dq, dv, g/D (B, n, d) and dk.
    return sizeof(T) * (9.0 * bnd + 4.0 * bnh) + 8.0 * 8.0 * n;
  }

 private:
  // Per-thread work arrays of one (sample, head): O(n) scalars.
  struct Scratch {
    explicit Scratch(int64_t n)
        : k(static_cast<size_t>(n)), e(static_cast<size_t>(n)), mx(static_cast<size_t>(n)),
          sum(static_cast<size_t>(n + 1)), vis(static_cast<size_t>(n)) {}
    std::vector<T> k, e, mx, sum;
    std::vector<uint8_t> vis;
  };

  const T* value_or_null(int id) const { return id < 0 ? nullptr : arena_.value(id); }
  T* grad_or_null(int id) { return id < 0 ? nullptr : arena_.grad(id); }
  bool in_parallel() const { return in_.B * dims_.n_heads > 1 && in_.B * in_.n * dims_.d_model > 32768; }
  // Offset of kernel tap j: t' = t + offset(j).
  int64_t offset(int64_t j) const { return dims_.causal ? j - (opt_.window - 1) : j - opt_.window / 2; }

  void release() { release_buffers(q_, k_, v_, o_, r_, den_, m_, clean_); }

  // ŵ and ω = exp(ŵ) (h, s) from w, γ, β (in double); z and the normalisers kept for the backward.
  void kernel_forward() {
    const int64_t h = dims_.n_heads, s = opt_.window;
    const T* w = arena_.value(kw_);
    const T* gamma = arena_.value(kg_);
    const T* beta = arena_.value(kb_);
    z_.assign(size_t(h * s), 0.0);
    inv_std_.assign(size_t(h), 0.0);
    omega_.resize(size_t(h * s));
    for (int64_t i = 0; i < h; ++i) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < s; ++j) mean += double(w[i * s + j]);
      mean /= double(s);
      for (int64_t j = 0; j < s; ++j) var += (double(w[i * s + j]) - mean) * (double(w[i * s + j]) - mean);
      var /= double(s);
      inv_std_[size_t(i)] = 1.0 / std::sqrt(var + kKernelEps);
      for (int64_t j = 0; j < s; ++j) {
        const double z = (double(w[i * s + j]) - mean) * inv_std_[size_t(i)];
        z_[size_t(i * s + j)] = z;
        omega_[size_t(i * s + j)] = T(std::exp(double(gamma[i]) * z + double(beta[i])));
      }
    }
  }

  // From ∂loss/∂ŵ (h, s): the gradients of w, γ, β (accumulated).
  void kernel_backward(const std::vector<double>& dwhat) {
    const int64_t h = dims_.n_heads, s = opt_.window;
    const T* gamma = arena_.value(kg_);
    T* gw = arena_.grad(kw_);
    T* gg = arena_.grad(kg_);
    T* gb = arena_.grad(kb_);
    for (int64_t i = 0; i < h; ++i) {
      double dg = 0, db = 0, mean_dz = 0, mean_dzz = 0;
      for (int64_t j = 0; j < s; ++j) {
        const double g = dwhat[size_t(i * s + j)], z = z_[size_t(i * s + j)];
        dg += g * z;
        db += g;
        mean_dz += double(gamma[i]) * g;
        mean_dzz += double(gamma[i]) * g * z;
      }
      mean_dz /= double(s);
      mean_dzz /= double(s);
      gg[i] += T(dg);
      gb[i] += T(db);
      // z = (w − μ)/σ with σ² = var + ε: ∂/∂w_j = (dz_j − mean(dz) − z_j mean(dz z)) / σ.
      for (int64_t j = 0; j < s; ++j) {
        const double dz = double(gamma[i]) * dwhat[size_t(i * s + j)], z = z_[size_t(i * s + j)];
        gw[i * s + j] += T((dz - mean_dz - z * mean_dzz) * inv_std_[size_t(i)]);
      }
    }
  }

  // The keys of (b, head i): K into sc.k, visibility into sc.vis, and the shift m_t (non-causal: the
  // maximum over the visible keys; causal: the running maximum up to t; −inf while none is visible)
  // into sc.mx and m_.
  void load_keys(int64_t b, int64_t i, Scratch& sc) {
    const int64_t n = in_.n, h = dims_.n_heads;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T run = neg_inf;
    for (int64_t t = 0; t < n; ++t) {
      sc.k[size_t(t)] = k_[size_t((b * n + t) * h + i)];
      sc.vis[size_t(t)] = !in_.key_padding_mask || !in_.key_padding_mask[b * n + t];
      if (sc.vis[size_t(t)]) run = std::max(run, sc.k[size_t(t)]);
      sc.mx[size_t(t)] = run;
    }
    if (!dims_.causal) std::fill(sc.mx.begin(), sc.mx.end(), run);
    std::copy(sc.mx.begin(), sc.mx.end(), m_.begin() + (b * h + i) * n);
  }

  // Row t of (b, head i): num (d_h) += the window's exp(ŵ_j) e_{t'} V_{t'}, returns the window's
  // Σ exp(ŵ_j) e_{t'}. e_{t'} = exp(K_{t'} − m_t) (the non-causal shift is one number: sc.e holds it).
  T window_forward(int64_t b, int64_t i, int64_t t, const Scratch& sc, T* num) const {
    const int64_t n = in_.n, d = dims_.d_model, dh = d / dims_.n_heads, s = opt_.window;
    const T* omega = omega_.data() + i * s;
    T den = 0;
    for (int64_t j = 0; j < s; ++j) {
      const int64_t u = t + offset(j);
      if (u < 0 || u >= n || !sc.vis[size_t(u)]) continue;
      const T e = dims_.causal ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(t)]) : sc.e[size_t(u)];
      const T c = omega[j] * e;
      const T* v = v_.data() + (b * n + u) * d + i * dh;
      for (int64_t x = 0; x < dh; ++x) num[x] += c * v[x];
      den += c;
    }
    return den;
  }

  // Row t's result from its numerator and denominator: r = num/den (0 when no key is visible),
  // o = σ(Q) r; q_ becomes σ(Q) and r_ is kept for the backward.
  void finish_row(int64_t b, int64_t i, int64_t t, const T* num, T den) {
    const int64_t n = in_.n, d = dims_.d_model, dh = d / dims_.n_heads, row = (b * n + t) * d + i * dh;
    den_[size_t((b * dims_.n_heads + i) * n + t)] = den;
    const T inv = den > T(0) ? T(1) / den : T(0);
    T* q = q_.data() + row;
    T* o = o_.data() + row;
    T* r = kept_ ? r_.data() + row : nullptr;
    for (int64_t x = 0; x < dh; ++x) {
      const T rx = num[x] * inv;
      const T sg = sigmoid(q[x]);
      o[x] = sg * rx;
      q[x] = sg;
      if (r) r[x] = rx;
    }
  }

  void head_forward(int64_t b, int64_t i, Scratch& sc) {
    const int64_t n = in_.n, d = dims_.d_model, dh = d / dims_.n_heads, s = opt_.window;
    load_keys(b, i, sc);
    std::vector<T> pn(static_cast<size_t>(dh), T(0)), num(static_cast<size_t>(dh));
    T pd = 0;
    auto vrow = [&](int64_t u) { return v_.data() + (b * n + u) * d + i * dh; };
    auto orow = [&](int64_t u) { return o_.data() + (b * n + u) * d + i * dh; };
    if (!dims_.causal) {
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
    const int64_t n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = d / h, s = opt_.window;
    // The shifts of the forward (kept in m_) and its keys.
    for (int64_t t = 0; t < n; ++t) {
      sc.k[size_t(t)] = k_[size_t((b * n + t) * h + i)];
      sc.vis[size_t(t)] = !in_.key_padding_mask || !in_.key_padding_mask[b * n + t];
      sc.mx[size_t(t)] = m_[size_t((b * h + i) * n + t)];
    }
    const T* den = den_.data() + (b * h + i) * n;
    std::vector<T> eta(static_cast<size_t>(n));
    auto at = [&](int64_t u) { return (b * n + u) * d + i * dh; };  // row u of this head in (B, n, d)
    // g, dQ, h = g/D, η = g·r/D.
    for (int64_t t = 0; t < n; ++t) {
      const T* sg = q_.data() + at(t);
      const T* r = r_.data() + at(t);
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
    if (!dims_.causal) {
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
    const T* omega = omega_.data() + i * s;
    for (int64_t t = 0; t < n; ++t) {
      if (!(den[t] > T(0))) continue;  // no visible key: nothing flows back
      const T* ht = hg + at(t);
      for (int64_t j = 0; j < s; ++j) {
        const int64_t u = t + offset(j);
        if (u < 0 || u >= n || !sc.vis[size_t(u)]) continue;
        const T e = dims_.causal ? exp_fast<T>(sc.k[size_t(u)] - sc.mx[size_t(t)]) : sc.e[size_t(u)];
        const T c = omega[j] * e;
        const T* v = v_.data() + at(u);
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
      const T* v = v_.data() + at(t);
      const T* g = dv + at(t);
      T dot = 0;
      for (int64_t x = 0; x < dh; ++x) dot += v[x] * g[x];
      dk[(b * n + t) * h + i] += dot;
    }
  }

  AttentionDims dims_;
  AftConvOptions opt_;
  ParamArena<T>& arena_;
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
  int kw_ = -1, kg_ = -1, kb_ = -1;  // kernel.weight (h, s), kernel.gamma (h), kernel.beta (h)

  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  std::vector<T> clean_;              // (B, n, d): x with padded rows zeroed (with a mask)
  std::vector<T> q_, v_, o_, r_;      // (B, n, d); q_ holds σ(Q) after the forward, r_ = Y / σ(Q)
  std::vector<T> k_;                  // (B, n, h)
  std::vector<T> den_, m_;            // (B, h, n): denominators (relative to m) and shifts
  std::vector<T> omega_;              // (h, s): exp(ŵ)
  std::vector<double> z_, inv_std_;   // (h, s) normalised kernel, (h) 1/√(var + ε)
};

}  // namespace

void register_aft_conv_attention(AttentionRegistry& registry) {
  register_kind<AftConvAttention>(registry, aft_conv_info(), parse_aft_conv);
}

}  // namespace lf
