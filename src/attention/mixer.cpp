// `mixer`: MLP token mixing over positions (MLP-Mixer, Tolstikhin et al. 2021), the attention-free
// baseline: a learned mixing across the sequence instead of attention. The d channels form G = h
// groups of d_h = d/h; X_g (n × d_h) is group g's slice of x, padded rows selected to 0.
//   hidden = 0:  Y_g = W_g X_g + b_g 1ᵀ              W_g (max_len × max_len), top-left n×n used;
//                causal: W_g masked to its lower triangle (position t mixes positions ≤ t)
//   hidden = H:  Y_g = W2_g dropout(GELU(W1_g X_g + b1_g 1ᵀ)) + b2_g 1ᵀ   (non-causal only)
//                W1_g (H × max_len) first n columns used, W2_g (max_len × H) first n rows used
//   out = Y, or Y W_oᵀ + b_o with `out_proj` (MLP-Mixer has no output map).
// Per group the mixing is one GEMM over every sample at once: X_g is packed as n × (B·d_h). Causal:
// row blocks of 256, each mixing the columns before it with one GEMM and its own columns with a
// masked copy of the diagonal block; the rows are padded (with zeros) to whole blocks so that every
// product's shape depends on the block and max_len only, never on n: a shorter causal sequence then
// gives bit for bit the same prefix.
// Time O(B·n²·d) (hidden 0; causal about half) or O(B·n·H·d); activations O(B·n·d) (+ O(B·H·d) for
// the MLP); parameters O(h·max_len²) or O(h·max_len·H).
#include <algorithm>
#include <cmath>

#include "attention/kind_rules.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/norm_act.h"
#include "ops/token_mixing.h"

namespace lf {
namespace {

struct MixerOptions {
  int64_t hidden = 0;     // 0: one linear mixing per group; H > 0: the token-mixing MLP of width H
  bool out_proj = false;  // an output map d → d after the mixing
};

MixerOptions parse_mixer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("mixer", options);
  MixerOptions o;
  o.hidden = r.get_int("hidden", 0);
  LF_REQUIRE(o.hidden >= 0, r.where("hidden"), " must be 0 (a linear mixing) or a positive MLP width, got ", o.hidden);
  LF_REQUIRE(!(dims.causal && o.hidden > 0), r.where("hidden"), " = ", o.hidden,
             ": the token-mixing MLP mixes every position into every other and has no causal form; use hidden = 0 "
             "(a lower-triangular linear mixing) for a causal model");
  o.out_proj = r.get_bool("out_proj", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& mixer_info() {
  static const AttentionKindInfo info{
      "mixer", "MLP-Mixer token mixing: a learned max_len×max_len mixing over positions per channel group, O(n²·d)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false},
      // Its default parameters are h learned max_len × max_len mixings (2 GiB at n = 16384): the
      // benchmarks stop at 4096.
      /*quadratic_memory=*/true, /*bench_options=*/json::object(), /*bench_max_len=*/4096};
  return info;
}

// Row blocks of the causal (lower-triangular) mixing: the rows of block i mix the columns before the
// block with a plain GEMM and the block's own columns with a masked copy of the diagonal block.
constexpr int64_t kCausalBlock = 256;

template <class T>
class MixerAttention final : public Attention<T> {
 public:
  MixerAttention(const AttentionSpec& spec, const MixerOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims), opt_(options), arena_(arena) {
    const int64_t G = dims_.n_heads, L = dims_.max_len, H = opt_.hidden, d = dims_.d_model;
    const Init by_len = Init::uniform(1.0 / std::sqrt(double(L)));  // nn.Linear's bound, fan_in = max_len
    if (H == 0) {
      w_ = arena.declare(spec.prefix + "mix.weight", {G, L, L}, by_len);
      b_ = arena.declare(spec.prefix + "mix.bias", {G, L}, by_len);
    } else {
      const Init by_hidden = Init::uniform(1.0 / std::sqrt(double(H)));
      w1_ = arena.declare(spec.prefix + "mix1.weight", {G, H, L}, by_len);
      b1_ = arena.declare(spec.prefix + "mix1.bias", {G, H}, by_len);
      w2_ = arena.declare(spec.prefix + "mix2.weight", {G, L, H}, by_hidden);
      b2_ = arena.declare(spec.prefix + "mix2.bias", {G, L}, by_hidden);
    }
    if (opt_.out_proj) {
      const Init by_d = Init::uniform(1.0 / std::sqrt(double(d)));
      wo_ = arena.declare(spec.prefix + "to_out.weight", {d, d}, by_d);
      bo_ = arena.declare(spec.prefix + "to_out.bias", {d}, by_d);
    }
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, mixer_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    dropout_ = training && opt_.hidden > 0 ? dims_.dropout : 0.0;
    seed_ = seed;
    const int64_t B = in.B, n = in.n, d = dims_.d_model, G = dims_.n_heads, L = dims_.max_len, H = opt_.hidden;
    const int64_t N = B * (d / G);  // columns of a group's packed matrices
    np_ = packed_rows(n);
    const int64_t np = np_;

    xp_.resize(G * np * N);
    ops::token_mixing_pack<T>(activation(in.x), mask_view(in.key_padding_mask), packed(xp_.data(), np));
    Buffer<T> yp(G * np * N);
    if (H == 0) {
      // Y_g = b_g 1ᵀ, then += W_g X_g.
      ops::broadcast_rows<T>(matrix(arena_.value(b_), G, np, L), packed(yp.data(), np));
      mix_forward(arena_.value(w_), xp_.data(), yp.data());
    } else {
      // (Non-causal: n_p = n.) Hidden (G, H, N): pre-activation kept in hp_, GELU then dropout in ap_.
      hp_.resize(G * H * N);
      ops::broadcast_rows<T>(matrix(arena_.value(b1_), G, H, H), packed(hp_.data(), H));
      ops::matmul<T>(w1(arena_.value(w1_)), packed(xp_.data(), n), packed(hp_.data(), H), 1, 1);
      Buffer<T>& a = kept_ ? ap_ : hp_;  // inference: in place
      a.resize(hp_.size());
      ops::gelu_forward<T>(packed(hp_.data(), H), packed(a.data(), H));
      ops::dropout_forward<T>(packed(a.data(), H), packed(a.data(), H), dropout_, seed_, kProbsDropoutStream);
      ops::broadcast_rows<T>(matrix(arena_.value(b2_), G, n, L), packed(yp.data(), n));
      ops::matmul<T>(w2(arena_.value(w2_)), packed(a.data(), H), packed(yp.data(), n), 1, 1);
    }
    if (opt_.out_proj) {
      o_.resize(B * n * d);
      ops::token_mixing_unpack<T>(packed(yp.data(), np), activation(o_.data()));
      release_buffers(yp);
      ops::linear_forward<T>(activation(o_.data()), matrix(arena_.value(wo_), d, d), vector_view(arena_.value(bo_), d),
                             activation(out));
    } else {
      ops::token_mixing_unpack<T>(packed(yp.data(), np), activation(out));
    }
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "mixer");
    (void)dcontext;  // no cross-attention
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, G = dims_.n_heads, L = dims_.max_len, H = opt_.hidden;
    const int64_t N = B * (d / G), np = np_;

    Buffer<T> dyp(G * np * N);
    if (opt_.out_proj) {
      Buffer<T> d_o(B * n * d);
      ops::linear_backward<T>(activation(o_.data()), matrix(arena_.value(wo_), d, d), activation(dout),
                              activation(d_o.data()), matrix(arena_.grad(wo_), d, d), vector_view(arena_.grad(bo_), d));
      release_buffers(o_);
      ops::token_mixing_pack<T>(activation(d_o.data()), {}, packed(dyp.data(), np));
    } else {
      ops::token_mixing_pack<T>(activation(dout), {}, packed(dyp.data(), np));
    }
    Buffer<T> dxp(G * np * N);
    if (H == 0) {
      ops::add_row_sums<T>(packed(dyp.data(), np), matrix(arena_.grad(b_), G, np, L));
      mix_backward(arena_.value(w_), arena_.grad(w_), xp_.data(), dyp.data(), dxp.data());
    } else {
      ops::add_row_sums<T>(packed(dyp.data(), n), matrix(arena_.grad(b2_), G, n, L));
      // dW2_g[0:n] += dY_g Aᵀ;  dA_g = W2_g[0:n]ᵀ dY_g, back through dropout and GELU.
      ops::matmul<T>(packed(dyp.data(), n), packed(ap_.data(), H).t(), w2(arena_.grad(w2_)), 1, 1);
      release_buffers(ap_);
      Buffer<T> dh(G * H * N);
      ops::matmul<T>(w2(arena_.value(w2_)).t(), packed(dyp.data(), n), packed(dh.data(), H));
      ops::dropout_backward<T>(packed(dh.data(), H), packed(dh.data(), H), dropout_, seed_, kProbsDropoutStream);
      ops::gelu_backward<T>(packed(hp_.data(), H), packed(dh.data(), H), packed(dh.data(), H));
      ops::add_row_sums<T>(packed(dh.data(), H), matrix(arena_.grad(b1_), G, H, H));
      // dW1_g[:, 0:n] += dH_g X_gᵀ;  dX_g = W1_g[:, 0:n]ᵀ dH_g.
      ops::matmul<T>(packed(dh.data(), H), packed(xp_.data(), n).t(), w1(arena_.grad(w1_)), 1, 1);
      ops::matmul<T>(w1(arena_.value(w1_)).t(), packed(dh.data(), H), packed(dxp.data(), n));
    }
    release_buffers(dyp);
    ops::token_mixing_unpack<T>(packed(dxp.data(), np), activation(dx));
    ops::zero_masked_rows<T>(mask_view(in_.key_padding_mask), activation(dx));  // the gradient of pack's select
    release();  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model);
    const double out = opt_.out_proj ? 2.0 * B * n * d * d : 0.0;
    if (opt_.hidden > 0) return 2.0 * 2.0 * B * double(n) * double(opt_.hidden) * d + out;
    return 2.0 * B * d * mixed_pairs(n) + out;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const double d = double(dims_.d_model), nd = double(B) * n * d, pd = double(B) * packed_rows(n) * d;
    const double hd = double(B) * opt_.hidden * d, o = opt_.out_proj ? nd : 0.0;
    const double scratch = dims_.causal ? double(kCausalBlock) * kCausalBlock : 0.0;
    // Forward: X and Y packed, the hidden layer (training: and its activations), o for the output map.
    if (!training) return sizeof(T) * (2.0 * pd + hd + o + scratch);
    const double fwd = 2.0 * pd + 2.0 * hd + o;
    // Backward: X packed, o, the hidden layer and its activations, dO, dY and dX packed, dH.
    const double bwd = pd + 2.0 * hd + 2.0 * o + 2.0 * pd + hd;
    return sizeof(T) * (std::max(fwd, bwd) + scratch);
  }

 private:
  // Rows of the packed buffers: n, or (causal) n rounded up to whole row blocks, at most max_len.
  int64_t packed_rows(int64_t n) const {
    if (!dims_.causal) return n;
    return std::min((n + kCausalBlock - 1) / kCausalBlock * kCausalBlock, dims_.max_len);
  }

  // The (t, s) pairs multiplied: n², or (causal) per row block its rows times the columns up to its end.
  double mixed_pairs(int64_t n) const {
    if (!dims_.causal) return double(n) * double(n);
    const int64_t np = packed_rows(n);
    double pairs = 0;
    for (int64_t i0 = 0; i0 < np; i0 += kCausalBlock) {
      const int64_t rows = std::min(kCausalBlock, np - i0);
      pairs += double(rows) * double(i0 + rows);
    }
    return pairs;
  }

  // Views of this call's buffers: an activation (B, n, d), the packed layout (G, rows, B·d_h) of
  // ops/token_mixing.h, the mask (B·n), and the used parts of the MLP's weights, W1 (G, H, n) and
  // W2 (G, n, H).
  template <class U>
  TensorView<U> activation(U* x) const {
    return TensorView<U>(x, {in_.B, in_.n, dims_.d_model});
  }
  template <class U>
  TensorView<U> packed(U* x, int64_t rows) const {
    return TensorView<U>(x, {dims_.n_heads, rows, in_.B * (dims_.d_model / dims_.n_heads)});
  }
  TensorView<const uint8_t> mask_view(const uint8_t* mask) const { return TensorView<const uint8_t>(mask, {in_.B * in_.n}); }
  template <class U>
  TensorView<U> w1(U* w) const {
    const int64_t H = opt_.hidden, L = dims_.max_len;
    return matrices(w, dims_.n_heads, H * L, H, in_.n, L);
  }
  template <class U>
  TensorView<U> w2(U* w) const {
    const int64_t H = opt_.hidden, L = dims_.max_len;
    return matrices(w, dims_.n_heads, L * H, in_.n, H, H);
  }
  // The (G, rows, rows) top-left blocks of the mixings W (G, L, L).
  template <class U>
  TensorView<U> mixing(U* w, int64_t rows) const {
    const int64_t L = dims_.max_len;
    return matrices(w, dims_.n_heads, L * L, rows, rows, L);
  }

  // Yp_g += W_g[0:n, 0:n] Xp_g for every group (causal: W_g's lower triangle, over the n_p padded
  // rows). W (G, L, L); xp, yp (G, n_p, N).
  void mix_forward(const T* W, const T* xp, T* yp) const {
    const int64_t G = dims_.n_heads, L = dims_.max_len, N = in_.B * (dims_.d_model / G), np = np_;
    if (!dims_.causal) {
      ops::matmul<T>(mixing(W, np), packed(xp, np), packed(yp, np), 1, 1);
      return;
    }
    Buffer<T> diag(kCausalBlock * kCausalBlock);
    for (int64_t g = 0; g < G; ++g) {
      const T* Wg = W + g * L * L;
      const T* X = xp + g * np * N;
      T* Y = yp + g * np * N;
      for (int64_t i0 = 0; i0 < np; i0 += kCausalBlock) {
        const int64_t bs = std::min(kCausalBlock, np - i0);  // = min(256, L − i0): independent of n
        // The columns before the block: Y[i0:i0+bs] += W[i0:i0+bs, 0:i0] X[0:i0].
        if (i0 > 0) ops::matmul<T>(matrix(Wg + i0 * L, bs, i0, L), matrix(X, i0, N), matrix(Y + i0 * N, bs, N), 1, 1);
        // The block's own columns: W[i0 + r, i0 + c] for c ≤ r, selected (not multiplied) from W.
        ops::lower_triangle<T>(matrix(Wg + i0 * L + i0, bs, bs, L), matrix(diag.data(), bs, bs));
        ops::matmul<T>(matrix(diag.data(), bs, bs), matrix(X + i0 * N, bs, N), matrix(Y + i0 * N, bs, N), 1, 1);
      }
    }
  }

  // dW_g[0:n, 0:n] += dY_g X_gᵀ (causal: the lower triangle only), dX_g = W_gᵀ dY_g (overwritten).
  void mix_backward(const T* W, T* dW, const T* xp, const T* dyp, T* dxp) const {
    const int64_t G = dims_.n_heads, L = dims_.max_len, N = in_.B * (dims_.d_model / G), np = np_;
    if (!dims_.causal) {
      ops::matmul<T>(packed(dyp, np), packed(xp, np).t(), mixing(dW, np), 1, 1);
      ops::matmul<T>(mixing(W, np).t(), packed(dyp, np), packed(dxp, np));
      return;
    }
    Buffer<T> diag(kCausalBlock * kCausalBlock);
    for (int64_t g = 0; g < G; ++g) {
      const T* Wg = W + g * L * L;
      T* dWg = dW + g * L * L;
      const T* X = xp + g * np * N;
      const T* dY = dyp + g * np * N;
      T* dX = dxp + g * np * N;
      for (int64_t i0 = 0; i0 < np; i0 += kCausalBlock) {
        const int64_t bs = std::min(kCausalBlock, np - i0), i1 = i0 + bs;
        // dW: the block's rows against the columns before it, then its diagonal block's lower triangle.
        const auto dY_block = matrix(dY + i0 * N, bs, N), dX_block = matrix(dX + i0 * N, bs, N);
        const auto diag_block = matrix(diag.data(), bs, bs);
        if (i0 > 0) ops::matmul<T>(dY_block, matrix(X, i0, N).t(), matrix(dWg + i0 * L, bs, i0, L), 1, 1);
        ops::matmul<T>(dY_block, matrix(X + i0 * N, bs, N).t(), diag_block);
        ops::add_lower_triangle<T>(diag_block, matrix(dWg + i0 * L + i0, bs, bs, L));
        // dX[i0:i1] = W[i0:i1, i0:i1]ᵀ (lower) dY[i0:i1] + W[i1:n_p, i0:i1]ᵀ dY[i1:n_p].
        ops::lower_triangle<T>(matrix(Wg + i0 * L + i0, bs, bs, L), diag_block);
        ops::matmul<T>(diag_block.t(), dY_block, dX_block);
        if (i1 < np)
          ops::matmul<T>(matrix(Wg + i1 * L + i0, np - i1, bs, L).t(), matrix(dY + i1 * N, np - i1, N), dX_block, 1, 1);
      }
    }
  }

  void release() { release_buffers(xp_, hp_, ap_, o_); }

  AttentionDims dims_;
  MixerOptions opt_;
  ParamArena<T>& arena_;
  int w_ = -1, b_ = -1, w1_ = -1, b1_ = -1, w2_ = -1, b2_ = -1, wo_ = -1, bo_ = -1;

  // Kept from the last forward for the backward.
  AttentionInput<T> in_;
  bool kept_ = false;
  double dropout_ = 0;
  uint64_t seed_ = 0;
  int64_t np_ = 0;          // rows of the packed buffers (n, or causal n rounded up to whole blocks)
  Buffer<T> xp_;       // (G, n_p, B·d_h): the input, packed, padded rows 0
  Buffer<T> hp_, ap_;  // (G, H, B·d_h): the MLP's pre-activation and its activation after dropout
  Buffer<T> o_;        // (B, n, d): the mixing's output, the input of to_out
};

}  // namespace

void register_mixer_attention(AttentionRegistry& registry) {
  register_kind<MixerAttention>(registry, mixer_info(), parse_mixer);
  set_attention_kind_rules("mixer", {"causal only with hidden = 0 (the token-mixing MLP has no causal form)"});
}

}  // namespace lf
