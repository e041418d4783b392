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
// Decoding (src/attention/aft_decode.h, ops::aft_window_decode): aft_full keeps every position's K and V
// (kKvCache, O(t·d) work per token at context t, its bias row from U Vᵀ or the stored matrix); aft_local
// the last s − 1 positions' and the online-softmax sums of the older keys, which carry no bias (kWindow,
// O(s·d) per token whatever the context). A prompt runs as one call: its bias block, factored, is a
// GEMM of n × (n + s − 1) (aft_local) or n × t (aft_full) entries.
// No probabilities are formed, so `dropout` is not applied. The cores (the gate, the sums, the exact
// path and the bias gradients) are ops (src/ops/aft.h), their kernels in src/cpu/aft_position.cpp.
#include <algorithm>
#include <cmath>
#include <string>

#include "attention/aft_decode.h"
#include "attention/kind_views.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/aft.h"
#include "ops/matmul.h"

namespace lf {
namespace {

// R, the query rows per block: min(max_len/8, d/2) within [16, 256], so that the R × n block buffers
// stay below a (n, d) buffer (256 rows keep the GEMMs near the machine's peak at d = 512). It depends
// on the layer, not on a call's n: a shorter causal sequence is cut into the same blocks.
int64_t row_block(const AttentionDims& dims) {
  return std::clamp<int64_t>(std::min(dims.max_len / 8, dims.d_model / 2), 16, 256);
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

// ---- what both kinds share: the maps, the buffers -----------------------------------------------

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
    const int64_t total = B_ * n_ * dims_.d_model;
    maps_.project_in(in, q_, k_, v_);
    a_.resize(total);
    den_.resize(total);
    o_.resize(total);
    core_forward();  // q_ holds σ(Q) from here
    maps_.project_out(o_.data(), out, B_ * n_);
    if (!kept_) release_all();
  }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    LF_REQUIRE(dims_.causal, info_.name, " attention: incremental decoding needs a causal layer");
    LF_REQUIRE(B > 0 && d_model == dims_.d_model, info_.name, " attention: decoding needs B > 0 and d = ",
               dims_.d_model, ", got B=", B, " d=", d_model);
    return std::make_unique<AftDecodeState<T>>(B, d_model, d_model, decode_window());
  }

  // The maps on the new rows, the cache with them, the bias of their window, then the op.
  void decode(DecodeState<T>& base, const T* x, int64_t n, T* out) override {
    auto& st = AftDecodeState<T>::of(base, info_.name.c_str(), n, dims_.d_model, dims_.d_model, decode_window(),
                                     dims_.max_len);
    const int64_t B = st.B, d = dims_.d_model;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n);
    Buffer<T> q, k, v, o(B * n * d), dense;
    maps_.project_in(in, q, k, v);
    st.append(k.data(), v.data(), n);
    const int64_t P = st.length + n, L = st.L;  // positions so far, cached rows (the new ones last)
    bool band = false;
    TensorView<const T> bias;
    if (u_ >= 0) {  // w = U Vᵀ: rows P − n .. P − 1 against the cached keys' positions P − L .. P − 1
      const int64_t r = opts_.bias_rank;
      dense.resize(n * L);
      ops::matmul<T>(matrix<const T>(arena_.value(u_) + (P - n) * r, n, r),
                     matrix<const T>(arena_.value(pv_) + (P - L) * r, L, r).t(), dense.view({n, L}));
      bias = matrix<const T>(dense.data(), n, L);
    } else {
      bias = stored_bias(P, n, L, band);
    }
    const int64_t window = decode_window() > 0 ? decode_window() : L;
    ops::aft_window_decode<T>(q.view({B, n, d}), st.K(), st.V(), L, window, bias, band, st.mx(), st.sum(), st.num(),
                              o.view({B, n, d}));
    maps_.project_out(o.data(), out, B * n);
    st.finish(n);
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, info_.name);
    const int64_t total = B_ * n_ * dims_.d_model;
    Buffer<T> h(total), dq(total), dk(total), dv(total);
    maps_.backward_out(o_.data(), dout, h.data(), B_ * n_);  // dY, then H = dL/dA
    core_backward(h, dq, dk, dv);
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, info_.name);
    release_all();  // one backward per forward
    kept_ = false;
  }

 protected:
  // o_, a_ (A, before the gate) and den_ (the shifted denominators) from q_ (becoming σ(Q)), k_, v_.
  virtual void core_forward() = 0;
  // dq, dk, dv overwritten from h = dY (overwritten by dL/dA); the bias gradients accumulate into the arena.
  virtual void core_backward(Buffer<T>& h, Buffer<T>& dq, Buffer<T>& dk, Buffer<T>& dv) = 0;
  virtual void release_core() = 0;
  // Decoding: the window of biased keys (0: every key, a KV cache), and the unfactored bias of rows
  // P − n .. P − 1 for the op (dense against the L cached keys, or a band).
  virtual int64_t decode_window() const = 0;
  virtual TensorView<const T> stored_bias(int64_t P, int64_t n, int64_t L, bool& band) const = 0;

  void release_all() {
    release_buffers(q_, k_, v_, a_, den_, o_);
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

  // A (B, n, d) activation.
  TensorView<T> act(Buffer<T>& x) const { return x.view({B_, n_, dims_.d_model}); }
  TensorView<const uint8_t> mask() const { return key_mask_view(in_); }
  TensorView<const T> param(int id) const { return arena_.value_view(id); }
  TensorView<T> grad(int id) { return arena_.grad_view(id); }

  const AttentionKindInfo& info_;
  AttentionDims dims_;
  AftOptions opts_;
  ParamArena<T>& arena_;
  QkvoProjections<T> maps_;
  const int64_t R_;       // query rows per block
  AttentionInput<T> in_;  // the caller keeps in_.x alive until the backward
  bool kept_ = false;
  int64_t B_ = 0, n_ = 0;
  Buffer<T> q_, k_, v_, a_, den_, o_;  // (B, n, d); q_ holds σ(Q)
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
  using Base::a_, Base::B_, Base::den_, Base::dims_, Base::k_, Base::n_, Base::o_, Base::opts_, Base::q_, Base::R_,
      Base::v_, Base::u_, Base::pv_;

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
    keys_.resize(n_ * B_ * 2 * dims_.d_model);
    ops::aft_full_forward(this->act(q_), this->act(k_), this->act(v_), this->mask(), this->param(u_),
                          this->param(pv_), this->param(w_), this->act(o_), this->act(a_), this->act(den_), keys(), R_,
                          dims_.causal);
    if (dims_.causal) release_core();  // the backward replays the shifts block by block
  }

  void core_backward(Buffer<T>& h, Buffer<T>& dq, Buffer<T>& dk, Buffer<T>& dv) override {
    keys_.resize(n_ * B_ * 2 * dims_.d_model);  // non-causal: the forward's table
    ops::aft_full_backward(this->act(q_), this->act(k_), this->act(v_), this->mask(), this->param(u_),
                           this->param(pv_), this->param(w_), this->act(a_), this->act(den_), keys(), this->act(h),
                           this->act(dq), this->act(dk), this->act(dv), this->grad(u_), this->grad(pv_),
                           this->grad(w_), R_, dims_.causal);
  }

  void release_core() override { release_buffers(keys_); }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kKvCache; }
  int64_t decode_window() const override { return 0; }
  TensorView<const T> stored_bias(int64_t P, int64_t n, int64_t L, bool& band) const override {
    band = false;
    const int64_t ml = dims_.max_len;
    return matrix<const T>(this->arena_.value(w_) + (P - n) * ml + (P - L), n, L, ml);
  }

  TensorView<T> keys() { return keys_.view({n_, B_, 2 * dims_.d_model}); }

  int w_ = -1;
  Buffer<T> keys_;  // (n, B, 2d) the key table: [exp(K − m)⊙V | exp(K − m)]
};

// ---- aft_local ----------------------------------------------------------------------------------

template <class T>
class AftLocal final : public AftBase<T> {
  using Base = AftBase<T>;
  using Base::a_, Base::B_, Base::den_, Base::dims_, Base::k_, Base::n_, Base::o_, Base::opts_, Base::q_, Base::R_,
      Base::v_, Base::u_, Base::pv_;

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
  void core_forward() override {
    key_state_.resize(q_.size());
    ops::aft_local_forward(this->act(q_), this->act(k_), this->act(v_), this->mask(), this->param(u_),
                           this->param(pv_), this->param(band_), this->act(o_), this->act(a_), this->act(den_),
                           this->act(key_state_), opts_.window, R_, dims_.causal);
  }

  void core_backward(Buffer<T>& h, Buffer<T>& dq, Buffer<T>& dk, Buffer<T>& dv) override {
    ops::aft_local_backward(this->act(q_), this->act(k_), this->act(v_), this->mask(), this->param(u_),
                            this->param(pv_), this->param(band_), this->act(a_), this->act(den_),
                            this->act(key_state_), this->act(h), this->act(dq), this->act(dk), this->act(dv),
                            this->grad(u_), this->grad(pv_), this->grad(band_), opts_.window, R_, dims_.causal);
  }

  void release_core() override { release_buffers(key_state_); }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kWindow; }
  int64_t decode_window() const override { return s_; }
  // The causal band (max_len × s), rows P − n .. P − 1: entry j for the key t − (s − 1) + j.
  TensorView<const T> stored_bias(int64_t P, int64_t n, int64_t, bool& band) const override {
    band = true;
    return TensorView<const T>::strided(this->arena_.value(band_) + (P - n) * W_, {n, 1, W_}, {W_, W_, 1});
  }

  int64_t s_, W_;
  int band_ = -1;
  Buffer<T> key_state_;  // (B, n, d): non-causal exp(K − m) (0 at padding), causal the running maximum of K
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
