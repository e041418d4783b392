// The four linear maps of standard multi-head attention (to_q: d → d; to_k, to_v: d → d_kv, d_kv = d
// unless grouped-query attention shares fewer K/V heads; to_out: d → d with a bias; optional Q/K/V
// biases), shared by the kinds that attend with h heads of width d/h (full,
// flash, linear, performer, ...). Forward and backward of the maps around the kind's own core, and
// the whole layer of the exact-softmax kinds (DenseAttention).
#pragma once
#include <cmath>
#include <string>

#include "attention/kv_cache.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/attention_decode.h"
#include "ops/elementwise.h"
#include "ops/linear.h"

namespace lf {

template <class T>
class QkvoProjections {
 public:
  // kv_width: the width d_kv of K and V (0: d).
  QkvoProjections(ParamArena<T>& arena, const std::string& prefix, int64_t d, bool qkv_bias, int64_t kv_width = 0)
      : arena_(arena), d_(d), dkv_(kv_width > 0 ? kv_width : d) {
    const Init w = Init::uniform(1.0 / std::sqrt(double(d)));  // nn.Linear's default bound
    wq_ = arena.declare(prefix + "to_q.weight", {d, d}, w);
    wk_ = arena.declare(prefix + "to_k.weight", {dkv_, d}, w);
    wv_ = arena.declare(prefix + "to_v.weight", {dkv_, d}, w);
    if (qkv_bias) {
      bq_ = arena.declare(prefix + "to_q.bias", {d}, w);
      bk_ = arena.declare(prefix + "to_k.bias", {dkv_}, w);
      bv_ = arena.declare(prefix + "to_v.bias", {dkv_}, w);
    }
    wo_ = arena.declare(prefix + "to_out.weight", {d, d}, w);
    bo_ = arena.declare(prefix + "to_out.bias", {d}, w);
  }

  // q (B, n, d) from x; k, v (B, m, d_kv) from the context (or x). With a key padding mask the padded
  // rows of the key/value source are replaced by zeros first: nothing they hold reaches the real
  // positions (a masked key's zero probability times a NaN value would still be NaN). Queries keep x
  // as it is, as PyTorch does, so padded positions' own outputs are unchanged.
  void project_in(const AttentionInput<T>& in, Buffer<T>& q, Buffer<T>& k, Buffer<T>& v) {
    const int64_t B = in.B, n = in.n, m = in.kv_len();
    const T* ctx = source(in);
    const T* x = in.x;
    q.resize(B * n * d_);
    k.resize(B * m * dkv_);
    v.resize(B * m * dkv_);
    ops::linear_forward(rows(x, B * n), arena_.value_view(wq_), arena_.value_view(bq_), q.view({B * n, d_}));
    ops::linear_forward(rows(ctx, B * m), arena_.value_view(wk_), arena_.value_view(bk_), k.view({B * m, dkv_}));
    ops::linear_forward(rows(ctx, B * m), arena_.value_view(wv_), arena_.value_view(bv_), v.view({B * m, dkv_}));
  }

  // out (rows, d) = o W_oᵀ + b_o.
  void project_out(const T* o, T* out, int64_t rows) const {
    ops::linear_forward(this->rows(o, rows), arena_.value_view(wo_), arena_.value_view(bo_), this->rows(out, rows));
  }

  // d_o (rows, d) from dout; W_o and b_o gradients accumulate.
  void backward_out(const T* o, const T* dout, T* d_o, int64_t rows) {
    ops::linear_backward<T>(this->rows(o, rows), arena_.value_view(wo_), this->rows(dout, rows), this->rows(d_o, rows),
                            arena_.grad_view(wo_), arena_.grad_view(bo_));
  }

  // dx (B, n, d) from dq (B, n, d), and from dk, dv (B, m, d_kv) too for self-attention; dcontext (B, m, d) for
  // cross-attention. Both overwritten; the maps' gradients accumulate.
  void backward_in(const AttentionInput<T>& in, const T* dq, const T* dk, const T* dv, T* dx, T* dcontext,
                   const std::string& kind) {
    const int64_t B = in.B, n = in.n, m = in.kv_len();
    const T* ctx = in.key_padding_mask ? clean_.data() : in.context ? in.context : in.x;  // as in project_in
    if (in.context) LF_REQUIRE(dcontext != nullptr, kind, " attention: cross-attention backward needs dcontext");
    ops::linear_backward<T>(rows(in.x, B * n), arena_.value_view(wq_), rows(dq, B * n), rows(dx, B * n), arena_.grad_view(wq_),
                            arena_.grad_view(bq_));
    // The K/V path: into dcontext (cross-attention), or added to dx (self-attention). With a mask its
    // gradient reaches only the unpadded rows (the select of project_in), so it goes through its own
    // buffer first.
    Buffer<T> own;
    T* dc = in.context ? dcontext : dx;
    if (in.key_padding_mask && !in.context) {
      own.resize(B * m * d_);
      dc = own.data();
    }
    const bool add_to_dc = dc == dx;
    ops::linear_backward<T>(rows(ctx, B * m), arena_.value_view(wk_), matrix(dk, B * m, dkv_), rows(dc, B * m),
                            arena_.grad_view(wk_), arena_.grad_view(bk_), add_to_dc);
    ops::linear_backward<T>(rows(ctx, B * m), arena_.value_view(wv_), matrix(dv, B * m, dkv_), rows(dc, B * m),
                            arena_.grad_view(wv_), arena_.grad_view(bv_), true);
    zero_rows_at_padding(dc, in.key_padding_mask, B, m, d_);
    if (!own.empty()) ops::add<T>(own.view({B * m, d_}), rows(dx, B * n));
    clean_.release();
  }

  // Frees the masked copy of the input (an inference forward calls it; backward_in does it itself).
  void release() { clean_.release(); }

  // Multiply-adds ×2 of the four maps.
  double flops(int64_t B, int64_t n, int64_t m) const { return 2.0 * B * double(d_) * (2.0 * n * d_ + 2.0 * m * dkv_); }

  int64_t kv_width() const { return dkv_; }

 private:
  // A view of (rows, d) activations.
  template <class P>
  TensorView<P> rows(P* data, int64_t n_rows) const {
    return matrix(data, n_rows, d_);
  }

  // The key/value source with padded rows zeroed (kept for backward_in), or the source itself.
  const T* source(const AttentionInput<T>& in) {
    return zero_padded_rows(in.context ? in.context : in.x, in.key_padding_mask, in.B, in.kv_len(), d_, clean_);
  }

  ParamArena<T>& arena_;
  int64_t d_, dkv_;
  Buffer<T> clean_;
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
};

// The parser of a kind whose only option is `qkv_bias` (full, flash; for register_kind): reads it,
// refuses anything else, and returns it; *resolved (if given) receives the options with the default
// filled in.
inline auto qkv_bias_parser(std::string kind) {
  return [kind = std::move(kind)](const AttentionDims&, const json& options, json* resolved) {
    OptionReader r(kind, options);
    const bool qkv_bias = r.get_bool("qkv_bias", false);
    r.finish(resolved);
    return qkv_bias;
  };
}

// The options of the exact-softmax kinds (full, flash).
struct DenseOptions {
  bool qkv_bias = false;
  // K/V heads, each shared by n_heads / kv_heads consecutive query heads (grouped-query attention;
  // 1: multi-query). Default n_heads: standard multi-head attention.
  int64_t kv_heads = 0;
};

// The parser of full and flash (for register_kind): `qkv_bias`, and `kv_heads`, a divisor of n_heads.
inline auto dense_parser(std::string kind) {
  return [kind = std::move(kind)](const AttentionDims& dims, const json& options, json* resolved) {
    OptionReader r(kind, options);
    DenseOptions o;
    o.qkv_bias = r.get_bool("qkv_bias", false);
    o.kv_heads = r.get_int("kv_heads", dims.n_heads);
    LF_REQUIRE(o.kv_heads > 0 && dims.n_heads % o.kv_heads == 0, kind, " attention: kv_heads (", o.kv_heads,
               ") must be a positive divisor of n_heads (", dims.n_heads, ")");
    r.finish(resolved);
    return o;
  };
}

// The SdpaShape of one call of an h-head kind over uncompressed keys.
template <class T>
SdpaShape dense_sdpa_shape(const AttentionInput<T>& in, const AttentionDims& dims, bool training, uint64_t seed) {
  SdpaShape s;
  s.B = in.B;
  s.n = in.n;
  s.mk = in.kv_len();
  s.h = s.hk = dims.n_heads;
  s.d_h = dims.d_model / dims.n_heads;
  s.scale = 1.0 / std::sqrt(double(s.d_h));
  s.causal = dims.causal;
  s.key_mask = in.key_padding_mask;
  s.score_mask = in.attn_mask;  // validate_input checked their layout
  s.score_bias = in.attn_bias;
  s.score_B = in.mask_batch;
  s.score_h = in.mask_heads;
  s.dropout = training ? dims.dropout : 0.0;
  s.seed = seed;
  return s;
}

// The longest decoding step that attends through ops::attention_decode (its work per cached row grows
// with the queries; a longer one, a prefill, goes through the core's tiled forward).
inline constexpr int64_t kDecodeQueries = 4;

// An h-head kind over uncompressed keys (full, flash): the four maps around the kind's exact-softmax
// core. Core (default-constructible, one per layer) keeps what its backward needs between the calls:
//   static const AttentionKindInfo& info();
//   void forward(const SdpaShape&, q, k, v, o, bool keep);   // o (B, n, d) overwritten
//   void backward(const SdpaShape&, q, k, v, o, d_o, dq, dk, dv);  // dq (B, n, d), dk, dv (B, m, d)
//   void release();                                           // frees what forward kept
//   double activation_bytes(const AttentionDims&, B, n, m, bool training) const;
template <class T, class Core>
class DenseAttention final : public Attention<T> {
 public:
  DenseAttention(const AttentionSpec& spec, const DenseOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims),
        kv_heads_(options.kv_heads),
        maps_(arena, spec.prefix, spec.dims.d_model, options.qkv_bias,
              options.kv_heads * (spec.dims.d_model / spec.dims.n_heads)) {}

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, Core::info());
    in_ = in;
    const int64_t B = in.B, n = in.n;
    kept_ = in.keep_for_backward;
    maps_.project_in(in, q_, k_, v_);
    o_.resize(B * n * dims_.d_model);
    shape_ = shape(in, training, seed);
    core_.forward(shape_, q_.data(), k_.data(), v_.data(), o_.data(), kept_);
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, o_);
      core_.release();
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    const std::string& kind = Core::info().name;
    require_kept_for_backward(kept_, kind);
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len();
    const int64_t dkv = maps_.kv_width();
    Buffer<T> d_o(B * n * d), dq(B * n * d), dk(B * m * dkv), dv(B * m * dkv);  // dK, dV summed over each group
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    core_.backward(shape_, q_.data(), k_.data(), v_.data(), o_.data(), d_o.data(), dq.data(), dk.data(), dv.data());
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, kind);
    release_buffers(q_, k_, v_, o_);  // one backward per forward, as in PyTorch
    core_.release();
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    return maps_.flops(B, n, m) + 2.0 * B * 2.0 * n * m * double(dims_.d_model);
  }

  // (Counts K and V at d_model: an overestimate with fewer K/V heads, which the estimate allows.)

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    return core_.activation_bytes(dims_, B, n, m, training);
  }

  // Decoding with a KV cache: a step projects only its n_new rows, appends their K and V, and attends
  // from its queries at positions [t0, t0 + n_new) to the t0 + n_new cached keys: up to
  // kDecodeQueries new rows through ops::attention_decode (every sequence and head in one parallel
  // region over chunks of cached rows, each row of K and V read once), a longer step (a prefill)
  // through the core's inference forward (SdpaShape::q_start = t0 keeps the causal mask inside the
  // chunk), one sequence at a time, as the cache keeps each sequence's rows together. O(t·d) work and
  // memory per token at context t, against O(t²·d) for rerunning the prefix.
  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kKvCache; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    check_begin_decode(Core::info().name, B, d_model, dims_);
    return std::make_unique<KvCacheState<T>>(B, maps_.kv_width(), KvCache<T>::kWhole);  // kv_heads·d_h a row
  }

  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    KvCacheState<T>& state = decode_state_as<KvCacheState<T>>(base, Core::info().name, n_new, dims_);
    const int64_t B = state.B, d = dims_.d_model, t0 = state.length;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n_new);
    maps_.project_in(in, q_, k_, v_);
    state.cache.append(k_.data(), v_.data(), n_new);
    o_.resize(B * n_new * d);
    SdpaShape s = shape(in, /*training=*/false, 0);
    if (n_new <= kDecodeQueries) {
      ops::attention_decode<T>(q_.view({B, n_new, d}), state.cache.keys(), state.cache.values(), dims_.n_heads, s.scale,
                               o_.view({B, n_new, d}));
    } else {
      s.B = 1;
      s.mk = t0 + n_new;
      s.q_start = t0;
      for (int64_t b = 0; b < B; ++b)
        core_.forward(s, q_.data() + b * n_new * d, state.cache.keys(b), state.cache.values(b),
                      o_.data() + b * n_new * d, /*keep=*/false);
    }
    maps_.project_out(o_.data(), out, B * n_new);
    release_buffers(q_, k_, v_, o_);
    core_.release();
    maps_.release();
    kept_ = false;  // the buffers a backward would need are gone
    state.length = t0 + n_new;
  }

 private:
  SdpaShape shape(const AttentionInput<T>& in, bool training, uint64_t seed) const {
    SdpaShape s = dense_sdpa_shape(in, dims_, training, seed);
    s.hk = kv_heads_;
    return s;
  }

  AttentionDims dims_;
  int64_t kv_heads_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  SdpaShape shape_;
  Buffer<T> q_, k_, v_, o_;  // Q (B, n, d), K, V (B, m, kv_heads·d_h), O (B, n, d) before the output map
  Core core_;
};

}  // namespace lf
