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
// Time O(B·n·d) besides the four d×d maps, memory O(B·n·d); never n×n. Parallel over (sample, block
// of 16 channels), each task owning its channels: results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/attention.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr int64_t kChannelBlock = 16;  // channels per task: one cache line of floats per row

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
    o_.resize(size_t(B * n * d));
    if (kept_) {  // per (sample, channel), or per (sample, position, channel) when causal
      const size_t stats = size_t((dims_.causal ? B * n : B) * d);
      r_.resize(stats);
      m_.resize(stats);
      s_.resize(stats);
    }
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t task = 0; task < B * blocks(); ++task) {
      const int64_t b = task / blocks(), c0 = (task % blocks()) * kChannelBlock;
      const int64_t w = std::min(kChannelBlock, d - c0);
      if (dims_.causal)
        causal_forward(b, c0, w);
      else
        global_forward(b, c0, w);
    }
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, o_, r_, m_, s_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "aft_simple");
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model;
    std::vector<T> d_o(size_t(B * n * d));
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    release_buffers(o_);
    std::vector<T> dq(size_t(B * n * d)), dk(size_t(B * n * d)), dv(size_t(B * n * d));
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t task = 0; task < B * blocks(); ++task) {
      const int64_t b = task / blocks(), c0 = (task % blocks()) * kChannelBlock;
      const int64_t w = std::min(kChannelBlock, d - c0);
      if (dims_.causal)
        causal_backward(b, c0, w, d_o.data(), dq.data(), dk.data(), dv.data());
      else
        global_backward(b, c0, w, d_o.data(), dq.data(), dk.data(), dv.data());
    }
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "aft_simple");
    release_buffers(q_, k_, v_, r_, m_, s_);  // one backward per forward, as in PyTorch
    kept_ = false;
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
  int64_t blocks() const { return (dims_.d_model + kChannelBlock - 1) / kChannelBlock; }
  bool visible(int64_t b, int64_t t) const {
    return !in_.key_padding_mask || !in_.key_padding_mask[b * in_.n + t];
  }

  // Non-causal forward of channels c0..c0+w of sample b: per channel the maximum m over the visible
  // keys, s = Σ exp(K − m), r = Σ exp(K − m) V / s; then o_t = σ(Q_t) r for every row.
  void global_forward(int64_t b, int64_t c0, int64_t w) {
    const int64_t n = in_.n, d = dims_.d_model;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T mx[kChannelBlock], sum[kChannelBlock], num[kChannelBlock], r[kChannelBlock];
    std::fill_n(mx, w, neg_inf);
    std::fill_n(sum, w, T(0));
    std::fill_n(num, w, T(0));
    for (int64_t t = 0; t < n; ++t) {
      if (!visible(b, t)) continue;
      const T* k = k_.data() + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) mx[c] = std::max(mx[c], k[c]);
    }
    for (int64_t t = 0; t < n; ++t) {
      if (!visible(b, t)) continue;
      const T* k = k_.data() + (b * n + t) * d + c0;
      const T* v = v_.data() + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) {
        const T e = exp_fast<T>(k[c] - mx[c]);
        sum[c] += e;
        num[c] += e * v[c];
      }
    }
    for (int64_t c = 0; c < w; ++c) r[c] = sum[c] > T(0) ? num[c] / sum[c] : T(0);  // no visible key: 0
    if (kept_) {
      std::copy_n(r, w, r_.data() + b * d + c0);
      std::copy_n(mx, w, m_.data() + b * d + c0);
      std::copy_n(sum, w, s_.data() + b * d + c0);
    }
    for (int64_t t = 0; t < n; ++t) {
      T* q = q_.data() + (b * n + t) * d + c0;
      T* o = o_.data() + (b * n + t) * d + c0;
      for (int64_t c = 0; c < w; ++c) {
        const T sg = sigmoid(q[c]);
        o[c] = sg * r[c];
        q[c] = sg;  // the backward needs σ(Q) only
      }
    }
  }

  // Causal forward: the online softmax down the rows, m_t = max over visible keys ≤ t, s_t and the
  // numerator rescaled by exp(m_{t−1} − m_t) when the maximum grows.
  void causal_forward(int64_t b, int64_t c0, int64_t w) {
    const int64_t n = in_.n, d = dims_.d_model;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T mx[kChannelBlock], sum[kChannelBlock], num[kChannelBlock];
    std::fill_n(mx, w, neg_inf);
    std::fill_n(sum, w, T(0));
    std::fill_n(num, w, T(0));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      if (visible(b, t)) {
        const T* k = k_.data() + row;
        const T* v = v_.data() + row;
        for (int64_t c = 0; c < w; ++c) {
          const T mn = std::max(mx[c], k[c]);
          const T scale = exp_fast<T>(mx[c] - mn);  // 0 before the first visible key (mx = −inf)
          const T e = exp_fast<T>(k[c] - mn);
          sum[c] = sum[c] * scale + e;
          num[c] = num[c] * scale + e * v[c];
          mx[c] = mn;
        }
      }
      T* q = q_.data() + row;
      T* o = o_.data() + row;
      for (int64_t c = 0; c < w; ++c) {
        const T r = sum[c] > T(0) ? num[c] / sum[c] : T(0);
        const T sg = sigmoid(q[c]);
        o[c] = sg * r;
        if (kept_) {
          q[c] = sg;
          r_[size_t(row + c)] = r;
          m_[size_t(row + c)] = mx[c];
          s_[size_t(row + c)] = sum[c];
        }
      }
    }
  }

  // Non-causal backward. With g_t = dO_t σ(Q_t) and G = Σ_t g_t (every query shares r):
  // dQ_t = dO_t r σ'(Q_t), and for a visible key p_t' = exp(K_t' − m)/s, dV_t' = p_t' G,
  // dK_t' = p_t' G (V_t' − r). Padded keys: exactly 0.
  void global_backward(int64_t b, int64_t c0, int64_t w, const T* d_o, T* dq, T* dk, T* dv) const {
    const int64_t n = in_.n, d = dims_.d_model;
    T G[kChannelBlock];
    std::fill_n(G, w, T(0));
    const T* r = r_.data() + b * d + c0;
    const T* mx = m_.data() + b * d + c0;
    const T* sum = s_.data() + b * d + c0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      const T* sg = q_.data() + row;
      const T* go = d_o + row;
      T* gq = dq + row;
      for (int64_t c = 0; c < w; ++c) {
        G[c] += go[c] * sg[c];
        gq[c] = go[c] * r[c] * sg[c] * (T(1) - sg[c]);
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = (b * n + t) * d + c0;
      key_grads(b, t, row, w, mx, sum, [&](int64_t c, T p, T v) {
        const T pg = p * G[c];
        dv[row + c] = pg;
        dk[row + c] = pg * (v - r[c]);
      }, dk, dv);
    }
  }

  // Causal backward. With L_t = m_t + log s_t (log of the denominator of row t) and p_{t,t'} =
  // exp(K_t' − L_t) for t' ≤ t: dV_t' = Σ_{t≥t'} p_{t,t'} g_t = exp(K_t' − L_t') H_t' and
  // dK_t' = Σ_{t≥t'} p_{t,t'} g_t (V_t' − r_t) = exp(K_t' − L_t') (V_t' H_t' − J_t'), where
  // H_t' = Σ_{t≥t'} g_t exp(L_t' − L_t) and J_t' likewise with g_t r_t, by the suffix recurrences
  // H_t = g_t + exp(L_t − L_{t+1}) H_{t+1}. L grows with t: every factor is ≤ 1, nothing overflows.
  void causal_backward(int64_t b, int64_t c0, int64_t w, const T* d_o, T* dq, T* dk, T* dv) const {
    const int64_t n = in_.n, d = dims_.d_model;
    T H[kChannelBlock], J[kChannelBlock];
    std::fill_n(H, w, T(0));
    std::fill_n(J, w, T(0));
    for (int64_t t = n - 1; t >= 0; --t) {
      const int64_t row = (b * n + t) * d + c0;
      const T* sg = q_.data() + row;
      const T* go = d_o + row;
      const T* r = r_.data() + row;
      const T* mx = m_.data() + row;
      const T* sum = s_.data() + row;
      T* gq = dq + row;
      if (t + 1 < n) {  // carry the suffix sums from row t + 1: × exp(L_t − L_{t+1})
        const T* mx1 = m_.data() + row + d;
        const T* sum1 = s_.data() + row + d;
        for (int64_t c = 0; c < w; ++c) {
          // No visible key up to t (s_t = 0): row t's suffix is never read again.
          const T f = sum[c] > T(0) ? exp_fast<T>(mx[c] - mx1[c]) * sum[c] / sum1[c] : T(0);
          H[c] *= f;
          J[c] *= f;
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        const T g = go[c] * sg[c];
        gq[c] = go[c] * r[c] * sg[c] * (T(1) - sg[c]);
        H[c] += g;
        J[c] += g * r[c];
      }
      key_grads(b, t, row, w, mx, sum, [&](int64_t c, T p, T v) {
        dv[row + c] = p * H[c];
        dk[row + c] = p * (v * H[c] - J[c]);
      }, dk, dv);
    }
  }

  // Row t's dK, dV (w channels at `row`): zeros at a hidden key; else grad(c, p, V_tc) writes them from
  // the key's weight p = exp(K_tc − m_c) / s_c (m, s: the shift and denominator of its softmax).
  template <class Grad>
  void key_grads(int64_t b, int64_t t, int64_t row, int64_t w, const T* mx, const T* sum, Grad grad, T* dk,
                 T* dv) const {
    if (!visible(b, t)) {
      std::fill_n(dk + row, w, T(0));
      std::fill_n(dv + row, w, T(0));
      return;
    }
    const T* k = k_.data() + row;
    const T* v = v_.data() + row;
    for (int64_t c = 0; c < w; ++c) grad(c, exp_fast<T>(k[c] - mx[c]) / sum[c], v[c]);
  }

  AttentionDims dims_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  std::vector<T> q_, k_, v_, o_;  // (B, n, d); q_ holds σ(Q) after the forward
  std::vector<T> r_, m_, s_;      // the softmax means, maxima and sums: (B, n, d) causal, (B, d) not
};

}  // namespace

void register_aft_simple_attention(AttentionRegistry& registry) {
  register_kind<AftSimpleAttention>(registry, aft_simple_info(), qkv_bias_parser("aft_simple"));
}

}  // namespace lf
