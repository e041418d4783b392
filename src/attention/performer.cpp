// `performer`: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers"). Softmax's
// kernel exp(q·k/√d_h) is estimated with positive orthogonal random features, so attention runs as
// linear attention (ops/linear_attention.h) over m features:
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ; per head x = Q_t / d_h^{1/4} (same for K)
//   φ(x)_j = exp(w_jᵀx − ‖x‖²/2 − stabiliser) / √m,  j < m,   W = (w_j) (m × d_h) shared by the heads
//   O_t = φ(Q_t) Σ_s φ(K_s)ᵀ V_s / (φ(Q_t) · Σ_s φ(K_s) + eps),   Y = O W_oᵀ + b_o
// E[φ(x)·φ(y)] = exp(x·y) up to the stabilisers, which cancel between numerator and denominator.
// W: orthogonal Gaussian blocks (performer_orthogonal_features; or i.i.d., or rows of norm √d_h:
// ortho_features, ortho_scaling), a fixed (non-trainable) parameter
// `features`, drawn from (seed, layer prefix, draw index): draw 0 at initialisation, and during
// training draw ⌊step / redraw_every⌋ (set_training_step), so it is saved in every checkpoint.
// Stabilisers (constants for the backward; they cancel exactly but for eps and rounding):
//   queries: each row's max of w_jᵀx (its ‖x‖²/2 cancels with it);
//   keys: non-causal, the max of w_jᵀx − ‖x‖²/2 over every valid key and feature of the (batch,
//   head); causal, each key's own max μ_s over its features, and the core weighs key s for query t by
//   e^{μ_s − R_t}, R_t the running max of μ over keys ≤ t (ops/linear_attention.h). Every feature and
//   factor is then ≤ 1: no overflow; and R_t depends on keys ≤ t only, so a causal output is bitwise
//   independent of every later input. (performer-pytorch and google-research's FAVOR+ take the keys'
//   max over the whole sequence, causal or not, so a later key moves earlier outputs by rounding.)
// generalized_attention (performer-pytorch's, the paper's §"generalized attention"): φ(x)_j =
// relu(w_jᵀx) + kernel_epsilon on the same x, no stabiliser; kernel_fn names the function (relu).
// no_projection (performer-pytorch's): no W; φ(q) = softmax over q's d_h entries, φ(k) = causal exp(k),
// else the softmax of k over the positions (per entry), as performer-pytorch's FastAttention.
// eps = 1e-20: far below the stabilised denominators (≥ ~1e-12 unless every feature underflowed), so
// it never biases the estimate. No probabilities are formed: attention dropout does not apply.
// Decoding (kRecurrent): per head the state (S, z) of m_f·(d_h + 1) numbers and R, whatever the context.
// Time O(B·(n + m)·h·m_f·d_h) (+ O(B·n·h·C·(m_f + d_h)) causal), memory O(B·(n + m)·h·m_f).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/linear_core.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "ops/elementwise.h"
#include "ops/linear_attention.h"
#include "ops/matmul.h"

namespace lf {
namespace {

constexpr double kPerformerEps = 1e-20;

struct PerformerOptions {
  int64_t features = 0;        // m_f
  int64_t redraw_every = 1000;  // steps; 0 = never
  int64_t seed = 0;
  bool qkv_bias = false;
  int64_t chunk = 64;
  PerformerFeatureDraw draw = PerformerFeatureDraw::kOrthogonal;  // ortho_features, ortho_scaling
  bool generalized = false;     // φ = relu(c·W x) + kernel_epsilon instead of FAVOR+'s softmax features
  bool no_projection = false;   // no random features: softmax of q over its d_h entries, of k over positions
  double kernel_epsilon = 1e-3;
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
  const bool ortho = r.get_bool("ortho_features", true);
  const int64_t scaling = r.get_int("ortho_scaling", 0);
  LF_REQUIRE(scaling == 0 || scaling == 1, r.where("ortho_scaling"),
             " must be 0 (rows of Gaussian norms) or 1 (rows of norm √d_h), got ", scaling);
  LF_REQUIRE(ortho || scaling == 0, r.where("ortho_scaling"),
             " applies to orthogonal features only: with ortho_features false every entry is i.i.d. N(0, 1)");
  o.draw = !ortho ? PerformerFeatureDraw::kIid
           : scaling == 1 ? PerformerFeatureDraw::kOrthogonalSqrtD
                          : PerformerFeatureDraw::kOrthogonal;
  o.generalized = r.get_bool("generalized_attention", false);
  o.no_projection = r.get_bool("no_projection", false);
  LF_REQUIRE(!(o.no_projection && o.generalized), r.where("no_projection"),
             " and generalized_attention exclude each other (no_projection uses no features to apply a kernel to)");
  r.get_choice("kernel_fn", "relu", {"relu"});
  o.kernel_epsilon = r.get_double("kernel_epsilon", 1e-3);
  LF_REQUIRE(std::isfinite(o.kernel_epsilon) && o.kernel_epsilon >= 0, r.where("kernel_epsilon"),
             " must be a finite number ≥ 0, got ", o.kernel_epsilon);
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
        dh_(spec.dims.d_model / spec.dims.n_heads),
        mf_(options.no_projection ? dh_ : options.features) {
    if (opt_.no_projection) return;  // no random features to hold
    const uint64_t seed = uint64_t(opt_.seed);
    const std::string prefix = prefix_;
    const int64_t mf = opt_.features, dh = dh_;
    const PerformerFeatureDraw how = opt_.draw;
    // Draw 0, whatever the arena's seed: a redraw must be able to reproduce any draw from the options.
    w_ = arena.declare(prefix_ + "features", {mf, dh},
                       Init::custom([how, seed, prefix, mf, dh](uint64_t, double* out, int64_t) {
                         performer_features(how, seed, prefix, 0, mf, dh, out);
                       }),
                       /*trainable=*/false);
  }

  void set_training_step(int64_t step) override {
    LF_REQUIRE(step >= 0, "performer attention: training step must be non-negative, got ", step);
    if (opt_.redraw_every <= 0 || opt_.no_projection) return;
    const int64_t draw = step / opt_.redraw_every;
    if (draw == held_draw_) return;
    LF_REQUIRE(arena_.allocated(), "performer attention: set_training_step() before the arena was allocated");
    // Drawn on the host, as Init::custom draws the first: a parameter's value, written where the arena
    // keeps it (host memory), not an activation.
    std::vector<double> w(static_cast<size_t>(opt_.features * dh_));
    performer_features(opt_.draw, uint64_t(opt_.seed), prefix_, draw, opt_.features, dh_, w.data());
    T* dst = arena_.value(w_);
    for (size_t i = 0; i < w.size(); ++i) dst[i] = T(w[i]);  // as Init::custom casts it
    held_draw_ = draw;
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, performer_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, m = in.kv_len(), d = dims_.d_model, h = dims_.n_heads, mf = mf_;
    const TensorView<const uint8_t> key_mask = ops::key_mask_view(in.key_padding_mask, B, m);
    maps_.project_in(in, q_, k_, v_);
    // U = c·x Wᵀ for every (position, head) row of d_h: (B·n·h, m_f), then the feature maps in place.
    fq_.resize(B * n * h * mf);
    fk_.resize(B * m * h * mf);
    project_features(q_, fq_, B * n * h);
    project_features(k_, fk_, B * m * h);
    const TensorView<T> fq = heads(fq_, B, n, mf), fk = heads(fk_, B, m, mf);
    if (opt_.no_projection) {
      // Queries: exp(q − max) (the softmax up to a per-row factor, which cancels between the core's
      // numerator and denominator). Keys: causal exp(k − μ_s) with each key's own max as the shift
      // (the core's e^{μ_s − R_t} restores exp(k)); otherwise the softmax over the positions.
      ops::favor_query_features<T>(fq, fq);
      shift_.resize(B * h * (dims_.causal ? m : 1));
      ops::favor_key_features<T>(heads(k_, B, m, dh_), fk, key_mask, 0.0, core_options(), fk, stabilisers(B));
      if (!dims_.causal) ops::column_softmax_forward<T>(fk, fk);
    } else if (opt_.generalized) {  // nothing to stabilise: every feature is at most linear in x
      ops::relu_features_forward<T>(fq, opt_.kernel_epsilon, fq);
      ops::relu_features_forward<T>(fk, opt_.kernel_epsilon, fk);
    } else {
      ops::favor_query_features<T>(fq, fq);
      // The keys' stabilisers (B, h, m) causal (each key's own), (B, h, 1) otherwise (one for every key).
      shift_.resize(B * h * (dims_.causal ? m : 1));
      ops::favor_key_features<T>(heads(k_, B, m, dh_), fk, key_mask, 0.5 / std::sqrt(double(dh_)), core_options(), fk,
                                 stabilisers(B));
    }
    o_.resize(B * n * d);
    den_.resize(B * h * n);
    ops::linear_attention_forward<T>(fq, fk, heads(v_, B, m, dh_), key_mask, core_key_shift(B), core_options(),
                                     heads(o_, B, n, dh_), den_.view({B, h, n}));
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, fq_, fk_, o_, den_, shift_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "performer");
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len(), h = dims_.n_heads, mf = mf_;
    Buffer<T> d_o(B * n * d), dq(B * n * d), dk(B * m * d), dv(B * m * d);
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    Buffer<T> dfq(B * n * h * mf), dfk(B * m * h * mf);
    const TensorView<T> fq = heads(fq_, B, n, mf), fk = heads(fk_, B, m, mf);
    const TensorView<T> gq = heads(dfq, B, n, mf), gk = heads(dfk, B, m, mf);
    ops::linear_attention_backward<T>(fq, fk, heads(v_, B, m, dh_), ops::key_mask_view(in_.key_padding_mask, B, m),
                                      core_key_shift(B), core_options(), heads(o_, B, n, dh_),
                                      den_.view({B, h, n}), heads(d_o, B, n, dh_), gq, gk,
                                      heads(dv, B, m, dh_));
    // φ_j = exp(c·w_jᵀq − c²‖q‖²/2 − M)/√m_f (keys; queries without the norm term, which their row's
    // stabiliser absorbs): dq = c·Σ_j g_j w_j − c²·q·Σ_j g_j with g = dφ ∘ φ.
    // Generalized: φ = relu(c·Wx) + ε, so dx = c·Σ_j g_j w_j with g = dφ where φ > ε.
    const T c = feature_scale();
    const int64_t qrows = B * n * h, krows = B * m * h;
    if (opt_.no_projection) {
      ops::favor_features_backward<T>(fq, gq, gq);
      if (dims_.causal)
        ops::favor_features_backward<T>(fk, gk, gk);
      else
        ops::column_softmax_backward<T>(fk, gk, gk);
    } else if (opt_.generalized) {
      ops::relu_features_backward<T>(fq, opt_.kernel_epsilon, gq, gq);
      ops::relu_features_backward<T>(fk, opt_.kernel_epsilon, gk, gk);
    } else {
      ops::favor_features_backward<T>(fq, gq, gq);
      ops::favor_features_backward<T>(fk, gk, gk);
    }
    if (opt_.no_projection) {  // u = q, k
      ops::copy<T>(dfq.view({qrows, mf}), dq.view({qrows, dh_}));
      ops::copy<T>(dfk.view({krows, mf}), dk.view({krows, dh_}));
    } else {
      ops::matmul<T>(dfq.view({qrows, mf}), features(), dq.view({qrows, dh_}), c);
      ops::matmul<T>(dfk.view({krows, mf}), features(), dk.view({krows, dh_}), c);
    }
    if (!opt_.generalized && !opt_.no_projection)
      ops::favor_key_norm_backward<T>(k_.view({krows, dh_}), dfk.view({krows, mf}), c * c, dk.view({krows, dh_}));
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "performer");
    release_buffers(q_, k_, v_, fq_, fk_, o_, den_, shift_);  // one backward per forward
    kept_ = false;
  }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kRecurrent; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    check_begin_decode(dims_, B, d_model, "performer");
    return std::make_unique<LinearDecodeState<T>>(B, dims_.n_heads, mf_, dh_, /*scaled=*/!opt_.generalized);
  }

  // The forward's feature maps on the new rows (each key's stabiliser is its own), then the core from
  // the carried state.
  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    const int64_t d = dims_.d_model, h = dims_.n_heads, mf = mf_;
    LinearDecodeState<T>& st =
        LinearDecodeState<T>::of(base, "performer", n_new, h, mf, dh_, /*scaled=*/!opt_.generalized);
    const int64_t B = st.B;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n_new);
    Buffer<T> q, k, v, fq(B * n_new * h * mf), fk(fq.size()), shift(B * h * n_new), o(B * n_new * d);
    Buffer<T> den(B * h * n_new);
    maps_.project_in(in, q, k, v);
    project_features(q, fq, B * n_new * h);
    project_features(k, fk, B * n_new * h);
    const TensorView<T> phi_q = heads(fq, B, n_new, mf), phi_k = heads(fk, B, n_new, mf);
    if (opt_.generalized) {
      ops::relu_features_forward<T>(phi_q, opt_.kernel_epsilon, phi_q);
      ops::relu_features_forward<T>(phi_k, opt_.kernel_epsilon, phi_k);
      ops::linear_attention_decode<T>(phi_q, phi_k, heads(v, B, n_new, dh_), {}, core_options(),
                                      st.H.view({B, h, mf, dh_}), st.z.view({B, h, mf}), {}, heads(o, B, n_new, dh_),
                                      den.view({B, h, n_new}));
    } else {
      ops::favor_query_features<T>(phi_q, phi_q);
      ops::favor_key_features<T>(heads(k, B, n_new, dh_), phi_k, {}, opt_.no_projection ? 0.0 : 0.5 / std::sqrt(double(dh_)),
                                 core_options(), phi_k, shift.view({B, h, n_new}));
      ops::linear_attention_decode<T>(phi_q, phi_k, heads(v, B, n_new, dh_), shift.view({B, h, n_new}), core_options(),
                                      st.H.view({B, h, mf, dh_}), st.z.view({B, h, mf}), st.R.view({B, h}),
                                      heads(o, B, n_new, dh_), den.view({B, h, n_new}));
    }
    maps_.project_out(o.data(), out, B * n_new);
    st.length += n_new;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double features = opt_.no_projection ? 0.0 : 2.0 * B * double(n + m) * dims_.n_heads * mf_ * dh_;
    return maps_.flops(B, n, m) + features + ops::linear_attention_flops(core_sizes(B, n, m), core_options());
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double d = double(dims_.d_model), h = double(dims_.n_heads), mf = double(mf_);
    const double nd = double(B) * n * d, md = double(B) * m * d, nf = double(B) * n * h * mf, kf = double(B) * m * h * mf;
    const double small = double(B) * h * (n + m);  // denominators, chunk shifts
    const double scratch = ops::linear_attention_scratch_bytes(core_sizes(B, n, m), core_options(), sizeof(T));
    // q, o (B, n, d); k, v, the masked context copy (B, m, d); φq (B, n, h·m_f), φk (B, m, h·m_f).
    const double fwd = sizeof(T) * (2.0 * nd + 3.0 * md + nf + kf + small) + scratch;
    if (!training) return fwd;
    // Backward: dO, dq; dk, dv and backward_in's own; dφq, dφk.
    return fwd + sizeof(T) * (2.0 * nd + 3.0 * md + nf + kf);
  }

 private:
  ops::LinearAttentionOptions core_options() const { return {dims_.causal, opt_.chunk, kPerformerEps}; }
  // m_f features per head, values d_h wide.
  ops::LinearAttentionSizes core_sizes(int64_t B, int64_t n, int64_t m) const {
    return {B, dims_.n_heads, n, m, mf_, dims_.d_model / dims_.n_heads};
  }

  // c = d_h^{-1/4}: queries and keys enter the features as x / d_h^{1/4}.
  T feature_scale() const { return T(std::pow(double(dh_), -0.25)); }
  // u (rows, m_f) = c·x Wᵀ for rows of d_h, or x itself with no_projection (m_f = d_h).
  void project_features(Buffer<T>& x, Buffer<T>& u, int64_t rows) const {
    if (opt_.no_projection)
      ops::copy<T>(x.view({rows, dh_}), u.view({rows, mf_}));
    else
      ops::matmul<T>(x.view({rows, dh_}), features().t(), u.view({rows, mf_}), feature_scale());
  }
  // W (m_f, d_h).
  TensorView<const T> features() const { return matrix<const T>(arena_.value(w_), opt_.features, dh_); }
  // x (B, len, h·w) seen per head: (B, len, h, w).
  TensorView<T> heads(Buffer<T>& x, int64_t B, int64_t len, int64_t w) const {
    return x.view({B, len, dims_.n_heads, w});
  }
  // The keys' stabilisers M (B, h, chunks), from shift_.
  TensorView<T> stabilisers(int64_t B) {
    const int64_t h = dims_.n_heads;
    return shift_.view({B, h, shift_.size() / (B * h)});
  }
  // The core's key shifts: the stabilisers when causal; otherwise one M per (batch, head), which cancels.
  // Generalized attention has none.
  TensorView<const T> core_key_shift(int64_t B) {
    return dims_.causal && !opt_.generalized ? stabilisers(B) : TensorView<T>();
  }

  AttentionDims dims_;
  PerformerOptions opt_;
  QkvoProjections<T> maps_;
  ParamArena<T>& arena_;
  std::string prefix_;
  int64_t dh_ = 0;
  int64_t mf_ = 0;  // features per head: m_f, or d_h with no_projection
  int w_ = -1;              // features (m_f, d_h), fixed
  int64_t held_draw_ = -1;  // the draw set_training_step last wrote (-1: none
                            // yet, e.g. loaded weights)

  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  Buffer<T> q_, k_, v_;  // (B, n, d), (B, m, d), (B, m, d)
  Buffer<T> fq_, fk_;    // φ(Q) (B, n, h·m_f), φ(K) (B, m, h·m_f) (zero rows at padding)
  Buffer<T> o_, den_;    // O (B, n, d); denominators (B, h, n)
  Buffer<T> shift_;      // key stabilisers (B, h, chunks) (not causal: one chunk)
};

}  // namespace

void register_performer_attention(AttentionRegistry& registry) {
  register_kind<PerformerAttention>(registry, performer_info(), parse_performer);
}

}  // namespace lf
