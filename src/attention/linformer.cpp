// `linformer` (Wang et al. 2020): keys and values are compressed along the sequence by k×m
// projections E and F before softmax attention, so the score matrix is n×k and the layer costs
// O(n·k) time and memory:
//   head_i = softmax( Q_i (E_i K_i)ᵀ / √d_h ) (F_i V_i),  K = c W_kᵀ + b_k,  V = c W_vᵀ + b_v.
// Options (docs/attention.md has the full table): k; sharing of E/F none (per head) | headwise (one E,
// one F per layer) | kv (E = F) | layerwise (one matrix for all layers, model-level name
// `shared_proj`); one kv head; lucidrains' share_kv_linear (V reuses W_k); projection learned
// (U(±1/√k) or xavier) | fixed (Theorem 2: E = δR, F = e^{-δ}R, R ~ N(0, 1/k), stored as
// non-trainable parameters) | mean pooling | strided convolution (kernel = stride = max_len/k, one
// kernel per E); sequences shorter than max_len use the first m columns of E/F; a key padding mask
// zeroes padded positions before compression, so they contribute nothing (not even their bias).
// Two association orders give the same result: project-then-compress E (c W_kᵀ + 1 b_kᵀ) (lucidrains)
// and compress-then-project (E c) W_kᵀ + (E 1) b_kᵀ (fairseq, bias exact); `order: auto` takes the
// one with fewer FLOPs.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/attention.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "cpu/gemm.h"
#include "cpu/linear.h"

namespace lf {
namespace {

enum class Sharing { None, Headwise, Kv, Layerwise };
enum class Projection { Learned, Fixed, Mean, Conv };
enum class Order { Auto, ProjectFirst, CompressFirst };

struct LinformerOptions {
  int64_t k = 256;
  Sharing sharing = Sharing::Headwise;
  bool one_kv_head = false;
  bool share_kv_linear = false;
  bool qkv_bias = false;
  Projection projection = Projection::Learned;
  bool xavier_init = false;
  double delta = 1.0;
  Order order = Order::Auto;
};

LinformerOptions parse_linformer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("linformer", options);
  LinformerOptions o;
  o.k = r.get_int("k", std::min<int64_t>(256, dims.max_len));
  LF_REQUIRE(o.k > 0, r.where("k"), " must be positive, got ", o.k);
  LF_REQUIRE(o.k <= dims.max_len, r.where("k"), " (", o.k, ") must not exceed max_len (", dims.max_len,
             "): the projection compresses max_len positions to k");
  const std::string sharing = r.get_choice("sharing", "headwise", {"none", "headwise", "kv", "layerwise"});
  o.sharing = sharing == "none" ? Sharing::None
              : sharing == "headwise" ? Sharing::Headwise
              : sharing == "kv" ? Sharing::Kv
                                : Sharing::Layerwise;
  o.one_kv_head = r.get_bool("one_kv_head", false);
  o.share_kv_linear = r.get_bool("share_kv_linear", false);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  const std::string proj = r.get_choice("projection", "learned", {"learned", "fixed", "mean", "conv"});
  o.projection = proj == "learned" ? Projection::Learned
                 : proj == "fixed" ? Projection::Fixed
                 : proj == "mean"  ? Projection::Mean
                                   : Projection::Conv;
  o.xavier_init = r.get_choice("init", "uniform", {"uniform", "xavier"}) == "xavier";
  o.delta = r.get_double("delta", 1.0);
  LF_REQUIRE(std::isfinite(o.delta) && o.delta > 0, r.where("delta"), " must be a positive number, got ", o.delta);
  const std::string order = r.get_choice("order", "auto", {"auto", "project_first", "compress_first"});
  o.order = order == "auto" ? Order::Auto : order == "project_first" ? Order::ProjectFirst : Order::CompressFirst;
  if (o.projection == Projection::Mean || o.projection == Projection::Conv)
    LF_REQUIRE(dims.max_len % o.k == 0, "linformer projection '", proj, "' pools windows of max_len / k positions: max_len (",
               dims.max_len, ") must be divisible by k (", o.k, ")");
  json out = r.finish();
  if (resolved) *resolved = out;
  return o;
}

const AttentionKindInfo& linformer_info() {
  static const AttentionKindInfo info{
      "linformer", "low-rank attention: keys and values projected along the sequence to k, O(n·k)",
      AttentionSupport{/*causal=*/false, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true}};
  return info;
}

template <class T>
class LinformerAttention final : public Attention<T> {
 public:
  LinformerAttention(const AttentionSpec& spec, ParamArena<T>& arena) : arena_(arena), dims_(spec.dims) {
    o_ = parse_linformer(dims_, spec.options, nullptr);
    d_ = dims_.d_model;
    h_ = dims_.n_heads;
    dh_ = d_ / h_;
    L_ = dims_.max_len;
    k_ = o_.k;
    hk_ = o_.one_kv_head ? 1 : h_;
    kvd_ = hk_ * dh_;
    G_ = o_.sharing == Sharing::None ? h_ : 1;
    hc_ = G_ == h_ ? h_ : hk_;
    e_is_f_ = o_.sharing == Sharing::Kv || o_.sharing == Sharing::Layerwise;
    kv_identical_ = e_is_f_ && o_.share_kv_linear;
    declare_params(spec.prefix);
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, linformer_info());
    in_ = in;
    const int64_t B = in.B, n = in.n, m = in.kv_len();
    m_ = m;
    compress_first_ = use_compress_first(m);
    // The key/value source with padded rows zeroed (a select, so garbage or NaN there cannot leak).
    const T* ctx = in.context ? in.context : in.x;
    ctxm_ = ctx;
    if (in.key_padding_mask) {
      xm_.assign(ctx, ctx + B * m * d_);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < m; ++j)
          if (in.key_padding_mask[b * m + j]) std::fill_n(xm_.data() + (b * m + j) * d_, d_, T(0));
      ctxm_ = xm_.data();
    }
    build_projections();

    q_.resize(size_t(B * n * d_));
    linear_forward(in.x, arena_.value(wq_), value_or_null(bq_), q_.data(), B * n, d_, d_);
    for (int p = 0; p < 2; ++p) {
      c_[p].resize(size_t(B * k_ * hc_ * dh_));
      if (p == 1 && kv_identical_) continue;  // V̂ = K̂
      if (compress_first_)
        compress_then_project(p);
      else
        project_then_compress(p);
    }
    const T* vc = kv_identical_ ? c_[0].data() : c_[1].data();
    const bool keep = in.keep_for_backward;
    kept_ = keep;
    o_buf_.resize(size_t(B * n * d_));
    // One head's n×k probabilities at a time, kept by no one: the backward recomputes them (one
    // B·h·n·k·d_h product more, B·h·n·k floats less between forward and backward).
    std::vector<T> probs(size_t(n * k_));
    shape_ = SdpaShape{B, n, k_, h_, hc_, dh_, 1.0 / std::sqrt(double(dh_)), false, nullptr,
                       training ? dims_.dropout : 0.0, seed};
    sdpa_forward(shape_, q_.data(), c_[0].data(), vc, probs.data(), o_buf_.data(), /*keep_probs=*/false);
    linear_forward(o_buf_.data(), arena_.value(wo_), arena_.value(bo_), out, B * n, d_, d_);
    if (!keep) release_activations();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "linformer");
    const int64_t B = in_.B, n = in_.n, m = m_;
    if (in_.context) LF_REQUIRE(dcontext != nullptr, "linformer attention: cross-attention backward needs dcontext");
    // Two (B, n, d) buffers serve four gradients, to keep the peak low: grad_o_ holds dO, then (dead
    // after the attention core) the gradient of the key/value source; o_buf_ (dead once W_o's
    // gradient is taken) receives dQ.
    grad_o_.resize(size_t(B * std::max(n, m) * d_));
    for (auto& g : dc_) g.resize(size_t(B * k_ * hc_ * dh_));
    scratch_.resize(size_t(sdpa_backward_scratch(shape_, /*recompute_probs=*/true)));
    linear_backward(o_buf_.data(), arena_.value(wo_), dout, grad_o_.data(), arena_.grad(wo_), arena_.grad(bo_), B * n,
                    d_, d_);
    T* dq = o_buf_.data();
    const T* vc = kv_identical_ ? c_[0].data() : c_[1].data();
    sdpa_backward<T>(shape_, q_.data(), c_[0].data(), vc, /*probs=*/nullptr, grad_o_.data(), dq, dc_[0].data(),
                  dc_[1].data(), scratch_.data());
    if (kv_identical_)
      for (size_t i = 0; i < dc_[0].size(); ++i) dc_[0][i] += dc_[1][i];
    linear_backward(in_.x, arena_.value(wq_), dq, dx, arena_.grad(wq_), grad_or_null(bq_), B * n, d_, d_);

    dctx_ = grad_o_.data();  // gradient reaching the key/value source (B, m, d)
    std::fill_n(dctx_, B * m * d_, T(0));
    for (auto& g : dE_) std::fill(g.begin(), g.end(), T(0));
    for (int p = 0; p < 2; ++p) {
      if (p == 1 && kv_identical_) continue;
      if (compress_first_)
        compress_then_project_backward(p, dc_[p].data());
      else
        project_then_compress_backward(p, dc_[p].data());
    }
    if (in_.key_padding_mask)  // padded rows were replaced by zeros: nothing flows back to them
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < m; ++j)
          if (in_.key_padding_mask[b * m + j]) std::fill_n(dctx_ + (b * m + j) * d_, d_, T(0));
    if (in_.context)
      std::copy(dctx_, dctx_ + B * m * d_, dcontext);
    else
      for (int64_t i = 0; i < B * m * d_; ++i) dx[i] += dctx_[i];
    accumulate_projection_grads();
    release_activations();  // one backward per forward, as in PyTorch
    release_buffers(grad_o_, dc_[0], dc_[1], scratch_);
    dctx_ = nullptr;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    // q, the attention output and one head's n×k probabilities; the compressed inputs (B, G, k, d);
    // project-first also the full K/V maps (B, m, kvd). Backward: dO (or the key/value source's
    // gradient), dK̂/dV̂ and 2-3 (n × k) scratch.
    const double d = double(d_), kd = 2.0 * B * G_ * k_ * d + (use_compress_first(m) ? 0.0 : 2.0 * B * m * kvd_);
    const double fwd = 2.0 * B * n * d + double(n) * k_ + kd;
    return sizeof(T) * (training ? fwd + B * std::max(n, m) * d + 3.0 * n * k_ + 2.0 * B * k_ * kvd_ : fwd);
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    const double kv = std::min(cost_project_first(m), cost_compress_first(m));
    const double rest = 2.0 * n * d_ * d_ * 2 + 2.0 * 2 * n * k_ * dh_ * h_;  // Q, out; scores and P·V
    return double(B) * (kv + rest);
  }

 private:
  // --- parameters --------------------------------------------------------------------------------
  void declare_params(const std::string& prefix) {
    const Init w = Init::uniform(1.0 / std::sqrt(double(d_)));  // nn.Linear's default bound
    wq_ = arena_.declare(prefix + "to_q.weight", {d_, d_}, w);
    wk_ = arena_.declare(prefix + "to_k.weight", {kvd_, d_}, w);
    wv_ = o_.share_kv_linear ? wk_ : arena_.declare(prefix + "to_v.weight", {kvd_, d_}, w);
    if (o_.qkv_bias) {
      bq_ = arena_.declare(prefix + "to_q.bias", {d_}, w);
      bk_ = arena_.declare(prefix + "to_k.bias", {kvd_}, w);
      bv_ = o_.share_kv_linear ? bk_ : arena_.declare(prefix + "to_v.bias", {kvd_}, w);
    }
    wo_ = arena_.declare(prefix + "to_out.weight", {d_, d_}, w);
    bo_ = arena_.declare(prefix + "to_out.bias", {d_}, w);

    const bool layerwise = o_.sharing == Sharing::Layerwise;
    const std::string names[2] = {layerwise ? "shared_proj" : prefix + "proj_k", prefix + "proj_v"};
    const std::string r_stream = layerwise ? "shared_proj.R" : prefix + "proj.R";
    std::vector<int64_t> eshape = {k_, L_};
    if (G_ == h_) eshape.insert(eshape.begin(), h_);
    const int64_t window = L_ / k_;
    for (int p = 0; p < (e_is_f_ ? 1 : 2); ++p) {
      switch (o_.projection) {
        case Projection::Learned:
          proj_[p] = arena_.declare(names[p], eshape,
                                    o_.xavier_init ? Init::xavier_uniform(k_, L_, 1 / std::sqrt(2.0))
                                                   : Init::uniform(1 / std::sqrt(double(k_))),
                                    true, layerwise);
          break;
        case Projection::Fixed:  // E = δR, F = e^{-δ}R: one random stream, two scales
          proj_[p] = arena_.declare(names[p], eshape,
                                    Init::normal(1 / std::sqrt(double(k_)), p == 0 ? o_.delta : std::exp(-o_.delta), r_stream),
                                    false, layerwise);
          break;
        case Projection::Conv:
          proj_[p] = arena_.declare(names[p] + "_kernel", G_ == h_ ? std::vector<int64_t>{h_, window} : std::vector<int64_t>{window},
                                    Init::uniform(1 / std::sqrt(double(window))), true, layerwise);
          break;
        case Projection::Mean:
          break;
      }
    }
    if (e_is_f_) proj_[1] = proj_[0];
  }

  // E (p = 0) and F (p = 1) as dense (G, k, L) matrices: parameters themselves when learned or fixed,
  // otherwise built from the pooling rule or the convolution kernel.
  void build_projections() {
    if (o_.projection == Projection::Learned || o_.projection == Projection::Fixed) {
      E_[0] = arena_.value(proj_[0]);
      E_[1] = arena_.value(proj_[1]);
      return;
    }
    const int64_t window = L_ / k_;
    for (int p = 0; p < (e_is_f_ ? 1 : 2); ++p) {
      ebuf_[p].assign(size_t(G_ * k_ * L_), T(0));
      for (int64_t g = 0; g < G_; ++g)
        for (int64_t j = 0; j < k_; ++j)
          for (int64_t t = 0; t < window; ++t)
            ebuf_[p][size_t((g * k_ + j) * L_ + j * window + t)] =
                o_.projection == Projection::Mean ? T(1) / T(window) : arena_.value(proj_[p])[g * window + t];
      E_[p] = ebuf_[p].data();
    }
    if (e_is_f_) E_[1] = E_[0];
  }

  // dE for the parameters that train: learned E/F take it directly, conv kernels sum it over the
  // positions that share a kernel entry.
  T* projection_grad(int p) {
    if (o_.projection == Projection::Learned) return arena_.grad(proj_[p]);
    if (o_.projection == Projection::Conv) {
      const int q = e_is_f_ ? 0 : p;
      dE_[q].resize(size_t(G_ * k_ * L_));
      return dE_[q].data();
    }
    return nullptr;  // fixed and mean projections do not train
  }

  void accumulate_projection_grads() {
    if (o_.projection != Projection::Conv) return;
    const int64_t window = L_ / k_;
    for (int p = 0; p < (e_is_f_ ? 1 : 2); ++p) {
      if (dE_[p].empty()) continue;
      T* dw = arena_.grad(proj_[p]);
      for (int64_t g = 0; g < G_; ++g)
        for (int64_t j = 0; j < k_; ++j)
          for (int64_t t = 0; t < window; ++t) dw[g * window + t] += dE_[p][size_t((g * k_ + j) * L_ + j * window + t)];
    }
  }

  // --- association orders ------------------------------------------------------------------------
  double cost_project_first(int64_t m) const {
    const double linears = 2.0 * m * d_ * kvd_ * (o_.share_kv_linear ? 1 : 2);
    const double compress = 2.0 * k_ * m * dh_ * hc_ * (kv_identical_ ? 1 : 2);
    return linears + compress;
  }
  double cost_compress_first(int64_t m) const {
    const double compress = 2.0 * G_ * k_ * m * d_ * (e_is_f_ ? 1 : 2);
    const double linears = 2.0 * k_ * d_ * dh_ * hc_ * (kv_identical_ ? 1 : 2);
    return compress + linears;
  }
  bool use_compress_first(int64_t m) const {
    if (o_.order != Order::Auto) return o_.order == Order::CompressFirst;
    return cost_compress_first(m) < cost_project_first(m);
  }

  int head_of(int64_t i) const { return o_.one_kv_head ? 0 : int(i); }  // kv head read by query head i
  int weight_id(int p) const { return p == 0 ? wk_ : wv_; }
  int bias_id(int p) const { return p == 0 ? bk_ : bv_; }

  // K̂ = E (c W_kᵀ + b_k) with padded rows zeroed after the bias. full_[p]: (B, m, kvd).
  void project_then_compress(int p) {
    const int64_t B = in_.B, m = m_, ldc = hc_ * dh_;
    if (p == 1 && o_.share_kv_linear) {
      full_ptr_[1] = full_ptr_[0];  // V uses K's projection
    } else {
      full_[p].resize(size_t(B * m * kvd_));
      linear_forward(ctxm_, arena_.value(weight_id(p)), value_or_null(bias_id(p)), full_[p].data(), B * m, d_, kvd_);
      if (in_.key_padding_mask && bias_id(p) >= 0) zero_padded_rows(full_[p].data(), kvd_);
      full_ptr_[p] = full_[p].data();
    }
    const T* E = E_[p];
    for (int64_t b = 0; b < B; ++b) {
      const T* Kb = full_ptr_[p] + b * m * kvd_;
      T* Cb = c_[p].data() + b * k_ * ldc;
      if (G_ == 1) {
        gemm<T>(false, false, k_, kvd_, m, T(1), E, L_, Kb, kvd_, T(0), Cb, ldc);
      } else {
        for (int64_t i = 0; i < h_; ++i)
          gemm<T>(false, false, k_, dh_, m, T(1), E + i * k_ * L_, L_, Kb + head_of(i) * dh_, kvd_, T(0), Cb + i * dh_, ldc);
      }
    }
  }

  void project_then_compress_backward(int p, const T* dC) {
    const int64_t B = in_.B, m = m_, ldc = hc_ * dh_;
    const T* E = E_[p];
    T* dE = projection_grad(p);
    std::vector<T> dfull(size_t(B * m * kvd_), T(0));
    for (int64_t b = 0; b < B; ++b) {
      const T* Kb = full_ptr_[p] + b * m * kvd_;
      const T* dCb = dC + b * k_ * ldc;
      T* dKb = dfull.data() + b * m * kvd_;
      if (G_ == 1) {
        if (dE) gemm<T>(false, true, k_, m, kvd_, T(1), dCb, ldc, Kb, kvd_, T(1), dE, L_);  // dE += dK̂ Kᵀ
        gemm<T>(true, false, m, kvd_, k_, T(1), E, L_, dCb, ldc, T(1), dKb, kvd_);           // dK += Eᵀ dK̂
      } else {
        for (int64_t i = 0; i < h_; ++i) {
          const int64_t g = head_of(i);
          if (dE) gemm<T>(false, true, k_, m, dh_, T(1), dCb + i * dh_, ldc, Kb + g * dh_, kvd_, T(1), dE + i * k_ * L_, L_);
          gemm<T>(true, false, m, dh_, k_, T(1), E + i * k_ * L_, L_, dCb + i * dh_, ldc, T(1), dKb + g * dh_, kvd_);
        }
      }
    }
    if (in_.key_padding_mask) zero_padded_rows(dfull.data(), kvd_);
    linear_backward(ctxm_, arena_.value(weight_id(p)), dfull.data(), dctx_, arena_.grad(weight_id(p)),
                    grad_or_null(bias_id(p)), B * m, d_, kvd_, /*accumulate_dx=*/true);
  }

  // K̂ = (E c) W_kᵀ + (E 1_unpadded) b_kᵀ. xe_[p]: (B, G, k, d); rowsum_[p]: (B, G, k).
  void compress_then_project(int p) {
    const int64_t B = in_.B, m = m_, ldc = hc_ * dh_;
    const T* E = E_[p];
    const bool reuse = p == 1 && e_is_f_;  // F = E: E c is already there
    if (!reuse) {
      xe_[p].resize(size_t(B * G_ * k_ * d_));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t g = 0; g < G_; ++g)
          gemm<T>(false, false, k_, d_, m, T(1), E + g * k_ * L_, L_, ctxm_ + b * m * d_, d_, T(0),
                  xe_[p].data() + (b * G_ + g) * k_ * d_, d_);
      if (has_bias()) {
        rowsum_[p].assign(size_t(B * G_ * k_), T(0));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t g = 0; g < G_; ++g)
            for (int64_t j = 0; j < k_; ++j) {
              T s = 0;
              for (int64_t t = 0; t < m; ++t)
                if (!padded(b, t)) s += E[(g * k_ + j) * L_ + t];
              rowsum_[p][size_t((b * G_ + g) * k_ + j)] = s;
            }
      }
    }
    xe_ptr_[p] = reuse ? xe_[0].data() : xe_[p].data();
    rowsum_ptr_[p] = reuse ? rowsum_[0].data() : rowsum_[p].data();
    const T* W = arena_.value(weight_id(p));
    const T* bias = value_or_null(bias_id(p));
    for (int64_t b = 0; b < B; ++b) {
      T* Cb = c_[p].data() + b * k_ * ldc;
      for (int64_t i = 0; i < (G_ == 1 ? 1 : h_); ++i) {
        // G = 1: all kv heads at once (k × kvd); G = h: head i reads its own E_i c and W rows of head_of(i).
        const int64_t g = G_ == 1 ? 0 : i, width = G_ == 1 ? kvd_ : dh_, wrow = G_ == 1 ? 0 : head_of(i) * dh_;
        T* C = Cb + (G_ == 1 ? 0 : i * dh_);
        gemm<T>(false, true, k_, width, d_, T(1), xe_ptr_[p] + (b * G_ + g) * k_ * d_, d_, W + wrow * d_, d_, T(0), C, ldc);
        if (bias) {
          const T* r = rowsum_ptr_[p] + (b * G_ + g) * k_;
          for (int64_t j = 0; j < k_; ++j)
            for (int64_t c = 0; c < width; ++c) C[j * ldc + c] += r[j] * bias[wrow + c];
        }
      }
    }
  }

  void compress_then_project_backward(int p, const T* dC) {
    const int64_t B = in_.B, m = m_, ldc = hc_ * dh_;
    const T* E = E_[p];
    T* dE = projection_grad(p);
    const T* W = arena_.value(weight_id(p));
    T* dW = arena_.grad(weight_id(p));
    const T* bias = value_or_null(bias_id(p));
    T* dbias = grad_or_null(bias_id(p));
    std::vector<T> dxe(size_t(k_ * d_));
    std::vector<T> dr(static_cast<size_t>(k_));
    for (int64_t b = 0; b < B; ++b) {
      const T* dCb = dC + b * k_ * ldc;
      for (int64_t i = 0; i < (G_ == 1 ? 1 : h_); ++i) {
        const int64_t g = G_ == 1 ? 0 : i, width = G_ == 1 ? kvd_ : dh_, wrow = G_ == 1 ? 0 : head_of(i) * dh_;
        const T* dCi = dCb + (G_ == 1 ? 0 : i * dh_);
        const T* xe = xe_ptr_[p] + (b * G_ + g) * k_ * d_;
        const T* Eg = E + g * k_ * L_;
        gemm<T>(false, false, k_, d_, width, T(1), dCi, ldc, W + wrow * d_, d_, T(0), dxe.data(), d_);  // dXe = dK̂ W
        gemm<T>(true, false, width, d_, k_, T(1), dCi, ldc, xe, d_, T(1), dW + wrow * d_, d_);           // dW += dK̂ᵀ Xe
        if (bias) {
          const T* r = rowsum_ptr_[p] + (b * G_ + g) * k_;
          for (int64_t j = 0; j < k_; ++j) {
            T s = 0;
            for (int64_t c = 0; c < width; ++c) {
              dbias[wrow + c] += dCi[j * ldc + c] * r[j];
              s += dCi[j * ldc + c] * bias[wrow + c];
            }
            dr[size_t(j)] = s;
          }
        }
        if (dE) {
          T* dEg = dE + g * k_ * L_;
          gemm<T>(false, true, k_, m, d_, T(1), dxe.data(), d_, ctxm_ + b * m * d_, d_, T(1), dEg, L_);  // dE += dXe cᵀ
          if (bias)
            for (int64_t j = 0; j < k_; ++j)
              for (int64_t t = 0; t < m; ++t)
                if (!padded(b, t)) dEg[j * L_ + t] += dr[size_t(j)];
        }
        gemm<T>(true, false, m, d_, k_, T(1), Eg, L_, dxe.data(), d_, T(1), dctx_ + b * m * d_, d_);  // dc += Eᵀ dXe
      }
    }
  }

  // --- small helpers -----------------------------------------------------------------------------
  void release_activations() {
    release_buffers(xm_, q_, o_buf_, c_[0], c_[1], full_[0], full_[1], xe_[0], xe_[1], rowsum_[0], rowsum_[1]);
    kept_ = false;
  }
  bool has_bias() const { return bk_ >= 0; }
  bool padded(int64_t b, int64_t t) const { return in_.key_padding_mask && in_.key_padding_mask[b * m_ + t]; }
  void zero_padded_rows(T* rows, int64_t width) const {
    for (int64_t b = 0; b < in_.B; ++b)
      for (int64_t t = 0; t < m_; ++t)
        if (padded(b, t)) std::fill_n(rows + (b * m_ + t) * width, width, T(0));
  }
  const T* value_or_null(int id) const { return id < 0 ? nullptr : arena_.value(id); }
  T* grad_or_null(int id) { return id < 0 ? nullptr : arena_.grad(id); }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  LinformerOptions o_;
  int64_t d_ = 0, h_ = 0, dh_ = 0, L_ = 0, k_ = 0, hk_ = 0, kvd_ = 0, G_ = 1, hc_ = 0;
  bool e_is_f_ = false, kv_identical_ = false;
  int wq_ = -1, wk_ = -1, wv_ = -1, wo_ = -1, bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;
  int proj_[2] = {-1, -1};  // E and F parameters (or conv kernels); -1 for mean pooling

  // Kept from the last forward for the backward (the caller keeps in_.x / in_.context alive).
  AttentionInput<T> in_;
  int64_t m_ = 0;
  bool compress_first_ = false;
  const T* ctxm_ = nullptr;  // key/value source with padded rows zeroed
  std::vector<T> xm_;
  const T* E_[2] = {nullptr, nullptr};
  std::vector<T> ebuf_[2], dE_[2];
  bool kept_ = false;
  std::vector<T> q_, c_[2], full_[2], xe_[2], rowsum_[2], o_buf_;
  // Backward work buffers, kept between calls.
  std::vector<T> grad_o_, dc_[2], scratch_;
  T* dctx_ = nullptr;  // gradient of the key/value source: grad_o_'s storage during the backward
  const T* full_ptr_[2] = {nullptr, nullptr};
  const T* xe_ptr_[2] = {nullptr, nullptr};
  const T* rowsum_ptr_[2] = {nullptr, nullptr};
  SdpaShape shape_;
};

}  // namespace

void register_linformer_attention(AttentionRegistry& registry) {
  AttentionFactory f;
  f.info = linformer_info();
  f.validate = [](const AttentionDims& dims, const json& options) {
    json resolved;
    parse_linformer(dims, options, &resolved);
    return resolved;
  };
  f.make_f32 = [](const AttentionSpec& s, ParamArena<float>& a) {
    return std::make_unique<LinformerAttention<float>>(s, a);
  };
  f.make_f64 = [](const AttentionSpec& s, ParamArena<double>& a) {
    return std::make_unique<LinformerAttention<double>>(s, a);
  };
  registry.add(std::move(f));
}

}  // namespace lf
