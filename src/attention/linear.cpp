// `linear`: the Linear Transformer (Katharopoulos, Vyas, Pappas, Fleuret 2020, "Transformers are
// RNNs"): softmax(q·k) replaced by the kernel φ(q)·φ(k) with φ(x) = elu(x) + 1 > 0, so attention
// factorises through a d_h × d_h summary of the keys:
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ (c = context, or x for self-attention)
//   O_t = φ(Q_t) Σ_s φ(K_s)ᵀ V_s / (φ(Q_t) · Σ_s φ(K_s) + eps) per head, Y = O W_oᵀ + b_o
// causal: the sums over s ≤ t (the RNN form), computed in chunks (ops/linear_attention.h). No
// 1/√d_h scale (as in the paper and fast-transformers); eps = 1e-6, fast-transformers' value. Padded keys are
// selected out of both sums. No probabilities are formed, so attention dropout does not apply.
// Time O(B·n·d·d_h) (+ O(B·n·d·C) causal, chunk C), memory O(B·n·d); never n×m.
// Decoding (kRecurrent): the RNN form's state (S, z) per head, d_h·(d_h + 1) numbers, whatever the context.

#include "linformer/attention.h"
#include "attention/linear_core.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/error.h"
#include "ops/linear_attention.h"

namespace lf {
namespace {

constexpr double kLinearEps = 1e-6;

struct LinearOptions {
  bool qkv_bias = false;
  int64_t chunk = 64;
};

LinearOptions parse_linear(const AttentionDims&, const json& options, json* resolved) {
  OptionReader r("linear", options);
  LinearOptions o;
  o.qkv_bias = r.get_bool("qkv_bias", false);
  o.chunk = read_linear_chunk(r);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& linear_info() {
  static const AttentionKindInfo info{
      "linear", "linear transformer: elu(x)+1 feature maps, attention as prefix sums, O(n·d·d_h)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true}};
  return info;
}

template <class T>
class LinearAttention final : public Attention<T> {
 public:
  LinearAttention(const AttentionSpec& spec, const LinearOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims), opt_(options), maps_(arena, spec.prefix, spec.dims.d_model, opt_.qkv_bias) {}

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, linear_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, m = in.kv_len(), d = dims_.d_model, h = dims_.n_heads;
    const TensorView<const uint8_t> key_mask = ops::key_mask_view(in.key_padding_mask, B, m);
    maps_.project_in(in, q_, k_, v_);
    // φ row by row of d (B·len rows): a padded key's whole row is 0; v's padded rows are skipped by the core.
    const TensorView<T> q_rows = q_.view({B, n, d}), k_rows = k_.view({B, m, d});
    ops::elu_plus_one_forward<T>(q_rows, {}, q_rows);
    ops::elu_plus_one_forward<T>(k_rows, key_mask, k_rows);
    const TensorView<T> q = heads(q_, B, n), k = heads(k_, B, m);
    o_.resize(B * n * d);
    den_.resize(B * h * n);
    ops::linear_attention_forward<T>(q, k, heads(v_, B, m), key_mask, {}, core_options(), heads(o_, B, n),
                                     den_.view({B, h, n}));
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, o_, den_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "linear");
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len(), h = dims_.n_heads;
    Buffer<T> d_o(B * n * d), dq(B * n * d), dk(B * m * d), dv(B * m * d);
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    const TensorView<T> q = heads(q_, B, n), k = heads(k_, B, m);
    const TensorView<T> gq = heads(dq, B, n), gk = heads(dk, B, m);
    ops::linear_attention_backward<T>(q, k, heads(v_, B, m), ops::key_mask_view(in_.key_padding_mask, B, m), {},
                                      core_options(), heads(o_, B, n), den_.view({B, h, n}),
                                      heads(d_o, B, n), gq, gk, heads(dv, B, m));
    ops::elu_plus_one_backward<T>(q, gq, gq);
    ops::elu_plus_one_backward<T>(k, gk, gk);  // padded rows: φk = 0 and dk = 0
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "linear");
    release_buffers(q_, k_, v_, o_, den_);  // one backward per forward
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    return maps_.flops(B, n, m) + ops::linear_attention_flops(core_sizes(B, n, m), core_options());
  }

  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kRecurrent; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    check_begin_decode(dims_, B, d_model, "linear");
    const int64_t dh = dims_.d_model / dims_.n_heads;
    return std::make_unique<LinearDecodeState<T>>(B, dims_.n_heads, dh, dh, /*scaled=*/false);
  }

  // The forward's maps on the new rows, then the core from the carried state.
  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    const int64_t d = dims_.d_model, h = dims_.n_heads, dh = d / h;
    LinearDecodeState<T>& st = LinearDecodeState<T>::of(base, "linear", n_new, h, dh, dh, /*scaled=*/false);
    const int64_t B = st.B;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n_new);
    Buffer<T> q, k, v, o(B * n_new * d), den(B * h * n_new);
    maps_.project_in(in, q, k, v);
    ops::elu_plus_one_forward<T>(q.view({B, n_new, d}), {}, q.view({B, n_new, d}));
    ops::elu_plus_one_forward<T>(k.view({B, n_new, d}), {}, k.view({B, n_new, d}));
    ops::linear_attention_decode<T>(heads(q, B, n_new), heads(k, B, n_new), heads(v, B, n_new), {}, core_options(),
                                    st.H.view({B, h, dh, dh}), st.z.view({B, h, dh}), {}, heads(o, B, n_new),
                                    den.view({B, h, n_new}));
    maps_.project_out(o.data(), out, B * n_new);
    st.length += n_new;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double d = double(dims_.d_model), nd = double(B) * n * d, md = double(B) * m * d;
    const double den = double(B) * dims_.n_heads * n;
    const double scratch = ops::linear_attention_scratch_bytes(core_sizes(B, n, m), core_options(), sizeof(T));
    // φq, o (B, n, d); φk, v and the masked copy of the context (B, m, d); the denominators.
    const double fwd = sizeof(T) * (2.0 * nd + 3.0 * md + den) + scratch;
    if (!training) return fwd;
    // Backward: dO, dq (B, n, d); dk, dv and backward_in's own (B, m, d).
    return fwd + sizeof(T) * (2.0 * nd + 3.0 * md);
  }

 private:
  // x (B, len, d) seen per head: (B, len, h, d_h).
  TensorView<T> heads(Buffer<T>& x, int64_t B, int64_t len) const {
    return x.view({B, len, dims_.n_heads, dims_.d_model / dims_.n_heads});
  }
  ops::LinearAttentionOptions core_options() const { return {dims_.causal, opt_.chunk, kLinearEps}; }
  // d_h features per head, values d_h wide.
  ops::LinearAttentionSizes core_sizes(int64_t B, int64_t n, int64_t m) const {
    const int64_t dh = dims_.d_model / dims_.n_heads;
    return {B, dims_.n_heads, n, m, dh, dh};
  }

  AttentionDims dims_;
  LinearOptions opt_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  Buffer<T> q_, k_, v_;  // φ(Q) (B, n, d), φ(K) (B, m, d) (zero rows at padding), V (B, m, d)
  Buffer<T> o_, den_;    // O (B, n, d) before the output map; denominators (B, h, n)
};

}  // namespace

void register_linear_attention(AttentionRegistry& registry) {
  register_kind<LinearAttention>(registry, linear_info(), parse_linear);
}

}  // namespace lf
