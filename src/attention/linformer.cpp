// `linformer` (Wang et al. 2020): keys and values are compressed along the sequence by k×m
// projections E and F before softmax attention, so the score matrix is n×k and the layer costs
// O(n·k) time and memory:
//   head_i = softmax( Q_i (E_i K_i)ᵀ / √d_h ) (F_i V_i),  K = c W_kᵀ + b_k,  V = c W_vᵀ + b_v.
// Options (docs/attention.md has the full table): k; sharing of E/F none (per head) | headwise (one E,
// one F per layer) | kv (E = F) | layerwise (one matrix for all layers, model-level name
// `shared_proj`); one kv head; lucidrains' share_kv_linear (V reuses W_k) and dim_head (head width
// d_h other than d/h); projection learned (U(±1/√k) or xavier) | fixed (Theorem 2: E = δR,
// F = e^{-δ}R, R ~ N(0, 1/k), stored as non-trainable parameters) | pooling over windows of
// w = max_len/k positions: mean, max, conv (one shared kernel of w taps per E) or conv_full (a
// channel-mixing strided Conv1d with bias, memory-compressed attention). Sequences shorter than
// max_len use the first m columns of E/F; a key padding mask zeroes padded positions before
// compression, so they contribute nothing (not even their bias). A pooled slot (window) with no real
// position behind it (past the sequence's end, or all padding) is hidden from the softmax, and mean
// pooling divides by the number of real positions of its window.
// Two association orders give the same result for the projections that are linear along the
// sequence and shared by all channels (learned, fixed, mean, conv): project-then-compress
// E (c W_kᵀ + 1 b_kᵀ) (lucidrains) and compress-then-project (E c) W_kᵀ + (E 1) b_kᵀ (fairseq, bias
// exact); `order: auto` takes the one with fewer FLOPs. max and conv_full act on the projected
// channels, so they always project first.
#include <algorithm>
#include <cmath>
#include <vector>  // host-side metadata only: the windows' counts and empty slots

#include "attention/kind_rules.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "linformer/attention.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/linformer_bias.h"
#include "ops/matmul.h"
#include "ops/window_pooling.h"

namespace lf {
namespace {

enum class Sharing { None, Headwise, Kv, Layerwise };
enum class Projection { Learned, Fixed, Mean, Conv, Max, ConvFull };
enum class Order { Auto, ProjectFirst, CompressFirst };

// The largest head width `dim_head` takes: h·dim_head must stay a sane tensor width.
constexpr int64_t kMaxDimHead = 65536;

struct LinformerOptions {
  int64_t k = 256;
  int64_t dim_head = 0;
  Sharing sharing = Sharing::Headwise;
  bool one_kv_head = false;
  bool share_kv_linear = false;
  bool qkv_bias = false;
  Projection projection = Projection::Learned;
  bool xavier_init = false;
  double delta = 1.0;
  Order order = Order::Auto;
};

// Projections that compress windows of max_len/k positions (and so can leave a slot empty).
bool pools_windows(Projection p) { return p != Projection::Learned && p != Projection::Fixed; }
// Projections that act on the projected K/V channels (not linear along the sequence with one weight
// for every channel): only project-then-compress computes them.
bool needs_project_first(Projection p) { return p == Projection::Max || p == Projection::ConvFull; }

// The paper's ratio (k = 128 at n = 512, 256 at n = 1024: n/4), at least 16 (a few keys per head do
// not carry a sequence; REFERENCE §2), at most its largest 256 (n from 512 to 4096 at k = 256 gives
// about the same perplexity), and never above max_len. min(256, max_len), the earlier default, left
// every model with max_len <= 256 uncompressed.
int64_t default_linformer_k(int64_t max_len) {
  return std::min(max_len, std::clamp<int64_t>(max_len / 4, 16, 256));
}

LinformerOptions parse_linformer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("linformer", options);
  LinformerOptions o;
  o.k = r.get_int("k", default_linformer_k(dims.max_len));
  LF_REQUIRE(o.k > 0, r.where("k"), " must be positive, got ", o.k);
  LF_REQUIRE(o.k <= dims.max_len, r.where("k"), " (", o.k, ") must not exceed max_len (", dims.max_len,
             "): the projection compresses max_len positions to k");
  o.dim_head = r.get_int("dim_head", dims.n_heads > 0 ? dims.d_model / dims.n_heads : 1);
  LF_REQUIRE(o.dim_head >= 1 && o.dim_head <= kMaxDimHead, r.where("dim_head"), " must be in 1 … ", kMaxDimHead,
             ", got ", o.dim_head);
  const std::string sharing = r.get_choice("sharing", "headwise", {"none", "headwise", "kv", "layerwise"});
  o.sharing = sharing == "none" ? Sharing::None
              : sharing == "headwise" ? Sharing::Headwise
              : sharing == "kv" ? Sharing::Kv
                                : Sharing::Layerwise;
  o.one_kv_head = r.get_bool("one_kv_head", false);
  o.share_kv_linear = r.get_bool("share_kv_linear", false);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  const std::string proj =
      r.get_choice("projection", "learned", {"learned", "fixed", "mean", "max", "conv", "conv_full"});
  o.projection = proj == "learned" ? Projection::Learned
                 : proj == "fixed" ? Projection::Fixed
                 : proj == "mean"  ? Projection::Mean
                 : proj == "max"   ? Projection::Max
                 : proj == "conv"  ? Projection::Conv
                                   : Projection::ConvFull;
  o.xavier_init = r.get_choice("init", "uniform", {"uniform", "xavier"}) == "xavier";
  o.delta = r.get_double("delta", 1.0);
  LF_REQUIRE(std::isfinite(o.delta) && o.delta > 0, r.where("delta"), " must be a positive number, got ", o.delta);
  const std::string order = r.get_choice("order", "auto", {"auto", "project_first", "compress_first"});
  o.order = order == "auto" ? Order::Auto : order == "project_first" ? Order::ProjectFirst : Order::CompressFirst;
  if (pools_windows(o.projection))
    LF_REQUIRE(dims.max_len % o.k == 0, "linformer projection '", proj, "' pools windows of max_len / k positions: max_len (",
               dims.max_len, ") must be divisible by k (", o.k, ")");
  if (needs_project_first(o.projection))
    LF_REQUIRE(o.order != Order::CompressFirst, r.where("order"), " cannot be compress_first with projection '", proj,
               "': it pools the projected keys and values channel by channel, so it needs them first; use auto or "
               "project_first");
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& linformer_info() {
  static const AttentionKindInfo info{
      "linformer", "low-rank attention: keys and values projected along the sequence to k, O(n·k)",
      AttentionSupport{/*causal=*/false, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true},
      /*quadratic_memory=*/false, /*bench_options=*/json{{"k", 256}}};  // the paper's largest k
  return info;
}

template <class T>
class LinformerAttention final : public Attention<T> {
 public:
  LinformerAttention(const AttentionSpec& spec, const LinformerOptions& options, ParamArena<T>& arena) : arena_(arena), dims_(spec.dims) {
    o_ = options;
    d_ = dims_.d_model;
    h_ = dims_.n_heads;
    dh_ = o_.dim_head;
    qd_ = h_ * dh_;
    L_ = dims_.max_len;
    k_ = o_.k;
    w_ = pools_windows(o_.projection) ? L_ / k_ : 0;
    hk_ = o_.one_kv_head ? 1 : h_;
    kvd_ = hk_ * dh_;
    G_ = o_.sharing == Sharing::None ? h_ : 1;
    hc_ = G_ == h_ ? h_ : hk_;
    groups_ = G_ == 1 ? 1 : h_;
    gw_ = G_ == 1 ? kvd_ : dh_;
    e_is_f_ = o_.sharing == Sharing::Kv || o_.sharing == Sharing::Layerwise;
    // E c = F c for any input: one tensor for both, or a pooling without parameters.
    same_op_ = e_is_f_ || o_.projection == Projection::Mean || o_.projection == Projection::Max;
    kv_identical_ = same_op_ && o_.share_kv_linear;
    // Theorem 2 with one stored matrix (kv, layerwise): it holds R, and E = δR, F = e^{-δ}R are applied
    // as scales of the compressed keys and values.
    scaled_ = o_.projection == Projection::Fixed && e_is_f_;
    if (scaled_) {
      scale_[0] = T(o_.delta);
      scale_[1] = T(std::exp(-o_.delta));
    }
    declare_params(spec.prefix);
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, linformer_info());
    in_ = in;
    const int64_t B = in.B, n = in.n, m = in.kv_len();
    m_ = m;
    compress_first_ = use_compress_first(m);
    // The key/value source with padded rows zeroed (a select, so garbage or NaN there cannot leak).
    ctxm_ = zero_padded_rows(in.context ? in.context : in.x, in.key_padding_mask, B, m, d_, xm_);
    if (pools_windows(o_.projection)) count_window_positions();

    q_.resize(B * n * qd_);
    ops::linear_forward(matrix(in.x, B * n, d_), arena_.value_view(wq_), arena_.value_view(bq_), q_.view({B * n, qd_}));
    const int64_t csize = B * k_ * ldc();
    for (int p = 0; p < 2; ++p) {
      if (p == 1 && kv_identical_) {  // V̂ = K̂ (times F's scale over E's when they differ)
        if (scaled_) c_[1] = c_[0];
        continue;
      }
      c_[p].resize(csize);
      if (compress_first_)
        compress_then_project(p);
      else
        project_then_compress(p);
    }
    if (scaled_)
      for (int p = 0; p < 2; ++p) ops::scale(c_[p].view({c_[p].size()}), scale_[p]);
    const T* vc = values_c();
    const bool keep = in.keep_for_backward;
    kept_ = keep;
    o_buf_.resize(B * n * qd_);
    // One head's n×k probabilities at a time, kept by no one: the backward recomputes them (one
    // B·h·n·k·d_h product more, B·h·n·k floats less between forward and backward).
    Buffer<T> probs(n * k_);
    shape_ = SdpaShape{B, n, k_, h_, hc_, dh_, 1.0 / std::sqrt(double(dh_)), false,
                       pools_windows(o_.projection) ? slot_mask_.data() : nullptr, training ? dims_.dropout : 0.0, seed};
    sdpa_forward(shape_, q_.data(), c_[0].data(), vc, probs.data(), o_buf_.data(), /*keep_probs=*/false);
    ops::linear_forward(o_buf_.view({B * n, qd_}), arena_.value_view(wo_), arena_.value_view(bo_), matrix(out, B * n, d_));
    if (!keep) release_activations();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "linformer");
    const int64_t B = in_.B, n = in_.n, m = m_;
    if (in_.context) LF_REQUIRE(dcontext != nullptr, "linformer attention: cross-attention backward needs dcontext");
    // Two buffers serve four gradients, to keep the peak low: grad_o_ holds dO (B, n, h·d_h), then
    // (dead after the attention core) the gradient of the key/value source (B, m, d); o_buf_ (dead
    // once W_o's gradient is taken) receives dQ.
    grad_o_.resize(B * std::max(n * qd_, m * d_));
    for (auto& g : dc_) g.resize(B * k_ * ldc());
    scratch_.resize(sdpa_backward_scratch(shape_, /*recompute_probs=*/true));
    ops::linear_backward<T>(o_buf_.view({B * n, qd_}), arena_.value_view(wo_), matrix(dout, B * n, d_),
                            grad_o_.view({B * n, qd_}), arena_.grad_view(wo_), arena_.grad_view(bo_));
    T* dq = o_buf_.data();
    sdpa_backward<T>(shape_, q_.data(), c_[0].data(), values_c(), /*probs=*/nullptr, grad_o_.data(), dq, dc_[0].data(),
                     dc_[1].data(), scratch_.data());
    // Back through the scales of Theorem 2's shared R, and V̂ = K̂.
    for (int p = 0; p < 2; ++p)
      if (scaled_) ops::scale(dc_[p].view({dc_[p].size()}), scale_[p]);
    if (kv_identical_) ops::add<T>(dc_[1].view({dc_[1].size()}), dc_[0].view({dc_[0].size()}));
    ops::linear_backward<T>(matrix(in_.x, B * n, d_), arena_.value_view(wq_), matrix(dq, B * n, qd_), matrix(dx, B * n, d_),
                            arena_.grad_view(wq_), arena_.grad_view(bq_));

    dctx_ = grad_o_.data();  // gradient reaching the key/value source (B, m, d)
    ops::fill(matrix(dctx_, B * m, d_), 0);
    for (int p = 0; p < 2; ++p) {
      if (p == 1 && kv_identical_) continue;
      if (compress_first_)
        compress_then_project_backward(p, dc_[p].data());
      else
        project_then_compress_backward(p, dc_[p].data());
    }
    // Padded rows were replaced by zeros: nothing flows back to them.
    zero_rows_at_padding(dctx_, in_.key_padding_mask, B, m, d_);
    if (in_.context)
      ops::copy<T>(matrix(dctx_, B * m, d_), matrix(dcontext, B * m, d_));
    else
      ops::add<T>(matrix(dctx_, B * m, d_), matrix(dx, B * n, d_));
    release_activations();  // one backward per forward, as in PyTorch
    release_buffers(grad_o_, dc_[0], dc_[1], scratch_);
    dctx_ = nullptr;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    // Forward: q and the attention output (B, n, h·d_h), one head's n×k probabilities, K̂ and V̂
    // (B, k, hc·d_h); compress-first E c (B, G, k, d) per distinct E, project-first the full K/V maps
    // (B, m, kv_dim); max pooling its argmax indices, conv_full its rearranged weights; the key/value
    // source with padded rows zeroed (B, m, d), counted as if a key padding mask came.
    const bool cf = use_compress_first(m);
    const double c = double(B) * k_ * ldc(), tensors = kv_identical_ && !scaled_ ? 1 : 2;
    double fwd = 2.0 * B * n * qd_ + double(n) * k_ + tensors * c + double(B) * m * d_;
    fwd += cf ? double(B) * G_ * k_ * d_ * (same_op_ ? 1 : 2) : double(B) * m * kvd_ * (o_.share_kv_linear ? 1 : 2);
    if (o_.projection == Projection::Max) fwd += (kv_identical_ ? 1 : 2) * c * double(sizeof(int32_t)) / sizeof(T);
    if (o_.projection == Projection::ConvFull) fwd += conv_full_numel();
    if (!training) return sizeof(T) * fwd;
    // Backward: dO / the key-value source's gradient, dK̂ and dV̂, 3 (n × k) scratch; project-first one
    // dK (B, m, kv_dim) at a time; conv_full its weights' gradient.
    double bwd = double(B) * std::max(n * qd_, m * d_) + 2.0 * c + 3.0 * n * k_;
    if (!cf) bwd += double(B) * m * kvd_;
    if (o_.projection == Projection::ConvFull) bwd += conv_full_numel();
    return sizeof(T) * (fwd + bwd);
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double kv = needs_project_first(o_.projection) ? cost_project_first(m)
                                                         : std::min(cost_project_first(m), cost_compress_first(m));
    const double rest = 2.0 * n * d_ * qd_ * 2 + 2.0 * 2 * n * k_ * dh_ * h_;  // Q, out; scores and P·V
    return double(B) * (kv + rest);
  }

 private:
  // --- parameters --------------------------------------------------------------------------------
  void declare_params(const std::string& prefix) {
    const Init w = Init::uniform(1.0 / std::sqrt(double(d_)));  // nn.Linear's default bound (fan_in d)
    wq_ = arena_.declare(prefix + "to_q.weight", {qd_, d_}, w);
    wk_ = arena_.declare(prefix + "to_k.weight", {kvd_, d_}, w);
    wv_ = o_.share_kv_linear ? wk_ : arena_.declare(prefix + "to_v.weight", {kvd_, d_}, w);
    if (o_.qkv_bias) {
      bq_ = arena_.declare(prefix + "to_q.bias", {qd_}, w);
      bk_ = arena_.declare(prefix + "to_k.bias", {kvd_}, w);
      bv_ = o_.share_kv_linear ? bk_ : arena_.declare(prefix + "to_v.bias", {kvd_}, w);
    }
    const Init wout = Init::uniform(1.0 / std::sqrt(double(qd_)));  // fan_in h·d_h
    wo_ = arena_.declare(prefix + "to_out.weight", {d_, qd_}, wout);
    bo_ = arena_.declare(prefix + "to_out.bias", {d_}, wout);

    const bool layerwise = o_.sharing == Sharing::Layerwise;
    const std::string names[2] = {layerwise ? "shared_proj" : prefix + "proj_k", prefix + "proj_v"};
    const std::string r_stream = layerwise ? "shared_proj.R" : prefix + "proj.R";
    std::vector<int64_t> eshape = {k_, L_};
    if (G_ == h_) eshape.insert(eshape.begin(), h_);
    for (int p = 0; p < (e_is_f_ ? 1 : 2); ++p) {
      switch (o_.projection) {
        case Projection::Learned:
          proj_[p] = arena_.declare(names[p], eshape,
                                    o_.xavier_init ? Init::xavier_uniform(k_, L_, 1 / std::sqrt(2.0))
                                                   : Init::uniform(1 / std::sqrt(double(k_))),
                                    true, layerwise);
          break;
        case Projection::Fixed: {  // E = δR, F = e^{-δ}R: one random stream; one stored R when E and F share it
          const double scale = e_is_f_ ? 1.0 : p == 0 ? o_.delta : std::exp(-o_.delta);
          proj_[p] = arena_.declare(names[p], eshape, Init::normal(1 / std::sqrt(double(k_)), scale, r_stream), false,
                                    layerwise);
          break;
        }
        case Projection::Conv:
          proj_[p] = arena_.declare(names[p] + "_kernel", G_ == h_ ? std::vector<int64_t>{h_, w_} : std::vector<int64_t>{w_},
                                    Init::uniform(1 / std::sqrt(double(w_))), true, layerwise);
          break;
        case Projection::ConvFull: {  // nn.Conv1d(gw, groups·gw, w, stride w): (out, in, kernel), U(±1/√(in·w))
          const Init ci = Init::uniform(1 / std::sqrt(double(gw_ * w_)));
          proj_[p] = arena_.declare(names[p] + "_conv.weight", {groups_ * gw_, gw_, w_}, ci, true, layerwise);
          conv_bias_[p] = arena_.declare(names[p] + "_conv.bias", {groups_ * gw_}, ci, true, layerwise);
          break;
        }
        case Projection::Mean:
        case Projection::Max:
          break;
      }
    }
    if (e_is_f_) {
      proj_[1] = proj_[0];
      conv_bias_[1] = conv_bias_[0];
    }
  }

  int64_t conv_full_numel() const { return groups_ * gw_ * gw_ * w_; }

  // --- windows -----------------------------------------------------------------------------------
  // count_ (B, k): the real (existing, unpadded) positions of window j = [j·w, (j+1)·w) of each
  // sample; slot_mask_ (B, k): the windows with none, hidden from the softmax (nonzero = hidden).
  // Counted on the host from the call's key padding mask, which is host memory (AttentionInput).
  void count_window_positions() {
    const int64_t B = in_.B;
    count_.assign(size_t(B * k_), 0);
    slot_mask_.assign(size_t(B * k_), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < k_; ++j) {
        int32_t c = 0;
        for (int64_t t = j * w_; t < std::min(m_, (j + 1) * w_); ++t) c += !padded(b, t);
        count_[size_t(b * k_ + j)] = c;
        slot_mask_[size_t(b * k_ + j)] = c == 0;
      }
  }
  // Sample b's empty slots (k), nonzero = no real position in the window.
  TensorView<const uint8_t> empty_slots(int64_t b) const { return vector_view(slot_mask_.data() + b * k_, k_); }
  // Slots j whose window holds position j·w + τ of an m-long sequence (positions past m do not exist).
  int64_t slots_reaching(int64_t tau) const { return tau < m_ ? std::min(k_, (m_ - tau + w_ - 1) / w_) : 0; }

  // --- compression along the sequence, by the projections that are linear in it ------------------
  bool dense_projection() const { return o_.projection == Projection::Learned || o_.projection == Projection::Fixed; }

  // dst (k × width) = E_g src (m × width): learned and fixed E as a product with their first m
  // columns; mean and conv window by window over the real positions.
  void seq_compress(int p, int64_t b, int64_t g, const T* src, int64_t lds, int64_t width, T* dst, int64_t ldd) const {
    if (dense_projection()) {
      ops::matmul(matrix(arena_.value(proj_[p]) + g * k_ * L_, k_, m_, L_), matrix(src, m_, width, lds), matrix(dst, k_, width, ldd));
      return;
    }
    ops::window_compress<T>(matrix(src, m_, width, lds), tap(p, g), window_counts(b), padding_of(b), w_,
                            matrix(dst, k_, width, ldd));
  }

  // From ddst (k × width): dsrc (m × width) += E_gᵀ ddst, and the trainable projection's gradient
  // (learned dE_g += ddst srcᵀ; conv dkernel_g[τ] += Σ_j ddst_j · src_{j·w+τ}).
  void seq_compress_backward(int p, int64_t b, int64_t g, const T* src, int64_t lds, int64_t width, const T* ddst,
                             int64_t ldd, T* dsrc, int64_t ldds) {
    if (dense_projection()) {
      const T* E = arena_.value(proj_[p]) + g * k_ * L_;
      if (o_.projection == Projection::Learned)
        ops::matmul(matrix(ddst, k_, width, ldd), matrix(src, m_, width, lds).t(),
                    matrix(arena_.grad(proj_[p]) + g * k_ * L_, k_, m_, L_), 1, 1);
      ops::matmul(matrix(E, k_, m_, L_).t(), matrix(ddst, k_, width, ldd), matrix(dsrc, m_, width, ldds), 1, 1);
      return;
    }
    const bool conv = o_.projection == Projection::Conv;
    ops::window_compress_backward<T>(matrix(src, m_, width, lds), tap(p, g), window_counts(b), padding_of(b), w_,
                                     matrix(ddst, k_, width, ldd), matrix(dsrc, m_, width, ldds),
                                     conv ? vector_view(arena_.grad(proj_[p]) + g * w_, w_) : TensorView<T>());
  }

  // sums (k): Σ_t E_g[j, t] over the real positions t < m of sample b, the weight of the bias in
  // compress-first (mean: 1 for a slot with a real position, so the bias is averaged like the keys).
  void row_weight_sums(int p, int64_t b, int64_t g, TensorView<T> sums) const {
    if (dense_projection())
      ops::masked_row_sums<T>(matrix(arena_.value(proj_[p]) + g * k_ * L_, k_, m_, L_), padding_of(b), sums);
    else
      ops::window_weight_sums<T>(tap(p, g), window_counts(b), padding_of(b), w_, m_, sums);
  }
  // Whether the row sums have a gradient: a trainable E (learned) or kernel (conv).
  bool row_weight_sums_trainable() const {
    return o_.projection == Projection::Learned || o_.projection == Projection::Conv;
  }
  // The projection's gradient from dsums (k) = d(row_weight_sums(p, b, g)).
  void row_weight_sums_backward(int p, int64_t b, int64_t g, TensorView<const T> dsums) {
    if (o_.projection == Projection::Learned)
      ops::masked_row_sums_backward<T>(dsums, padding_of(b), matrix(arena_.grad(proj_[p]) + g * k_ * L_, k_, m_, L_));
    else if (o_.projection == Projection::Conv)
      ops::window_weight_sums_backward<T>(dsums, padding_of(b), w_, m_, vector_view(arena_.grad(proj_[p]) + g * w_, w_));
  }

  // --- pooling of the projected channels (project-first only) -------------------------------------
  // dst (k × width, ldd) = per channel max over each window's real positions of src (m × width, lds);
  // amax (k × width, ldd): the winning position (the first on ties), -1 for an empty slot (dst 0).
  void max_pool(int64_t b, const T* src, int64_t lds, int64_t width, T* dst, int32_t* amax, int64_t ldd) const {
    ops::window_max_pool<T>(matrix(src, m_, width, lds), padding_of(b), w_, matrix(dst, k_, width, ldd),
                            matrix(amax, k_, width, ldd));
  }

  // The max's gradient goes to the position that won.
  void max_pool_backward(const int32_t* amax, const T* ddst, int64_t ldd, int64_t width, T* dsrc, int64_t ldds) const {
    ops::window_max_pool_backward<T>(matrix(amax, k_, width, ldd), matrix(ddst, k_, width, ldd),
                                     matrix(dsrc, m_, width, ldds));
  }

  // conv_full's weight (groups·gw, gw, w), or its gradient, seen as (groups, w, gw, gw): one (out × in)
  // matrix per group and tap, so that a tap is one product over the rows j·w + τ of every window.
  template <class P>
  TensorView<P> by_tap(TensorView<P> W) const {
    return TensorView<P>::strided(W.data(), {groups_, w_, gw_, gw_}, {gw_ * gw_ * w_, 1, gw_ * w_, w_}, W.device());
  }
  // wt_ (groups, w, gw, gw): the weight so rearranged, each tap's matrix contiguous for its products.
  void arrange_conv_full(int p) {
    wt_.resize(conv_full_numel());
    ops::copy_strided<T>(by_tap(arena_.value_view(proj_[p])), wt_.view({groups_, w_, gw_, gw_}));
  }

  // dst (k × gw, ldd) = the stride-w convolution of group i: Σ_τ src_{j·w+τ} Wt_{i,τ}ᵀ + bias for
  // slots with a real position (padded rows of src are zero; positions past m do not exist, as in a
  // zero-padded input), 0 for empty slots.
  void conv_full_forward(int p, int64_t b, int64_t i, const T* src, int64_t lds, T* dst, int64_t ldd) const {
    const TensorView<T> out = matrix(dst, k_, gw_, ldd);
    ops::slot_bias<T>(vector_view(arena_.value(conv_bias_[p]) + i * gw_, gw_), empty_slots(b), out);
    for (int64_t tau = 0; tau < w_; ++tau)
      if (const int64_t rows = slots_reaching(tau); rows > 0)
        ops::matmul(matrix(src + tau * lds, rows, gw_, w_ * lds), matrix(wt_.data() + (i * w_ + tau) * gw_ * gw_, gw_, gw_).t(),
                    matrix(dst, rows, gw_, ldd), 1, 1);
    ops::zero_masked_rows(empty_slots(b), out);  // a window of padding only: its product added zeros; keep it exactly 0
  }

  // From ddst: dsrc += Σ_τ (rows j·w+τ) ddst Wt_τ; dwt_ += ddstᵀ src rows; the bias from non-empty slots.
  void conv_full_backward(int p, int64_t b, int64_t i, const T* src, int64_t lds, const T* ddst, int64_t ldd, T* dsrc,
                          int64_t ldds) {
    ops::slot_bias_backward<T>(matrix(ddst, k_, gw_, ldd), empty_slots(b),
                               vector_view(arena_.grad(conv_bias_[p]) + i * gw_, gw_));
    for (int64_t tau = 0; tau < w_; ++tau) {
      const int64_t rows = slots_reaching(tau);
      if (rows == 0) continue;
      const int64_t off = (i * w_ + tau) * gw_ * gw_;
      const auto dd = matrix(ddst, rows, gw_, ldd);
      ops::matmul(dd.t(), matrix(src + tau * lds, rows, gw_, w_ * lds), matrix(dwt_.data() + off, gw_, gw_), 1, 1);
      ops::matmul(dd, matrix(wt_.data() + off, gw_, gw_), matrix(dsrc + tau * ldds, rows, gw_, w_ * ldds), 1, 1);
    }
  }

  // dwt_ (groups, w, gw, gw) added to the weight's gradient in its (out, in, kernel) layout.
  void scatter_conv_full_grad(int p) {
    ops::copy_strided<T>(dwt_.view({groups_, w_, gw_, gw_}), by_tap(arena_.grad_view(proj_[p])), /*accumulate=*/true);
  }

  // --- association orders ------------------------------------------------------------------------
  // Multiply-adds ×2 (max: comparisons) of compressing one tensor of `width` channels, `groups` times,
  // over m positions.
  double seq_compress_cost(int64_t m, int64_t width, int64_t groups) const {
    const double per = double(width) * groups;
    switch (o_.projection) {
      case Projection::Learned:
      case Projection::Fixed:
        return 2.0 * k_ * m * per;
      case Projection::Mean:
      case Projection::Conv:
        return 2.0 * m * per;
      case Projection::Max:
        return double(m) * per;
      case Projection::ConvFull:
        return 2.0 * m * per * width;
    }
    return 0;
  }
  double cost_project_first(int64_t m) const {
    const double linears = 2.0 * m * d_ * kvd_ * (o_.share_kv_linear ? 1 : 2);
    return linears + seq_compress_cost(m, gw_, groups_) * (kv_identical_ ? 1 : 2);
  }
  double cost_compress_first(int64_t m) const {
    const double compress = seq_compress_cost(m, d_, G_) * (same_op_ ? 1 : 2);
    const double linears = 2.0 * k_ * d_ * dh_ * hc_ * (kv_identical_ ? 1 : 2);
    return compress + linears;
  }
  bool use_compress_first(int64_t m) const {
    if (needs_project_first(o_.projection)) return false;
    if (o_.order != Order::Auto) return o_.order == Order::CompressFirst;
    return cost_compress_first(m) < cost_project_first(m);
  }

  int64_t ldc() const { return hc_ * dh_; }  // row stride of K̂, V̂ (B, k, hc·d_h)
  const T* values_c() const { return kv_identical_ && !scaled_ ? c_[0].data() : c_[1].data(); }
  int head_of(int64_t i) const { return o_.one_kv_head ? 0 : int(i); }  // kv head read by query head i
  // First channel of K (B, m, kv_dim) read by compressed-head group i (all kv channels when G = 1).
  int64_t src_col(int64_t i) const { return G_ == 1 ? 0 : head_of(i) * dh_; }
  int weight_id(int p) const { return p == 0 ? wk_ : wv_; }
  int bias_id(int p) const { return p == 0 ? bk_ : bv_; }

  // K̂ = pool(c W_kᵀ + b_k) with padded rows zeroed after the bias. full_[p]: (B, m, kv_dim). Group i
  // (one with G = 1, else per query head) compresses gw channels of K into its gw columns of K̂.
  void project_then_compress(int p) {
    const int64_t B = in_.B, m = m_;
    if (p == 1 && o_.share_kv_linear) {
      full_ptr_[1] = full_ptr_[0];  // V uses K's projection
    } else {
      full_[p].resize(B * m * kvd_);
      ops::linear_forward(matrix(ctxm_, B * m, d_), arena_.value_view(weight_id(p)), arena_.value_view(bias_id(p)),
                          full_[p].view({B * m, kvd_}));
      if (bias_id(p) >= 0) zero_rows_at_padding(full_[p].data(), in_.key_padding_mask, B, m, kvd_);
      full_ptr_[p] = full_[p].data();
    }
    if (o_.projection == Projection::Max) amax_[p].resize(B * k_ * ldc());
    if (o_.projection == Projection::ConvFull) arrange_conv_full(p);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < groups_; ++i) {
        const T* src = full_ptr_[p] + b * m * kvd_ + src_col(i);
        const int64_t off = b * k_ * ldc() + i * gw_;
        T* dst = c_[p].data() + off;
        if (o_.projection == Projection::Max)
          max_pool(b, src, kvd_, gw_, dst, amax_[p].data() + off, ldc());
        else if (o_.projection == Projection::ConvFull)
          conv_full_forward(p, b, i, src, kvd_, dst, ldc());
        else
          seq_compress(p, b, i, src, kvd_, gw_, dst, ldc());
      }
  }

  void project_then_compress_backward(int p, const T* dC) {
    const int64_t B = in_.B, m = m_;
    Buffer<T> dfull(B * m * kvd_);  // zeros: the poolings' backward adds into it
    if (o_.projection == Projection::ConvFull) {
      arrange_conv_full(p);
      dwt_.assign(conv_full_numel(), T(0));
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < groups_; ++i) {
        const T* src = full_ptr_[p] + b * m * kvd_ + src_col(i);
        T* dsrc = dfull.data() + b * m * kvd_ + src_col(i);
        const int64_t off = b * k_ * ldc() + i * gw_;
        if (o_.projection == Projection::Max)
          max_pool_backward(amax_[p].data() + off, dC + off, ldc(), gw_, dsrc, kvd_);
        else if (o_.projection == Projection::ConvFull)
          conv_full_backward(p, b, i, src, kvd_, dC + off, ldc(), dsrc, kvd_);
        else
          seq_compress_backward(p, b, i, src, kvd_, gw_, dC + off, ldc(), dsrc, kvd_);
      }
    if (o_.projection == Projection::ConvFull) scatter_conv_full_grad(p);
    zero_rows_at_padding(dfull.data(), in_.key_padding_mask, B, m, kvd_);
    ops::linear_backward<T>(matrix(ctxm_, B * m, d_), arena_.value_view(weight_id(p)), dfull.view({B * m, kvd_}),
                            matrix(dctx_, B * m, d_), arena_.grad_view(weight_id(p)), arena_.grad_view(bias_id(p)),
                            /*accumulate_dx=*/true);
  }

  // K̂ = (E c) W_kᵀ + (E 1_real) b_kᵀ. xe_[p]: (B, G, k, d); rowsum_[p]: (B, G, k).
  void compress_then_project(int p) {
    const int64_t B = in_.B, m = m_, ldc = this->ldc();
    const bool reuse = p == 1 && same_op_;  // F c = E c: already there
    if (!reuse) {
      xe_[p].resize(B * G_ * k_ * d_);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t g = 0; g < G_; ++g)
          seq_compress(p, b, g, ctxm_ + b * m * d_, d_, d_, xe_[p].data() + (b * G_ + g) * k_ * d_, d_);
      if (has_bias()) {
        rowsum_[p].resize(B * G_ * k_);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t g = 0; g < G_; ++g) row_weight_sums(p, b, g, vector_view(rowsum_[p].data() + (b * G_ + g) * k_, k_));
      }
    }
    xe_ptr_[p] = reuse ? xe_[0].data() : xe_[p].data();
    rowsum_ptr_[p] = reuse ? rowsum_[0].data() : rowsum_[p].data();
    const T* W = arena_.value(weight_id(p));
    const T* bias = value_or_null(bias_id(p));
    for (int64_t b = 0; b < B; ++b) {
      T* Cb = c_[p].data() + b * k_ * ldc;
      for (int64_t i = 0; i < groups_; ++i) {
        // G = 1: all kv heads at once (k × kv_dim); G = h: head i reads its own E_i c and W rows of head_of(i).
        const int64_t g = i, wrow = src_col(i);
        T* C = Cb + i * gw_;
        ops::matmul(matrix(xe_ptr_[p] + (b * G_ + g) * k_ * d_, k_, d_), matrix(W + wrow * d_, gw_, d_).t(), matrix(C, k_, gw_, ldc));
        if (bias)
          ops::add_row_weighted_bias<T>(vector_view(rowsum_ptr_[p] + (b * G_ + g) * k_, k_), vector_view(bias + wrow, gw_),
                                        matrix(C, k_, gw_, ldc));
      }
    }
  }

  void compress_then_project_backward(int p, const T* dC) {
    const int64_t B = in_.B, m = m_, ldc = this->ldc();
    const T* W = arena_.value(weight_id(p));
    T* dW = arena_.grad(weight_id(p));
    const T* bias = value_or_null(bias_id(p));
    T* dbias = grad_or_null(bias_id(p));
    Buffer<T> dxe(k_ * d_), drowsum(bias && row_weight_sums_trainable() ? k_ : 0);
    for (int64_t b = 0; b < B; ++b) {
      const T* dCb = dC + b * k_ * ldc;
      for (int64_t i = 0; i < groups_; ++i) {
        const int64_t g = i, wrow = src_col(i);
        const T* dCi = dCb + i * gw_;
        const T* xe = xe_ptr_[p] + (b * G_ + g) * k_ * d_;
        const auto dc = matrix(dCi, k_, gw_, ldc);
        ops::matmul(dc, matrix(W + wrow * d_, gw_, d_), dxe.view({k_, d_}));                    // dXe = dK̂ W
        ops::matmul(dc.t(), matrix(xe, k_, d_), matrix(dW + wrow * d_, gw_, d_), 1, 1);     // dW += dK̂ᵀ Xe
        if (bias) {  // db += Σ_j r_j dK̂_j; the row sums' gradient dK̂ b, then the projection's
          ops::add_row_weighted_bias_backward<T>(dc, vector_view(rowsum_ptr_[p] + (b * G_ + g) * k_, k_),
                                                 vector_view(bias + wrow, gw_), vector_view(dbias + wrow, gw_),
                                                 drowsum.empty() ? TensorView<T>() : drowsum.view({k_}));
          if (!drowsum.empty()) row_weight_sums_backward(p, b, g, drowsum.view({k_}));
        }
        // dc += Eᵀ dXe, and the projection's own gradient.
        seq_compress_backward(p, b, g, ctxm_ + b * m * d_, d_, d_, dxe.data(), d_, dctx_ + b * m * d_, d_);
      }
    }
  }

  // --- small helpers -----------------------------------------------------------------------------
  void release_activations() {
    release_buffers(xm_, q_, o_buf_, c_[0], c_[1], full_[0], full_[1], xe_[0], xe_[1], rowsum_[0], rowsum_[1]);
    release_buffers(amax_[0], amax_[1], wt_, dwt_, count_, slot_mask_);
    kept_ = false;
  }
  bool has_bias() const { return bk_ >= 0; }
  bool padded(int64_t b, int64_t t) const { return in_.key_padding_mask && in_.key_padding_mask[b * m_ + t]; }
  // The window poolings' inputs for sample b (E_g's taps for conv, the windows' real positions for
  // mean), as views; `{}` where the projection has none.
  TensorView<const uint8_t> padding_of(int64_t b) const {
    return in_.key_padding_mask ? vector_view(in_.key_padding_mask + b * m_, m_) : TensorView<const uint8_t>();
  }
  TensorView<const T> tap(int p, int64_t g) const {
    return o_.projection == Projection::Conv ? vector_view<const T>(arena_.value(proj_[p]) + g * w_, w_)
                                             : TensorView<const T>();
  }
  TensorView<const int32_t> window_counts(int64_t b) const {
    return o_.projection == Projection::Mean ? vector_view<const int32_t>(count_.data() + b * k_, k_)
                                             : TensorView<const int32_t>();
  }
  const T* value_or_null(int id) const { return id < 0 ? nullptr : arena_.value(id); }
  T* grad_or_null(int id) { return id < 0 ? nullptr : arena_.grad(id); }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  LinformerOptions o_;
  // d_h = dim_head; qd = h·d_h (Q and the attention output); w the pooling window; groups × gw: the
  // compressed-head groups of K̂ (one of kv_dim channels with G = 1, else h of d_h).
  int64_t d_ = 0, h_ = 0, dh_ = 0, qd_ = 0, L_ = 0, k_ = 0, w_ = 0, hk_ = 0, kvd_ = 0, G_ = 1, hc_ = 0;
  int64_t groups_ = 1, gw_ = 0;
  bool e_is_f_ = false, same_op_ = false, kv_identical_ = false, scaled_ = false;
  T scale_[2] = {T(1), T(1)};  // Theorem 2's δ and e^{-δ} on one stored R
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
  int proj_[2] = {-1, -1};       // E and F parameters (conv kernels, conv_full weights); -1 for mean and max
  int conv_bias_[2] = {-1, -1};  // conv_full's biases

  // Kept from the last forward for the backward (the caller keeps in_.x / in_.context alive).
  AttentionInput<T> in_;
  int64_t m_ = 0;
  bool compress_first_ = false;
  const T* ctxm_ = nullptr;  // key/value source with padded rows zeroed
  Buffer<T> xm_;
  bool kept_ = false;
  Buffer<T> q_, c_[2], full_[2], xe_[2], rowsum_[2], o_buf_, wt_;
  Buffer<int32_t> amax_[2];
  // Host-side metadata of the windows (count_window_positions), from the call's host padding mask.
  std::vector<int32_t> count_;
  std::vector<uint8_t> slot_mask_;
  // Backward work buffers, kept between calls.
  Buffer<T> grad_o_, dc_[2], scratch_, dwt_;
  T* dctx_ = nullptr;  // gradient of the key/value source: grad_o_'s storage during the backward
  const T* full_ptr_[2] = {nullptr, nullptr};
  const T* xe_ptr_[2] = {nullptr, nullptr};
  const T* rowsum_ptr_[2] = {nullptr, nullptr};
  SdpaShape shape_;
};

}  // namespace

void register_linformer_attention(AttentionRegistry& registry) {
  register_kind<LinformerAttention>(registry, linformer_info(), parse_linformer);
  set_attention_kind_rules("linformer", {"k at most max_len; the pooling projections need max_len divisible by k",
                                        "order = compress_first not with a projection that pools the projected keys "
                                        "and values"});
}

}  // namespace lf
