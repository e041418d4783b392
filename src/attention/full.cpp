// `full`: exact softmax attention, the quality reference every efficient kind is compared with.
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ (c = context, or x for self-attention)
//   O_i = softmax(Q_i K_iᵀ / √d_h + masks) V_i per head, Y = O W_oᵀ + b_o
// Time O(B·h·n·m·d_h), memory O(B·h·n·m) for the kept probabilities.
#include <cmath>
#include <vector>

#include "attention/attention.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "cpu/linear.h"

namespace lf {
namespace {

struct FullOptions {
  bool qkv_bias = false;
};

FullOptions parse_full(const json& options, json* resolved) {
  OptionReader r("full", options);
  FullOptions o;
  o.qkv_bias = r.get_bool("qkv_bias", false);
  json out = r.finish();
  if (resolved) *resolved = out;
  return o;
}

const AttentionKindInfo& full_info() {
  static const AttentionKindInfo info{
      "full", "exact softmax attention, O(n·m) time and memory",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true}};
  return info;
}

template <class T>
class FullAttention final : public Attention<T> {
 public:
  FullAttention(const AttentionSpec& spec, ParamArena<T>& arena) : arena_(arena), dims_(spec.dims) {
    opt_ = parse_full(spec.options, nullptr);
    const int64_t d = dims_.d_model;
    const std::string& p = spec.prefix;
    const Init w = Init::uniform(1.0 / std::sqrt(double(d)));  // nn.Linear's default bound
    wq_ = arena.declare(p + "to_q.weight", {d, d}, w);
    wk_ = arena.declare(p + "to_k.weight", {d, d}, w);
    wv_ = arena.declare(p + "to_v.weight", {d, d}, w);
    if (opt_.qkv_bias) {
      bq_ = arena.declare(p + "to_q.bias", {d}, w);
      bk_ = arena.declare(p + "to_k.bias", {d}, w);
      bv_ = arena.declare(p + "to_v.bias", {d}, w);
    }
    wo_ = arena.declare(p + "to_out.weight", {d, d}, w);
    bo_ = arena.declare(p + "to_out.bias", {d}, w);
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, full_info());
    in_ = in;
    const int64_t d = dims_.d_model, B = in.B, n = in.n, m = in.kv_len();
    const T* ctx = in.context ? in.context : in.x;
    q_.resize(size_t(B * n * d));
    k_.resize(size_t(B * m * d));
    v_.resize(size_t(B * m * d));
    o_.resize(size_t(B * n * d));
    probs_.resize(size_t(B * dims_.n_heads * n * m));
    linear_forward(in.x, arena_.value(wq_), bias(bq_), q_.data(), B * n, d, d);
    linear_forward(ctx, arena_.value(wk_), bias(bk_), k_.data(), B * m, d, d);
    linear_forward(ctx, arena_.value(wv_), bias(bv_), v_.data(), B * m, d, d);
    shape_ = sdpa_shape(in, training, seed);
    sdpa_forward(shape_, q_.data(), k_.data(), v_.data(), probs_.data(), o_.data());
    linear_forward(o_.data(), arena_.value(wo_), arena_.value(bo_), out, B * n, d, d);
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len();
    const T* ctx = in_.context ? in_.context : in_.x;
    std::vector<T> d_o(size_t(B * n * d)), dq(size_t(B * n * d)), dk(size_t(B * m * d)), dv(size_t(B * m * d));
    std::vector<T> scratch(size_t(2 * n * m));
    linear_backward(o_.data(), arena_.value(wo_), dout, d_o.data(), arena_.grad(wo_), arena_.grad(bo_), B * n, d, d);
    sdpa_backward(shape_, q_.data(), k_.data(), v_.data(), probs_.data(), d_o.data(), dq.data(), dk.data(),
                  dv.data(), scratch.data());
    linear_backward(in_.x, arena_.value(wq_), dq.data(), dx, arena_.grad(wq_), grad(bq_), B * n, d, d);
    T* dc = in_.context ? dcontext : dx;  // self-attention: the key/value path adds into dx
    const bool accumulate = !in_.context;
    if (in_.context) LF_REQUIRE(dcontext != nullptr, "full attention: cross-attention backward needs dcontext");
    linear_backward(ctx, arena_.value(wk_), dk.data(), dc, arena_.grad(wk_), grad(bk_), B * m, d, d, accumulate);
    linear_backward(ctx, arena_.value(wv_), dv.data(), dc, arena_.grad(wv_), grad(bv_), B * m, d, d, true);
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double d = double(dims_.d_model);
    return 2.0 * B * (n * d * d * 2 + m * d * d * 2 + 2.0 * n * m * d);
  }

 private:
  SdpaShape sdpa_shape(const AttentionInput<T>& in, bool training, uint64_t seed) const {
    SdpaShape s;
    s.B = in.B;
    s.n = in.n;
    s.mk = in.kv_len();
    s.h = s.hk = dims_.n_heads;
    s.d_h = dims_.d_model / dims_.n_heads;
    s.scale = 1.0 / std::sqrt(double(s.d_h));
    s.causal = dims_.causal;
    s.key_mask = in.key_padding_mask;
    s.dropout = training ? dims_.dropout : 0.0;
    s.seed = seed;
    return s;
  }
  const T* bias(int id) const { return id < 0 ? nullptr : arena_.value(id); }
  T* grad(int id) { return id < 0 ? nullptr : arena_.grad(id); }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  FullOptions opt_;
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  SdpaShape shape_;
  std::vector<T> q_, k_, v_, o_, probs_;
};

}  // namespace

void register_full_attention(AttentionRegistry& registry) {
  AttentionFactory f;
  f.info = full_info();
  f.validate = [](const AttentionDims&, const json& options) {
    json resolved;
    parse_full(options, &resolved);
    return resolved;
  };
  f.make_f32 = [](const AttentionSpec& s, ParamArena<float>& a) { return std::make_unique<FullAttention<float>>(s, a); };
  f.make_f64 = [](const AttentionSpec& s, ParamArena<double>& a) { return std::make_unique<FullAttention<double>>(s, a); };
  registry.add(std::move(f));
}

}  // namespace lf
