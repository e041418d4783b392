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
// Decoding (kWindow, src/attention/aft_decode.h): the last s − 1 positions' K and V, and the online-
// softmax sums of the older keys (their weight exp(K) carries no kernel): O(s·d) per token and memory,
// whatever the context; the kernel enters as ŵ = log ω in the exponent.
#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/aft_decode.h"
#include "attention/kind_rules.h"
#include "attention/kind_views.h"
#include "attention/options.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "ops/aft.h"
#include "ops/linear.h"

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
    q_.resize(B * n * d);
    k_.resize(B * n * h);
    v_.resize(B * n * d);
    const TensorView<const T> xv = rows(in.x, d), srcv = rows(src, d);
    ops::linear_forward(xv, param(wq_), param(bq_), q_.view({B * n, d}));
    ops::linear_forward(srcv, param(wk_), param(bk_), k_.view({B * n, h}));
    ops::linear_forward(srcv, param(wv_), param(bv_), v_.view({B * n, d}));
    kernel_forward();
    o_.resize(B * n * d);
    if (kept_) r_.resize(B * n * d);
    den_.resize(B * h * n);
    m_.resize(B * h * n);
    ops::aft_conv_forward(heads(q_, d), heads(k_, h), heads(v_, d), mask(), omega(), heads(o_, d),
                          kept_ ? heads(r_, d) : TensorView<T>(), per_head(den_), per_head(m_), dims_.causal);
    ops::linear_forward(o_.view({B * n, d}), param(wo_), param(bo_), rows(out, d));
    if (!kept_) release();
  }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kWindow; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    LF_REQUIRE(dims_.causal, "aft_conv attention: incremental decoding needs a causal layer");
    LF_REQUIRE(B > 0 && d_model == dims_.d_model, "aft_conv attention: decoding needs B > 0 and d = ", dims_.d_model,
               ", got B=", B, " d=", d_model);
    return std::make_unique<AftDecodeState<T>>(B, dims_.n_heads, d_model, opt_.window);
  }

  void decode(DecodeState<T>& base, const T* x, int64_t n, T* out) override {
    auto& st = AftDecodeState<T>::of(base, "aft_conv", n, dims_.n_heads, dims_.d_model, opt_.window, dims_.max_len);
    const int64_t B = st.B, d = dims_.d_model, h = dims_.n_heads, s = opt_.window;
    Buffer<T> q(B * n * d), k(B * n * h), v(B * n * d), o(B * n * d), omega(h * s), what(h * s);
    Buffer<double> z(h * s), inv_std(h);
    const TensorView<const T> xv(x, {B * n, d});
    ops::linear_forward(xv, param(wq_), param(bq_), q.view({B * n, d}));
    ops::linear_forward(xv, param(wk_), param(bk_), k.view({B * n, h}));
    ops::linear_forward(xv, param(wv_), param(bv_), v.view({B * n, d}));
    ops::aft_conv_kernel_forward(param(kw_), param(kg_), param(kb_), omega.view({h, s}), z.view({h, s}),
                                 inv_std.view({h}), kKernelEps);
    // ŵ = log ω (h·s numbers per call): the op adds the kernel in the exponent, shifted with the keys.
    for (int64_t i = 0; i < h * s; ++i) what.data()[i] = T(std::log(double(omega.data()[i])));
    st.append(k.data(), v.data(), n);
    ops::aft_window_decode<T>(q.view({B, n, d}), st.K(), st.V(), st.L, s, what.view({1, h, s}), /*band=*/true,
                              st.mx(), st.sum(), st.num(), o.view({B, n, d}));
    ops::linear_forward(o.view({B * n, d}), param(wo_), param(bo_), TensorView<T>(out, {B * n, d}));
    st.finish(n);
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "aft_conv");
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, s = opt_.window;
    Buffer<T> d_o(B * n * d);
    ops::linear_backward<T>(o_.view({B * n, d}), param(wo_), rows(dout, d), d_o.view({B * n, d}), grad(wo_), grad(bo_));
    release_buffers(o_);
    Buffer<T> dq(B * n * d), dk(B * n * h), dv(B * n * d);
    Buffer<double> dwhat(h * s);
    ops::aft_conv_backward(heads(q_, d), heads(k_, h), heads(v_, d), mask(), omega(), heads(r_, d),
                           per_head(den_), per_head(m_), heads(d_o, d), heads(dq, d), heads(dk, h), heads(dv, d),
                           dwhat.view({h, s}), dims_.causal);
    kernel_backward(dwhat);
    // The maps: dx = dQ W_q + dK W_k + dV W_v (dK, dV are exactly 0 at padded keys).
    const TensorView<const T> xv = rows(in_.x, d), srcv = rows(in_.key_padding_mask ? clean_.data() : in_.x, d);
    const TensorView<T> dxv = rows(dx, d);
    ops::linear_backward<T>(xv, param(wq_), dq.view({B * n, d}), dxv, grad(wq_), grad(bq_));
    ops::linear_backward<T>(srcv, param(wk_), dk.view({B * n, h}), dxv, grad(wk_), grad(bk_), true);
    ops::linear_backward<T>(srcv, param(wv_), dv.view({B * n, d}), dxv, grad(wv_), grad(bv_), true);
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
  TensorView<const T> param(int id) const { return arena_.value_view(id); }
  TensorView<T> grad(int id) { return arena_.grad_view(id); }
  template <class P>
  TensorView<P> rows(P* x, int64_t width) const { return rows_view(in_, x, width); }
  TensorView<T> heads(Buffer<T>& x, int64_t width) const { return x.view({in_.B, in_.n, width}); }
  TensorView<T> per_head(Buffer<T>& x) const { return x.view({in_.B, dims_.n_heads, in_.n}); }
  TensorView<const uint8_t> mask() const { return key_mask_view(in_); }
  TensorView<T> omega() { return omega_.view({dims_.n_heads, opt_.window}); }

  void release() { release_buffers(q_, k_, v_, o_, r_, den_, m_, clean_); }

  // ŵ and ω = exp(ŵ) (h, s) from w, γ, β; z and the normalisers kept for the backward.
  void kernel_forward() {
    const int64_t h = dims_.n_heads, s = opt_.window;
    z_.resize(h * s);
    inv_std_.resize(h);
    omega_.resize(h * s);
    ops::aft_conv_kernel_forward(param(kw_), param(kg_), param(kb_), omega(), z_.view({h, s}), inv_std_.view({h}),
                                 kKernelEps);
  }

  // From ∂loss/∂ŵ (h, s): the gradients of w, γ, β (accumulated).
  void kernel_backward(const Buffer<double>& dwhat) {
    const int64_t h = dims_.n_heads, s = opt_.window;
    ops::aft_conv_kernel_backward<T>(param(kg_), z_.view({h, s}), inv_std_.view({h}), dwhat.view({h, s}), grad(kw_),
                                     grad(kg_), grad(kb_));
  }

  AttentionDims dims_;
  AftConvOptions opt_;
  ParamArena<T>& arena_;
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
  int kw_ = -1, kg_ = -1, kb_ = -1;  // kernel.weight (h, s), kernel.gamma (h), kernel.beta (h)

  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  Buffer<T> clean_;               // (B, n, d): x with padded rows zeroed (with a mask)
  Buffer<T> q_, v_, o_, r_;       // (B, n, d); q_ holds σ(Q) after the forward, r_ = Y / σ(Q)
  Buffer<T> k_;                   // (B, n, h)
  Buffer<T> den_, m_;             // (B, h, n): denominators (relative to m) and shifts
  Buffer<T> omega_;               // (h, s): exp(ŵ)
  Buffer<double> z_, inv_std_;    // (h, s) normalised kernel, (h) 1/√(var + ε)
};

}  // namespace

void register_aft_conv_attention(AttentionRegistry& registry) {
  register_kind<AftConvAttention>(registry, aft_conv_info(), parse_aft_conv);
  set_attention_kind_rules("aft_conv", {"window odd unless causal (a bidirectional window is centred)",
                                       "window at most max_len when causal, 2·max_len − 1 otherwise"});
}

}  // namespace lf
