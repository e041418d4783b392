// `aft_simple`: AFT-simple, the Attention Free Transformer without position biases (Zhai et al. 2021,
// arXiv 2105.14103). Per channel c, σ the logistic sigmoid:
//   Q = x W_qᵀ, K = x W_kᵀ, V = x W_vᵀ                                   (B, n, d)
//   Y_tc = σ(Q_tc) · Σ_{t'} softmax_{t'}(K_{·c})_{t'} V_{t'c},   out = Y W_oᵀ + b_o
// the softmax running over the keys t' that are not padding (causal: over t' ≤ t). A query that sees
// no key gets Y = 0.
// Non-causal, the queries of a sample share one softmax-weighted mean of V per channel. Causal: prefix
// sums with a running maximum per channel (an online softmax), so row t reads rows ≤ t only and is
// computed the same way whatever follows it (a shorter sequence gives the same prefix, bit for bit).
// Stability: exp is only taken of K minus the (running) maximum over the visible keys, so K of any
// size gives finite outputs; the shift cancels in the ratio and the backward differentiates the exact
// function (its suffix recurrences only multiply by factors ≤ 1).
// There is no attention matrix to drop out: dims.dropout is ignored.
// Time O(B·n·d) besides the four d×d maps, memory O(B·n·d); never n×n. The core is ops::aft_simple_*
// (src/ops/aft.h).
// Decoding (kRecurrent): the online softmax's running max, sum and numerator per channel, 3·d numbers
// per sequence whatever the context.

#include <limits>

#include "linformer/attention.h"
#include "attention/kind_views.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "ops/aft.h"

namespace lf {
namespace {

// The decoding state: per (sequence, channel) the running maximum of K, Σ exp(K − max), Σ exp(K − max) V.
template <class T>
struct AftSimpleDecodeState final : DecodeState<T> {
  AftSimpleDecodeState(int64_t B, int64_t d) : mx(B * d), sum(B * d), num(B * d) {
    this->B = B;
    mx.assign(B * d, -std::numeric_limits<T>::infinity());
  }
  Buffer<T> mx, sum, num;  // (B, d) each
  double bytes() const override { return double(mx.size() + sum.size() + num.size()) * sizeof(T); }
};

const AttentionKindInfo& aft_simple_info() {
  static const AttentionKindInfo info{
      "aft_simple", "AFT-simple: σ(Q) ⊙ per-channel softmax_t(K)-weighted mean of V, O(n·d), no n×n",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false}};
  return info;
}

template <class T>
class AftSimpleAttention final : public Attention<T> {
 public:
  AftSimpleAttention(const AttentionSpec& spec, bool qkv_bias, ParamArena<T>& arena)
      : dims_(spec.dims),
        maps_(arena, spec.prefix, spec.dims.d_model, qkv_bias) {}

  void forward(const AttentionInput<T>& in, T* out, bool /*training: no dropout*/, uint64_t /*seed*/) override {
    validate_input(in, dims_, aft_simple_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, d = dims_.d_model;
    maps_.project_in(in, q_, k_, v_);
    o_.resize(B * n * d);
    if (kept_) {  // per (sample, channel), or per (sample, position, channel) when causal
      const int64_t stats = (dims_.causal ? B * n : B) * d;
      r_.resize(stats);
      m_.resize(stats);
      s_.resize(stats);
    }
    ops::aft_simple_forward(activation(q_), activation(k_), activation(v_), mask(), activation(o_), stats(r_),
                            stats(m_), stats(s_), dims_.causal);
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, o_, r_, m_, s_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "aft_simple");
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model;
    Buffer<T> d_o(B * n * d);
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    release_buffers(o_);
    Buffer<T> dq(B * n * d), dk(B * n * d), dv(B * n * d);
    ops::aft_simple_backward(activation(q_), activation(k_), activation(v_), mask(), stats(r_), stats(m_), stats(s_),
                             activation(d_o), activation(dq), activation(dk), activation(dv), dims_.causal);
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "aft_simple");
    release_buffers(q_, k_, v_, r_, m_, s_);  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kRecurrent; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    LF_REQUIRE(dims_.causal, "aft_simple attention: incremental decoding needs a causal layer");
    LF_REQUIRE(B > 0 && d_model == dims_.d_model, "aft_simple attention: decoding needs B > 0 and d = ", dims_.d_model,
               ", got B=", B, " d=", d_model);
    return std::make_unique<AftSimpleDecodeState<T>>(B, d_model);
  }

  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    auto* st = dynamic_cast<AftSimpleDecodeState<T>*>(&base);
    LF_REQUIRE(st != nullptr, "aft_simple attention: decode() was given a state begun by another kind of layer");
    LF_REQUIRE(n_new > 0, "aft_simple attention: decode() needs at least one new position, got ", n_new);
    const int64_t B = st->B, d = dims_.d_model;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n_new);
    Buffer<T> q, k, v, o(B * n_new * d);
    maps_.project_in(in, q, k, v);
    ops::aft_simple_decode<T>(q.view({B, n_new, d}), k.view({B, n_new, d}), v.view({B, n_new, d}),
                              o.view({B, n_new, d}), st->mx.view({B, d}), st->sum.view({B, d}), st->num.view({B, d}));
    maps_.project_out(o.data(), out, B * n_new);
    st->length += n_new;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    // The maps, then per element: exp, the two running sums, the sigmoid and the products (about 8).
    return maps_.flops(B, n, m) + 8.0 * B * n * double(dims_.d_model);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double bnd = double(B) * n * dims_.d_model;
    // q, k, v, o and the masked copy of x; inference keeps nothing else.
    if (!training) return sizeof(T) * 5.0 * bnd;
    // Kept: those five, r, m, s ((B, n, d) when causal, (B, d) otherwise); backward: dO, dq, dk, dv and
    // the K/V path's own dx buffer (with a mask).
    const double stats = dims_.causal ? 3.0 * bnd : 3.0 * double(B) * dims_.d_model;
    return sizeof(T) * (10.0 * bnd + stats);
  }

 private:
  // A (B, n, d) buffer of this call, and the statistics (empty when not kept).
  TensorView<T> activation(Buffer<T>& x) const { return x.view({in_.B, in_.n, dims_.d_model}); }
  TensorView<T> stats(Buffer<T>& x) const {
    return kept_ ? x.view({x.size()}) : TensorView<T>();
  }
  TensorView<const uint8_t> mask() const { return key_mask_view(in_); }

  AttentionDims dims_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  Buffer<T> q_, k_, v_, o_;  // (B, n, d); q_ holds σ(Q) after the forward
  Buffer<T> r_, m_, s_;      // the softmax means, maxima and sums: (B, n, d) causal, (B, d) not
};

}  // namespace

void register_aft_simple_attention(AttentionRegistry& registry) {
  register_kind<AftSimpleAttention>(registry, aft_simple_info(), qkv_bias_parser("aft_simple"));
}

}  // namespace lf
