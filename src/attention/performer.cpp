// `performer`: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers"). Softmax's
// kernel exp(q·k/√d_h) is estimated with positive orthogonal random features, so attention runs as
// linear attention (linear_core.h) over m features:
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ; per head x = Q_t / d_h^{1/4} (same for K)
//   φ(x)_j = exp(w_jᵀx − ‖x‖²/2 − stabiliser) / √m,  j < m,   W = (w_j) (m × d_h) shared by the heads
//   O_t = φ(Q_t) Σ_s φ(K_s)ᵀ V_s / (φ(Q_t) · Σ_s φ(K_s) + eps),   Y = O W_oᵀ + b_o
// E[φ(x)·φ(y)] = exp(x·y) up to the stabilisers, which cancel between numerator and denominator.
// W: orthogonal Gaussian blocks (performer_orthogonal_features), a fixed (non-trainable) parameter
// `features`, drawn from (seed, layer prefix, draw index): draw 0 at initialisation, and during
// training draw ⌊step / redraw_every⌋ (set_training_step), so it is saved in every checkpoint.
// Stabilisers (constants for the backward; they cancel exactly but for eps and rounding):
//   queries: each row's max of w_jᵀx (its ‖x‖²/2 cancels with it);
//   keys: non-causal, the max of w_jᵀx − ‖x‖²/2 over every valid key and feature of the (batch,
//   head); causal, a running max per chunk (a chunk's max covers its keys and every earlier one),
//   the carried state rescaled when it grows. The largest feature is then 1/√m: no overflow.
// eps = 1e-20: far below the stabilised denominators (≥ ~1e-12 unless every feature underflowed), so
// it never biases the estimate and a causal output depends on later keys of its chunk (through the
// chunk's max) only by rounding. No probabilities are formed: attention dropout does not apply.
// Time O(B·(n + m)·h·m_f·d_h) (+ O(B·n·h·C·(m_f + d_h)) causal), memory O(B·(n + m)·h·m_f).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/attention.h"
#include "attention/linear_core.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/error.h"
#include "linformer/runtime.h"
#include "cpu/gemm.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr double kPerformerEps = 1e-20;

struct PerformerOptions {
  int64_t features = 0;        // m_f
  int64_t redraw_every = 1000;  // steps; 0 = never
  int64_t seed = 0;
  bool qkv_bias = false;
  int64_t chunk = 64;
};

// performer-pytorch's default: int(d_h · ln d_h), at least 1.
int64_t default_features(int64_t d_h) { return std::max<int64_t>(1, int64_t(double(d_h) * std::log(double(d_h)))); }

PerformerOptions parse_performer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("performer", options);
  PerformerOptions o;
  const int64_t d_h = dims.n_heads > 0 ? dims.d_model / dims.n_heads : 1;
  o.features = r.get_int("features", default_features(d_h));
  LF_REQUIRE(o.features >= 1 && o.features <= 65536, r.where("features"), " must be in [1, 65536], got ", o.features);
  o.redraw_every = r.get_int("redraw_every", 1000);
  LF_REQUIRE(o.redraw_every >= 0, r.where("redraw_every"), " must be 0 (never) or a positive number of steps, got ",
             o.redraw_every);
  o.seed = r.get_int("seed", 0);
  LF_REQUIRE(o.seed >= 0, r.where("seed"), " must be non-negative, got ", o.seed);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  o.chunk = read_linear_chunk(r);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& performer_info() {
  static const AttentionKindInfo info{
      "performer", "Performer (FAVOR+): positive orthogonal random features for softmax, O(n·m_f·d)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true}};
  return info;
}

template <class T>
class PerformerAttention final : public Attention<T> {
 public:
  PerformerAttention(const AttentionSpec& spec, const PerformerOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims),
        opt_(options),
        maps_(arena, spec.prefix, spec.dims.d_model, opt_.qkv_bias),
        arena_(arena),
        prefix_(spec.prefix),
        dh_(spec.dims.d_model / spec.dims.n_heads) {
    const uint64_t seed = uint64_t(opt_.seed);
    const std::string prefix = prefix_;
    const int64_t mf = opt_.features, dh = dh_;
    // Draw 0, whatever the arena's seed: a redraw must be able to reproduce any draw from the options.
    w_ = arena.declare(prefix_ + "features", {mf, dh}, Init::custom([seed, prefix, mf, dh](uint64_t, double* out, int64_t) {
                         performer_orthogonal_features(seed, prefix, 0, mf, dh, out);
                       }),
                       /*trainable=*/false);
  }

  void set_training_step(int64_t step) override {
    LF_REQUIRE(step >= 0, "performer attention: training step must be non-negative, got ", step);
    if (opt_.redraw_every <= 0) return;
    const int64_t draw = step / opt_.redraw_every;
    if (draw == held_draw_) return;
    LF_REQUIRE(arena_.allocated(), "performer attention: set_training_step() before the arena was allocated");
    std::vector<double> w(static_cast<size_t>(opt_.features * dh_));
    performer_orthogonal_features(uint64_t(opt_.seed), prefix_, draw, opt_.features, dh_, w.data());
    T* dst = arena_.value(w_);
    for (size_t i = 0; i < w.size(); ++i) dst[i] = T(w[i]);  // as Init::custom casts it
    held_draw_ = draw;
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, performer_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, m = in.kv_len(), d = dims_.d_model, h = dims_.n_heads, mf = opt_.features;
    maps_.project_in(in, q_, k_, v_);
    shape_ = core_shape(B, n, m, in.key_padding_mask);
    // U = x Wᵀ for every (position, head) row of d_h: (B·n·h, m_f), then the feature maps in place.
    fq_.resize(size_t(B * n * h * mf));
    fk_.resize(size_t(B * m * h * mf));
    const T c = T(std::pow(double(dh_), -0.25));
    const T* W = arena_.value(w_);
    gemm<T>(false, true, B * n * h, mf, dh_, c, q_.data(), dh_, W, dh_, T(0), fq_.data(), mf);
    gemm<T>(false, true, B * m * h, mf, dh_, c, k_.data(), dh_, W, dh_, T(0), fk_.data(), mf);
    query_features();
    key_features();
    o_.resize(size_t(B * n * d));
    den_.resize(size_t(B * h * n));
    linear_core_forward<T>(shape_, fq_.data(), fk_.data(), v_.data(), shift_or_null(), o_.data(), den_.data());
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, fq_, fk_, o_, den_, shift_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "performer");
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len(), h = dims_.n_heads, mf = opt_.features;
    std::vector<T> d_o(size_t(B * n * d)), dq(size_t(B * n * d)), dk(size_t(B * m * d)), dv(size_t(B * m * d));
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    std::vector<T> dfq(size_t(B * n * h * mf)), dfk(size_t(B * m * h * mf));
    linear_core_backward<T>(shape_, fq_.data(), fk_.data(), v_.data(), shift_or_null(), o_.data(), den_.data(),
                            d_o.data(), dfq.data(), dfk.data(), dv.data());
    // φ_j = exp(c·w_jᵀq − c²‖q‖²/2 − M)/√m_f (keys; queries without the norm term, which their row's
    // stabiliser absorbs): dq = c·Σ_j g_j w_j − c²·q·Σ_j g_j with g = dφ ∘ φ.
    const T c = T(std::pow(double(dh_), -0.25));
    const T* W = arena_.value(w_);
    const int64_t qrows = B * n * h, krows = B * m * h;
    multiply_in_place(dfq, fq_);
    multiply_in_place(dfk, fk_);
    gemm<T>(false, false, qrows, dh_, mf, c, dfq.data(), mf, W, dh_, T(0), dq.data(), dh_);
    gemm<T>(false, false, krows, dh_, mf, c, dfk.data(), mf, W, dh_, T(0), dk.data(), dh_);
    const T c2 = c * c;
#pragma omp parallel for schedule(static) if (krows * mf > 65536)
    for (int64_t i = 0; i < krows; ++i) {
      const T* g = dfk.data() + i * mf;
      T sum = 0;
      for (int64_t j = 0; j < mf; ++j) sum += g[j];
      const T* kr = k_.data() + i * dh_;
      T* dkr = dk.data() + i * dh_;
      for (int64_t e = 0; e < dh_; ++e) dkr[e] -= c2 * sum * kr[e];
    }
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "performer");
    release_buffers(q_, k_, v_, fq_, fk_, o_, den_, shift_);  // one backward per forward
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double features = 2.0 * B * double(n + m) * dims_.n_heads * opt_.features * dh_;
    return maps_.flops(B, n, m) + features + linear_core_flops(core_shape(B, n, m));
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double d = double(dims_.d_model), h = double(dims_.n_heads), mf = double(opt_.features);
    const double nd = double(B) * n * d, md = double(B) * m * d, nf = double(B) * n * h * mf, kf = double(B) * m * h * mf;
    const double small = double(B) * h * (n + m);  // denominators, chunk shifts
    const double scratch = linear_core_scratch_bytes(core_shape(B, n, m), sizeof(T));
    // q, o (B, n, d); k, v, the masked context copy (B, m, d); φq (B, n, h·m_f), φk (B, m, h·m_f).
    const double fwd = sizeof(T) * (2.0 * nd + 3.0 * md + nf + kf + small) + scratch;
    if (!training) return fwd;
    // Backward: dO, dq; dk, dv and backward_in's own; dφq, dφk.
    return fwd + sizeof(T) * (2.0 * nd + 3.0 * md + nf + kf);
  }

 private:
  LinearCoreShape core_shape(int64_t B, int64_t n, int64_t m, const uint8_t* key_mask = nullptr) const {
    return linear_core_shape(dims_, opt_.features, opt_.chunk, kPerformerEps, B, n, m, key_mask);
  }

  const T* shift_or_null() const { return dims_.causal ? shift_.data() : nullptr; }

  static void multiply_in_place(std::vector<T>& g, const std::vector<T>& phi) {
    const int64_t n = int64_t(g.size());
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) g[size_t(i)] *= phi[size_t(i)];
  }

  // fq_ rows (B·n·h, m_f) from U = c·Q Wᵀ: φ_j = exp(u_j − max_j u_j) / √m_f.
  void query_features() {
    const int64_t rows = in_.B * in_.n * dims_.n_heads, mf = opt_.features;
    const T inv_sqrt = T(1.0 / std::sqrt(double(mf)));
#pragma omp parallel for schedule(static) if (rows * mf > 65536)
    for (int64_t i = 0; i < rows; ++i) {
      T* u = fq_.data() + i * mf;
      T mx = u[0];
      for (int64_t j = 1; j < mf; ++j) mx = std::max(mx, u[j]);
#pragma omp simd
      for (int64_t j = 0; j < mf; ++j) u[j] = exp_fast<T>(u[j] - mx) * inv_sqrt;
    }
  }

  // fk_ rows (B·m·h, m_f) from U = c·K Wᵀ: e_j = u_j − c²‖k‖²/2, φ_j = exp(e_j − M)/√m_f with M the
  // shared max of e over the valid keys of the (batch, head) (causal: of the chunk and the ones
  // before it, kept in shift_ (B, h, chunks)); padded keys' rows selected to 0.
  void key_features() {
    const int64_t B = in_.B, m = in_.kv_len(), h = dims_.n_heads, mf = opt_.features;
    const T c2_half = T(0.5 / std::sqrt(double(dh_)));  // c²/2 with c = d_h^{-1/4}
    const T inv_sqrt = T(1.0 / std::sqrt(double(mf)));
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const uint8_t* mask = in_.key_padding_mask;
    const int64_t C = opt_.chunk, chunks = dims_.causal ? shape_.key_chunks() : 1, span = dims_.causal ? C : m;
    // e_j in place, and the max per (batch, head, chunk): rows are (b, s, head).
    std::vector<T> chunk_max(size_t(B * h * chunks), neg_inf);
#pragma omp parallel for schedule(static) if (B * m * h * mf > 65536)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h;
      for (int64_t s = 0; s < m; ++s) {
        if (mask && mask[b * m + s]) continue;
        const int64_t row = (b * m + s) * h + hd;
        const T* kr = k_.data() + row * dh_;
        T sq = 0;
        for (int64_t e = 0; e < dh_; ++e) sq += kr[e] * kr[e];
        const T half = c2_half * sq;
        T* u = fk_.data() + row * mf;
        T mx = neg_inf;
        for (int64_t j = 0; j < mf; ++j) {
          u[j] -= half;
          mx = std::max(mx, u[j]);
        }
        T& cm = chunk_max[size_t(bh * chunks + s / span)];
        cm = std::max(cm, mx);
      }
    }
    // Causal: a running max over the chunks.
    if (dims_.causal) {
      for (int64_t bh = 0; bh < B * h; ++bh)
        for (int64_t c = 1; c < chunks; ++c)
          chunk_max[size_t(bh * chunks + c)] = std::max(chunk_max[size_t(bh * chunks + c)], chunk_max[size_t(bh * chunks + c - 1)]);
      shift_ = chunk_max;
    }
#pragma omp parallel for schedule(static) if (B * m * h * mf > 65536)
    for (int64_t bs = 0; bs < B * m; ++bs) {
      const int64_t b = bs / m, s = bs % m;
      for (int64_t hd = 0; hd < h; ++hd) {
        T* u = fk_.data() + (bs * h + hd) * mf;
        if (mask && mask[bs]) {
          std::fill(u, u + mf, T(0));
          continue;
        }
        const T M = chunk_max[size_t((b * h + hd) * chunks + s / span)];
#pragma omp simd
        for (int64_t j = 0; j < mf; ++j) u[j] = exp_fast<T>(u[j] - M) * inv_sqrt;
      }
    }
  }

  AttentionDims dims_;
  PerformerOptions opt_;
  QkvoProjections<T> maps_;
  ParamArena<T>& arena_;
  std::string prefix_;
  int64_t dh_ = 0;
  int w_ = -1;               // features (m_f, d_h), fixed
  int64_t held_draw_ = -1;   // the draw set_training_step last wrote (-1: none yet, e.g. loaded weights)

  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  LinearCoreShape shape_;
  std::vector<T> q_, k_, v_;  // (B, n, d), (B, m, d), (B, m, d)
  std::vector<T> fq_, fk_;    // φ(Q) (B, n, h·m_f), φ(K) (B, m, h·m_f) (zero rows at padding)
  std::vector<T> o_, den_;    // O (B, n, d); denominators (B, h, n)
  std::vector<T> shift_;      // causal: key stabilisers (B, h, chunks)
};

}  // namespace

void register_performer_attention(AttentionRegistry& registry) {
  register_kind<PerformerAttention>(registry, performer_info(), parse_performer);
}

}  // namespace lf
