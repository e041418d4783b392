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
#include <vector>

#include "linformer/attention.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "linformer/error.h"
#include "cpu/dropout.h"
#include "cpu/gelu.h"
#include "cpu/gemm.h"
#include "cpu/linear.h"

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

    xp_.resize(size_t(G * np * N));
    pack(in.x, in.key_padding_mask, xp_.data());
    std::vector<T> yp(static_cast<size_t>(G * np * N));
    if (H == 0) {
      fill_rows(arena_.value(b_), L, np, N, yp.data());  // Y_g = b_g 1ᵀ, then += W_g X_g
      mix_forward(arena_.value(w_), xp_.data(), yp.data());
    } else {
      // (Non-causal: n_p = n.) Hidden (G, H, N): pre-activation kept in hp_, GELU then dropout in ap_.
      hp_.resize(size_t(G * H * N));
      fill_rows(arena_.value(b1_), H, H, N, hp_.data());
      gemm_batched<T>(false, false, H, N, n, T(1), arena_.value(w1_), L, H * L, xp_.data(), N, n * N, T(1), hp_.data(),
                      N, H * N, G);
      std::vector<T>& a = kept_ ? ap_ : hp_;  // inference: in place
      a.resize(hp_.size());
      gelu_forward(hp_.data(), a.data(), G * H * N);
      dropout_forward(a.data(), a.data(), G * H * N, dropout_, seed_, kProbsDropoutStream);
      fill_rows(arena_.value(b2_), L, n, N, yp.data());
      gemm_batched<T>(false, false, n, N, H, T(1), arena_.value(w2_), H, L * H, a.data(), N, H * N, T(1), yp.data(), N,
                      n * N, G);
    }
    if (opt_.out_proj) {
      o_.resize(size_t(B * n * d));
      unpack(yp.data(), o_.data());
      release_buffers(yp);
      linear_forward(o_.data(), arena_.value(wo_), arena_.value(bo_), out, B * n, d, d);
    } else {
      unpack(yp.data(), out);
    }
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "mixer");
    (void)dcontext;  // no cross-attention
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, G = dims_.n_heads, L = dims_.max_len, H = opt_.hidden;
    const int64_t N = B * (d / G), np = np_;

    std::vector<T> dyp(static_cast<size_t>(G * np * N));
    if (opt_.out_proj) {
      std::vector<T> d_o(static_cast<size_t>(B * n * d));
      linear_backward(o_.data(), arena_.value(wo_), dout, d_o.data(), arena_.grad(wo_), arena_.grad(bo_), B * n, d, d);
      release_buffers(o_);
      pack(d_o.data(), nullptr, dyp.data());
    } else {
      pack(dout, nullptr, dyp.data());
    }
    std::vector<T> dxp(static_cast<size_t>(G * np * N));
    if (H == 0) {
      add_row_sums(dyp.data(), G, np, N, arena_.grad(b_), L);
      mix_backward(arena_.value(w_), arena_.grad(w_), xp_.data(), dyp.data(), dxp.data());
    } else {
      add_row_sums(dyp.data(), G, n, N, arena_.grad(b2_), L);
      // dW2_g[0:n] += dY_g Aᵀ;  dA_g = W2_g[0:n]ᵀ dY_g, back through dropout and GELU.
      gemm_batched<T>(false, true, n, H, N, T(1), dyp.data(), N, n * N, ap_.data(), N, H * N, T(1), arena_.grad(w2_), H,
                      L * H, G);
      release_buffers(ap_);
      std::vector<T> dh(static_cast<size_t>(G * H * N));
      gemm_batched<T>(true, false, H, N, n, T(1), arena_.value(w2_), H, L * H, dyp.data(), N, n * N, T(0), dh.data(), N,
                      H * N, G);
      dropout_backward(dh.data(), dh.data(), G * H * N, dropout_, seed_, kProbsDropoutStream);
      gelu_backward(hp_.data(), dh.data(), dh.data(), G * H * N);
      add_row_sums(dh.data(), G, H, N, arena_.grad(b1_), H);
      // dW1_g[:, 0:n] += dH_g X_gᵀ;  dX_g = W1_g[:, 0:n]ᵀ dH_g.
      gemm_batched<T>(false, true, H, n, N, T(1), dh.data(), N, H * N, xp_.data(), N, n * N, T(1), arena_.grad(w1_), L,
                      H * L, G);
      gemm_batched<T>(true, false, n, N, H, T(1), arena_.value(w1_), L, H * L, dh.data(), N, H * N, T(0), dxp.data(), N,
                      n * N, G);
    }
    release_buffers(dyp);
    unpack(dxp.data(), dx);
    zero_rows_at_padding(dx, in_.key_padding_mask, B, n, d);  // the gradient of pack's select
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

  // dst (G, n_p, B·d_h) from src (B, n, d): dst[g][t][b·d_h + c] = src[b][t][g·d_h + c], zero at the rows
  // where mask (B, n) is nonzero (a select: NaN in the padding does not pass) and at the rows t ≥ n.
  void pack(const T* src, const uint8_t* mask, T* dst) const {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, G = dims_.n_heads, dh = d / G, N = B * dh, np = np_;
#pragma omp parallel for schedule(static) if (B * np * d > 32768)
    for (int64_t bt = 0; bt < B * np; ++bt) {
      const int64_t b = bt / np, t = bt % np;
      const bool zero = t >= n || (mask && mask[b * n + t]);
      for (int64_t g = 0; g < G; ++g) {
        T* o = dst + (g * np + t) * N + b * dh;
        if (zero) {
          std::fill(o, o + dh, T(0));
        } else {
          const T* row = src + (b * n + t) * d + g * dh;
          std::copy(row, row + dh, o);
        }
      }
    }
  }

  // The inverse of pack: dst (B, n, d) from the first n rows of src (G, n_p, B·d_h).
  void unpack(const T* src, T* dst) const {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, G = dims_.n_heads, dh = d / G, N = B * dh, np = np_;
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t bt = 0; bt < B * n; ++bt) {
      const int64_t b = bt / n, t = bt % n;
      T* row = dst + bt * d;
      for (int64_t g = 0; g < G; ++g) {
        const T* s = src + (g * np + t) * N + b * dh;
        std::copy(s, s + dh, row + g * dh);
      }
    }
  }

  // dst (G, rows, N): row r of group g filled with bias[g·ld + r] (bias (G, ld), its first `rows` used).
  void fill_rows(const T* bias, int64_t ld, int64_t rows, int64_t N, T* dst) const {
    const int64_t G = dims_.n_heads;
#pragma omp parallel for schedule(static) if (G * rows * N > 65536)
    for (int64_t gr = 0; gr < G * rows; ++gr) std::fill(dst + gr * N, dst + (gr + 1) * N, bias[(gr / rows) * ld + gr % rows]);
  }

  // dbias[g·ld + r] += Σ_j src[g][r][j] for src (G, rows, N): each row summed in order (deterministic).
  static void add_row_sums(const T* src, int64_t G, int64_t rows, int64_t N, T* dbias, int64_t ld) {
#pragma omp parallel for schedule(static) if (G * rows * N > 65536)
    for (int64_t gr = 0; gr < G * rows; ++gr) {
      const T* s = src + gr * N;
      T acc = 0;
      for (int64_t j = 0; j < N; ++j) acc += s[j];
      dbias[(gr / rows) * ld + gr % rows] += acc;
    }
  }

  // Yp_g += W_g[0:n, 0:n] Xp_g for every group (causal: W_g's lower triangle, over the n_p padded
  // rows). W (G, L, L); xp, yp (G, n_p, N).
  void mix_forward(const T* W, const T* xp, T* yp) const {
    const int64_t G = dims_.n_heads, L = dims_.max_len, N = in_.B * (dims_.d_model / G), np = np_;
    if (!dims_.causal) {
      gemm_batched<T>(false, false, np, N, np, T(1), W, L, L * L, xp, N, np * N, T(1), yp, N, np * N, G);
      return;
    }
    std::vector<T> diag(static_cast<size_t>(kCausalBlock * kCausalBlock));
    for (int64_t g = 0; g < G; ++g) {
      const T* Wg = W + g * L * L;
      const T* X = xp + g * np * N;
      T* Y = yp + g * np * N;
      for (int64_t i0 = 0; i0 < np; i0 += kCausalBlock) {
        const int64_t bs = std::min(kCausalBlock, np - i0);  // = min(256, L − i0): independent of n
        // The columns before the block: Y[i0:i0+bs] += W[i0:i0+bs, 0:i0] X[0:i0].
        if (i0 > 0) gemm<T>(false, false, bs, N, i0, T(1), Wg + i0 * L, L, X, N, T(1), Y + i0 * N, N);
        // The block's own columns: W[i0 + r, i0 + c] for c ≤ r, selected (not multiplied) from W.
        lower_triangle(Wg + i0 * L + i0, L, bs, diag.data());
        gemm<T>(false, false, bs, N, bs, T(1), diag.data(), bs, X + i0 * N, N, T(1), Y + i0 * N, N);
      }
    }
  }

  // dW_g[0:n, 0:n] += dY_g X_gᵀ (causal: the lower triangle only), dX_g = W_gᵀ dY_g (overwritten).
  void mix_backward(const T* W, T* dW, const T* xp, const T* dyp, T* dxp) const {
    const int64_t G = dims_.n_heads, L = dims_.max_len, N = in_.B * (dims_.d_model / G), np = np_;
    if (!dims_.causal) {
      gemm_batched<T>(false, true, np, np, N, T(1), dyp, N, np * N, xp, N, np * N, T(1), dW, L, L * L, G);
      gemm_batched<T>(true, false, np, N, np, T(1), W, L, L * L, dyp, N, np * N, T(0), dxp, N, np * N, G);
      return;
    }
    std::vector<T> diag(static_cast<size_t>(kCausalBlock * kCausalBlock));
    for (int64_t g = 0; g < G; ++g) {
      const T* Wg = W + g * L * L;
      T* dWg = dW + g * L * L;
      const T* X = xp + g * np * N;
      const T* dY = dyp + g * np * N;
      T* dX = dxp + g * np * N;
      for (int64_t i0 = 0; i0 < np; i0 += kCausalBlock) {
        const int64_t bs = std::min(kCausalBlock, np - i0), i1 = i0 + bs;
        // dW: the block's rows against the columns before it, then its diagonal block's lower triangle.
        if (i0 > 0) gemm<T>(false, true, bs, i0, N, T(1), dY + i0 * N, N, X, N, T(1), dWg + i0 * L, L);
        gemm<T>(false, true, bs, bs, N, T(1), dY + i0 * N, N, X + i0 * N, N, T(0), diag.data(), bs);
        add_lower_triangle(diag.data(), bs, dWg + i0 * L + i0, L);
        // dX[i0:i1] = W[i0:i1, i0:i1]ᵀ (lower) dY[i0:i1] + W[i1:n_p, i0:i1]ᵀ dY[i1:n_p].
        lower_triangle(Wg + i0 * L + i0, L, bs, diag.data());
        gemm<T>(true, false, bs, N, bs, T(1), diag.data(), bs, dY + i0 * N, N, T(0), dX + i0 * N, N);
        if (i1 < np)
          gemm<T>(true, false, bs, N, np - i1, T(1), Wg + i1 * L + i0, L, dY + i1 * N, N, T(1), dX + i0 * N, N);
      }
    }
  }

  // dst (bs × bs, dense) = the lower triangle (c ≤ r) of src (row stride ld), zeros above.
  static void lower_triangle(const T* src, int64_t ld, int64_t bs, T* dst) {
#pragma omp parallel for schedule(static) if (bs * bs > 16384)
    for (int64_t r = 0; r < bs; ++r) {
      std::copy(src + r * ld, src + r * ld + r + 1, dst + r * bs);
      std::fill(dst + r * bs + r + 1, dst + (r + 1) * bs, T(0));
    }
  }

  // dst (row stride ld) += the lower triangle of src (bs × bs, dense).
  static void add_lower_triangle(const T* src, int64_t bs, T* dst, int64_t ld) {
#pragma omp parallel for schedule(static) if (bs * bs > 16384)
    for (int64_t r = 0; r < bs; ++r)
      for (int64_t c = 0; c <= r; ++c) dst[r * ld + c] += src[r * bs + c];
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
  std::vector<T> xp_;       // (G, n_p, B·d_h): the input, packed, padded rows 0
  std::vector<T> hp_, ap_;  // (G, H, B·d_h): the MLP's pre-activation and its activation after dropout
  std::vector<T> o_;        // (B, n, d): the mixing's output, the input of to_out
};

}  // namespace

void register_mixer_attention(AttentionRegistry& registry) {
  register_kind<MixerAttention>(registry, mixer_info(), parse_mixer);
}

}  // namespace lf
