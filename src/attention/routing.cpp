// `routing` (Roy, Saffar, Vaswani, Grangier 2021, the Routing Transformer): content-based sparse
// attention by online k-means. The layer:
//   Q, K, V = x W_q,k,vᵀ (QkvoProjections); per head, qn, kn = Q, K unit-normalised (used for routing
//   only: the attention uses Q and K as they are); routing heads group queries and keys by their
//   centroids, local heads by blocks, and attend within each group (cpu/routing.h has the exact
//   definition); Y = O W_oᵀ + b_o.
// The centroids (h − local_heads, clusters, d_h), unit vectors, are layer state saved with the
// parameters but not trained: a training forward that keeps for a backward moves them by an exponential moving average toward
// the vectors routed to them (after routing with the old ones), an inference forward and the backward
// leave them. Routing is discrete: gradients flow through the attention within the groups only.
#include <algorithm>
#include <cmath>

#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"
#include "ops/parallelism.h"
#include "ops/reformer.h"
#include "ops/routing.h"

namespace lf {
namespace {

// qn, kn = Q, K / max(‖·‖, kNormFloor) per head.
constexpr double kNormFloor = 1e-12;

struct RoutingOptions {
  int64_t window = 64;
  int64_t clusters = 1;
  bool balanced = true;
  int64_t local_heads = 0;
  double decay = 0.999;
  bool qkv_bias = false;
};

RoutingOptions parse_routing(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("routing", options);
  RoutingOptions o;
  o.window = r.get_int("window", std::min<int64_t>(64, dims.max_len));
  LF_REQUIRE(o.window >= 1 && o.window <= dims.max_len, r.where("window"), " must be in [1, max_len = ",
             dims.max_len, "], got ", o.window);
  o.clusters = r.get_int("clusters", (dims.max_len + o.window - 1) / o.window);
  LF_REQUIRE(o.clusters >= 1 && o.clusters <= dims.max_len, r.where("clusters"), " must be in [1, max_len = ",
             dims.max_len, "], got ", o.clusters);
  const std::string routing = r.get_choice("routing", dims.causal ? "nearest" : "balanced", {"balanced", "nearest"});
  o.balanced = routing == "balanced";
  LF_REQUIRE(!dims.causal || !o.balanced, r.where("routing"),
             " must be 'nearest' with causal masking: which queries and keys are a centroid's top window depends "
             "on every position, later ones included, so the future would leak");
  o.local_heads = r.get_int("local_heads", 0);
  LF_REQUIRE(o.local_heads >= 0 && o.local_heads < dims.n_heads, r.where("local_heads"), " must be in [0, n_heads = ",
             dims.n_heads, "), one head at least routing (every head local: use 'local'), got ", o.local_heads);
  o.decay = r.get_double("decay", 0.999);
  LF_REQUIRE(std::isfinite(o.decay) && o.decay >= 0 && o.decay < 1, r.where("decay"), " must be in [0, 1), got ",
             o.decay);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& routing_info() {
  static const AttentionKindInfo info{
      "routing",
      "Routing Transformer: queries and keys routed to online k-means centroids (EMA), attention within "
      "each cluster's window of w (balanced top-w, or nearest centroid when causal), optional local heads",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false,
                       /*padding_invariant=*/true},  // padded positions rank last in a balanced window: the
                                                     // real ones fill it first, alone or padded (tested)
      /*quadratic_memory=*/false,
      json{{"window", 64}}};
  return info;
}

template <class T>
class RoutingAttention final : public Attention<T> {
 public:
  RoutingAttention(const AttentionSpec& spec, const RoutingOptions& options, ParamArena<T>& arena)
      : arena_(arena), dims_(spec.dims), o_(options), maps_(arena, spec.prefix, spec.dims.d_model, options.qkv_bias) {
    const int64_t d_h = dims_.d_model / dims_.n_heads;
    // Unit vectors of N(0, I) draws, as lucidrains' Kmeans starts (before its first-batch init).
    centroids_ = arena.declare(spec.prefix + "centroids", {dims_.n_heads - o_.local_heads, o_.clusters, d_h},
                               Init::custom([d_h, stream = stream_id(spec.prefix + "centroids")](
                                                uint64_t seed, double* out, int64_t numel) {
                                 for (int64_t r = 0; r < numel / d_h; ++r) {
                                   double norm = 0;
                                   for (int64_t e = 0; e < d_h; ++e) {
                                     const double x = normal_f64(seed, stream, uint64_t(r * d_h + e));
                                     out[r * d_h + e] = x;
                                     norm += x * x;
                                   }
                                   for (int64_t e = 0; e < d_h; ++e) out[r * d_h + e] /= std::sqrt(norm);
                                 }
                               }),
                               /*trainable=*/false);
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, routing_info());
    in_ = in;
    const int64_t B = in.B, n = in.n, d = dims_.d_model, h = dims_.n_heads, d_h = d / h;
    maps_.project_in(in, q_, k_, v_);
    shape_ = RoutingShape{B, n, h, d_h, o_.clusters, std::min(o_.window, n), o_.local_heads, o_.balanced, dims_.causal,
                          1.0 / std::sqrt(double(d_h)), in.key_padding_mask, training ? dims_.dropout : 0.0, seed};
    Buffer<T> qn(B * n * d), kn(B * n * d), norms(B * n * h);
    ops::l2_normalize_rows<T>(q_.view({B * n * h, d_h}), qn.view({B * n * h, d_h}), norms.view({B * n * h}), kNormFloor);
    ops::l2_normalize_rows<T>(k_.view({B * n * h, d_h}), kn.view({B * n * h, d_h}), norms.view({B * n * h}), kNormFloor);
    ops::routing_assign<T>(shape_, seq(qn.data()), seq(kn.data()), arena_.value_view(centroids_), groups_);
    lse_.resize(groups_.queries());
    o_buf_.resize(B * n * d);
    ops::routing_attention_forward<T>(shape_, groups_, seq(q_.data()), seq(k_.data()), seq(v_.data()),
                                      seq(o_buf_.data()), lse_.view({groups_.queries()}));
    maps_.project_out(o_buf_.data(), out, B * n);
    // The k-means step follows the routing, so this forward's outputs (and its backward) used one set
    // of centroids. Only a forward that keeps for a backward steps: under activation checkpointing the
    // model's first forward keeps nothing and the recompute before the backward keeps, so the
    // centroids move once per step and both passes route alike.
    if (training && in.keep_for_backward) {
      const TensorView<T> c(arena_.value(centroids_), {h - o_.local_heads, o_.clusters, d_h});
      ops::routing_update_centroids<T>(shape_, seq(qn.data()), seq(kn.data()), o_.decay, c);
    }
    kept_ = in.keep_for_backward;
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "routing");
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model;
    Buffer<T> d_o(B * n * d), dq(B * n * d), dk(B * n * d), dv(B * n * d);
    maps_.backward_out(o_buf_.data(), dout, d_o.data(), B * n);
    ops::routing_attention_backward<T>(shape_, groups_, seq(q_.data()), seq(k_.data()), seq(v_.data()),
                                       lse_.view({groups_.queries()}), seq(d_o.data()), seq(dq.data()),
                                       seq(dk.data()), seq(dv.data()));
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "routing");
    release();  // one backward per forward
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), d_h = d / h;
    const double w = double(std::min(o_.window, n)), hl = double(o_.local_heads), hr = h - hl, c = double(o_.clusters);
    // Per head: the (query, key) pairs scored, each a score and a P̃V product of d_h multiply-adds.
    const double routed_pairs = o_.balanced ? c * w * w : double(n) * std::max(1.0, double(n) / c);
    const double local_pairs = double(n) * (dims_.causal ? 2.0 : 3.0) * w;
    return maps_.flops(B, n, n) + 2.0 * B * n * hr * c * d_h * 2  // routing: q and k against the centroids
           + 2.0 * 2.0 * B * d_h * (hr * routed_pairs + hl * local_pairs);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const double f = sizeof(T), d = double(dims_.d_model), h = double(dims_.n_heads);
    const double entries = B * h * std::max(double(n), double(o_.clusters) * double(std::min(o_.window, n)));
    // Kept: Q, K, V, O (B·n·d each), lse and the group lists (int32, queries and keys per entry, counts);
    // the routing builds each head's lists apart before joining them (twice the lists, briefly).
    const double kept = f * (4.0 * B * n * d + entries) + 4.0 * (5.0 * entries + B * h * n);
    // The forward's qn, kn and norms; the backward's dO, dQ, dK, dV (and the maps' masked copy).
    const double forward_only = f * (2.0 * B * n * d + B * h * n);
    const double backward = f * 5.0 * B * n * d;
    const double per_thread = double(ops::workers()) * 8.0 * 4.0 * double(n);  // scores, factors, key lists
    return kept + per_thread + (training ? std::max(forward_only, backward) : forward_only);
  }

 private:
  template <class U>
  TensorView<U> seq(U* x) const {
    return TensorView<U>(x, {in_.B, in_.n, dims_.d_model});
  }
  void release() {
    release_buffers(q_, k_, v_, o_buf_, lse_);
    groups_ = RoutingGroups();
    maps_.release();
  }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  RoutingOptions o_;
  QkvoProjections<T> maps_;
  int centroids_ = -1;
  // Kept from the last forward for the backward: the caller keeps in_.x (and the mask) alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  RoutingShape shape_;
  RoutingGroups groups_;
  Buffer<T> q_, k_, v_, o_buf_, lse_;
};

}  // namespace

void register_routing_attention(AttentionRegistry& registry) {
  register_kind<RoutingAttention>(registry, routing_info(), parse_routing);
}

}  // namespace lf
