// `synthesizer`: Synthesizer attention (Tay et al. 2021). The scores are synthesised, never formed
// from token-token dot products; only the values come from the sequence. Per head i (h heads of
// width d_h = d/h; a sequence of n ≤ max_len positions uses the top-left n×n of the scores):
//   V = x W_vᵀ (+ b_v),  O^i = softmax(S^i + masks) V^i,  Y = O W_oᵀ + b_o
//   dense:             S^i_t = W2^i ReLU(W1^i x_t + b1^i) + b2^i        (row t of S^i, in R^max_len)
//   dense factorised:  a_t = W2a^i u_t + b2a^i ∈ R^a, b_t = W2b^i u_t + b2b^i ∈ R^b, u_t = ReLU(W1^i x_t + b1^i),
//                      S^i_t[j] = a_t[j / b] · b_t[j mod b]             (a·b ≥ max_len)
//   random:            S^i = R^i (max_len × max_len, learned or fixed), or R^i = A^i (B^i)ᵀ with rank r
// Masks: causal (j > t hidden), key padding (padded keys hidden, their rows of x and V selected to 0).
// Dropout on the probabilities. The probabilities are recomputed in the backward, never kept.
// Time O(B·n·d² + B·n²·d + B·h·n²·hidden) (dense) or O(B·n·d² + B·n²·d + h·n²·r) (random); memory
// O(B·n·(d + h·hidden) + n²): one head's n×n probabilities (and its gradient) at a time.
#include <algorithm>
#include <cmath>
#include <string>

#include "attention/kind_views.h"
#include "attention/options.h"
#include "attention/sdpa.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/norm_act.h"
#include "ops/synthesizer.h"

namespace lf {
namespace {

enum class SynthMode { Dense, Random };

// Rows per block of the causal products (the blocks skip the upper triangle of the n×n scores).
constexpr int64_t kCausalBlock = 256;

struct SynthOptions {
  SynthMode mode = SynthMode::Dense;
  int64_t hidden = 0;        // dense: width of each head's hidden layer
  bool factorized = false;   // dense: a_t ⊗ b_t instead of a full row
  int64_t factor_a = 0;      // factorised dense: a
  int64_t factor_b = 0;      //                   b = ⌈max_len / a⌉ (derived)
  int64_t rank = 0;          // random: 0 = a full matrix, r > 0: A Bᵀ
  bool fixed = false;        // random: not trained (still saved)
  bool v_bias = false;       // a bias on the value map
};

// ⌈√L⌉: the smallest a with a² ≥ L.
int64_t ceil_sqrt(int64_t L) {
  int64_t a = std::max<int64_t>(1, int64_t(std::sqrt(double(L))));
  while (a * a < L) ++a;
  while (a > 1 && (a - 1) * (a - 1) >= L) --a;
  return a;
}

SynthOptions parse_synthesizer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("synthesizer", options);
  SynthOptions o;
  o.mode = r.get_choice("mode", "dense", {"dense", "random"}) == "dense" ? SynthMode::Dense : SynthMode::Random;
  const bool dense = o.mode == SynthMode::Dense;
  // Options of the other mode are refused by name, not silently ignored.
  auto only_for = [&](const char* key, bool applies, const char* what) {
    LF_REQUIRE(applies || !options.contains(key), r.where(key), " applies only to ", what);
  };
  only_for("hidden", dense, "mode \"dense\"");
  only_for("factorized", dense, "mode \"dense\"");
  only_for("rank", !dense, "mode \"random\"");
  only_for("fixed", !dense, "mode \"random\" (the dense network is always trained)");
  if (dense) {
    o.hidden = r.get_int("hidden", dims.d_model / dims.n_heads);
    LF_REQUIRE(o.hidden >= 1, r.where("hidden"), " must be >= 1, got ", o.hidden);
    o.factorized = r.get_bool("factorized", false);
    only_for("factor_a", o.factorized, "the factorised dense mode (\"factorized\": true)");
    if (o.factorized) {
      o.factor_a = r.get_int("factor_a", ceil_sqrt(dims.max_len));
      LF_REQUIRE(o.factor_a >= 1 && o.factor_a <= dims.max_len, r.where("factor_a"), " must be in [1, max_len = ",
                 dims.max_len, "], got ", o.factor_a);
      o.factor_b = (dims.max_len + o.factor_a - 1) / o.factor_a;
    }
  } else {
    only_for("factor_a", false, "the factorised dense mode (\"factorized\": true)");
    o.rank = r.get_int("rank", 0);
    LF_REQUIRE(o.rank >= 0 && o.rank < dims.max_len, r.where("rank"), " must be in [0, max_len = ", dims.max_len,
               ") (0: a full max_len × max_len matrix; a rank of max_len or more saves nothing), got ", o.rank);
    o.fixed = r.get_bool("fixed", false);
  }
  o.v_bias = r.get_bool("v_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& synthesizer_info() {
  static const AttentionKindInfo info{
      "synthesizer",
      "Synthesizer: scores synthesised per token (dense MLP) or learned/fixed (random), no dot products, O(n²)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false},
      // It forms n×n scores: the benchmarks stop at 4096.
      /*quadratic_memory=*/true, /*bench_options=*/json::object(), /*bench_max_len=*/4096};
  return info;
}

template <class T>
class SynthesizerAttention final : public Attention<T> {
 public:
  SynthesizerAttention(const AttentionSpec& spec, const SynthOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims), opt_(options), arena_(arena) {
    const int64_t d = dims_.d_model, h = dims_.n_heads, L = dims_.max_len, hid = opt_.hidden;
    const std::string& p = spec.prefix;
    const Init linear = Init::uniform(1.0 / std::sqrt(double(d)));  // nn.Linear's default bound
    wv_ = arena.declare(p + "to_v.weight", {d, d}, linear);
    if (opt_.v_bias) bv_ = arena.declare(p + "to_v.bias", {d}, linear);
    wo_ = arena.declare(p + "to_out.weight", {d, d}, linear);
    bo_ = arena.declare(p + "to_out.bias", {d}, linear);
    if (opt_.mode == SynthMode::Dense) {
      const Init out = Init::uniform(1.0 / std::sqrt(double(hid)));  // nn.Linear(hidden, ·)
      w1_ = arena.declare(p + "synth.hidden.weight", {h * hid, d}, linear);
      b1_ = arena.declare(p + "synth.hidden.bias", {h * hid}, linear);
      if (!opt_.factorized) {
        w2_ = arena.declare(p + "synth.out.weight", {h, L, hid}, out);
        b2_ = arena.declare(p + "synth.out.bias", {h, L}, out);
      } else {
        w2a_ = arena.declare(p + "synth.out_a.weight", {h, opt_.factor_a, hid}, out);
        b2a_ = arena.declare(p + "synth.out_a.bias", {h, opt_.factor_a}, out);
        w2b_ = arena.declare(p + "synth.out_b.weight", {h, opt_.factor_b, hid}, out);
        b2b_ = arena.declare(p + "synth.out_b.bias", {h, opt_.factor_b}, out);
      }
    } else if (opt_.rank == 0) {
      // N(0, 1): the spread of dot-product scores q·k/√d_h at initialisation, so that the (possibly
      // fixed) mixing is neither uniform nor one-hot.
      r_ = arena.declare(p + "synth.random", {h, L, L}, Init::normal(1.0), !opt_.fixed);
    } else {
      // N(0, r^{-1/4}) each: the entries of A Bᵀ have variance 1, as in the full matrix.
      const Init f = Init::normal(std::pow(double(opt_.rank), -0.25));
      ra_ = arena.declare(p + "synth.random_a", {h, L, opt_.rank}, f, !opt_.fixed);
      rb_ = arena.declare(p + "synth.random_b", {h, L, opt_.rank}, f, !opt_.fixed);
    }
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, synthesizer_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    dropout_ = training ? dims_.dropout : 0.0;
    seed_ = seed;
    const int64_t B = in.B, n = in.n, d = dims_.d_model;
    // V (B, n, d) from x with padded rows selected to 0, and padded rows of V selected to 0.
    const T* xv = zero_padded_rows(in.x, in.key_padding_mask, B, n, d, clean_);
    v_.resize(B * n * d);
    ops::linear_forward(activation(xv), arena_.value_view(wv_), arena_.value_view(bv_), activation(v_.data()));
    zero_rows_at_padding(v_.data(), in.key_padding_mask, B, n, d);
    if (opt_.mode == SynthMode::Dense) generator_forward();
    o_.resize(B * n * d);
    if (opt_.mode == SynthMode::Dense)
      dense_core_forward();
    else
      random_core_forward();
    ops::linear_forward(activation(o_.data()), arena_.value_view(wo_), arena_.value_view(bo_), activation(out));
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "synthesizer");
    (void)dcontext;  // no cross-attention
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model;
    Buffer<T> d_o(B * n * d), dv(B * n * d);
    ops::linear_backward<T>(activation(o_.data()), arena_.value_view(wo_), activation(dout),
                            activation(d_o.data()), arena_.grad_view(wo_), arena_.grad_view(bo_));
    release_buffers(o_);
    if (opt_.mode == SynthMode::Dense)
      dense_core_backward(d_o.data(), dv.data(), dx);  // dx = the score network's path
    else
      random_core_backward(d_o.data(), dv.data());
    release_buffers(d_o);
    // The value path: the gradient of the selects of forward() (padded rows of V and of x). Dense mode
    // adds it to the score network's dx: with a mask, through a scratch whose padded rows are zeroed.
    zero_rows_at_padding(dv.data(), in_.key_padding_mask, B, n, d);
    const T* xv = in_.key_padding_mask ? clean_.data() : in_.x;
    const bool add = opt_.mode == SynthMode::Dense, through_scratch = add && in_.key_padding_mask;
    Buffer<T> dxv(through_scratch ? B * n * d : 0);
    T* dx_value = through_scratch ? dxv.data() : dx;
    ops::linear_backward<T>(activation(xv), arena_.value_view(wv_), activation(dv.data()),
                            activation(dx_value), arena_.grad_view(wv_), arena_.grad_view(bv_),
                            add && !through_scratch);
    zero_rows_at_padding(dx_value, in_.key_padding_mask, B, n, d);
    if (through_scratch) ops::add<T>(activation(dxv.data()), activation(dx));
    release();  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), nn = double(n) * n;
    double f = 2.0 * 2.0 * B * n * d * d + 2.0 * B * nn * d;  // to_v, to_out; P·V over every head
    if (opt_.mode == SynthMode::Dense) {
      const double hid = double(opt_.hidden);
      f += 2.0 * B * n * d * h * hid;  // the hidden layer
      f += opt_.factorized ? 2.0 * B * n * h * hid * double(opt_.factor_a + opt_.factor_b) + B * h * nn
                           : 2.0 * B * h * nn * hid;
    } else if (opt_.rank > 0) {
      f += 2.0 * h * nn * double(opt_.rank);  // A Bᵀ, once per head for the whole batch
    }
    return f;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const double nd = double(B) * n * dims_.d_model, nn = double(n) * n, h = double(dims_.n_heads);
    const double net = opt_.mode == SynthMode::Dense ? double(B) * n * h * opt_.hidden : 0.0;
    const double fac = opt_.factorized ? double(B) * n * h * double(opt_.factor_a + opt_.factor_b) : 0.0;
    const bool random = opt_.mode == SynthMode::Random, drop = dims_.dropout > 0;
    // Forward: the masked copy of x, V, O; the hidden units and factors; n×n scratch: P, (random) its
    // dropped copy and A Bᵀ.
    const double fwd = 3.0 * nd + net + fac;
    const double fwd_nn = 1.0 + (random && drop ? 1.0 : 0.0) + (opt_.rank > 0 ? 1.0 : 0.0);
    if (!training) return sizeof(T) * (fwd + fwd_nn * nn);
    // Backward: dO, dV, the value path's dx; dU and the factors' gradients; n×n scratch: P, dP and
    // (random) the summed dS and A Bᵀ.
    const double bwd_nn = 2.0 + (random ? 1.0 : 0.0) + (opt_.rank > 0 ? 1.0 : 0.0);
    return sizeof(T) * (fwd + 3.0 * nd + net + fac + std::max(fwd_nn, bwd_nn) * nn);
  }

 private:
  int64_t head_width() const { return dims_.d_model / dims_.n_heads; }
  // The key padding mask of sample b (n), or an empty view.
  TensorView<const uint8_t> key_mask(int64_t b) const {
    if (!in_.key_padding_mask) return {};
    return vector_view(in_.key_padding_mask + b * in_.n, in_.n);
  }
  // The (B·n, d) rows of an activation.
  template <class P>
  TensorView<P> activation(P* data) const {
    return rows_view(in_, data, dims_.d_model);
  }
  // One head's n × n scratch (scores, probabilities, their gradient).
  template <class P>
  TensorView<P> square(P* data) const {
    return matrix(data, in_.n, in_.n);
  }
  // The top-left n × n of a max_len × max_len matrix (the scores a sequence of n positions uses).
  template <class P>
  TensorView<P> top_left(TensorView<P> m) const {
    return m.narrow(0, 0, in_.n).narrow(1, 0, in_.n);
  }
  // Head i's `width` columns of a (B·n, h·width) activation: every row, or sample b's n rows.
  template <class P>
  TensorView<P> head_columns(P* data, int64_t i, int64_t width, int64_t b = -1) const {
    const int64_t n = in_.n, hw = dims_.n_heads * width;
    return b < 0 ? matrix(data + i * width, in_.B * n, width, hw) : matrix(data + b * n * hw + i * width, n, width, hw);
  }
  // Head i's (rows, cols) slice of a parameter declared (h, rows, cols), or its value or gradient.
  template <class P>
  static TensorView<P> head_slice(TensorView<P> param, int64_t i) {
    return matrix(param.data() + i * param.stride(0), param.size(1), param.size(2));
  }
  // Head i's row of a parameter declared (h, cols).
  template <class P>
  static TensorView<P> head_bias(TensorView<P> param, int64_t i) {
    return vector_view(param.data() + i * param.stride(0), param.size(1));
  }
  uint64_t dropout_offset(int64_t b, int64_t i) const {
    return uint64_t((b * dims_.n_heads + i) * in_.n * in_.n);  // sdpa's index ((b·h + i)·n + t)·n + j
  }

  // y (n × n) = the probabilities x of head i, sample b, with dropout (or, backward, its gradient); y may be x.
  void drop_probs(int64_t b, int64_t i, const T* x, T* y, bool backward = false) const {
    const int64_t nn = in_.n * in_.n;
    const uint64_t offset = dropout_offset(b, i);
    if (backward)
      ops::dropout_backward(vector_view(x, nn), vector_view(y, nn), dropout_, seed_, kProbsDropoutStream, offset);
    else
      ops::dropout_forward(vector_view(x, nn), vector_view(y, nn), dropout_, seed_, kProbsDropoutStream, offset);
  }

  // Calls f(r0, r1, kend) for the row blocks [r0, r1) of an n×n score matrix and the keys [0, kend)
  // they see: causal, blocks of kCausalBlock rows with kend = r1, so the products skip (most of) the
  // upper triangle; otherwise one block with kend = n. Entries of a row past its last visible key are
  // 0 in P and in dS, so the products may read them.
  template <class F>
  void row_blocks(F&& f) const {
    const int64_t n = in_.n, rows = dims_.causal ? kCausalBlock : n;
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t r1 = std::min(n, r0 + rows);
      f(r0, r1, dims_.causal ? r1 : n);
    }
  }

  // O (n × d_h, row stride d) = P V, V (n × d_h, row stride d).
  void probs_times_values(const T* P, const T* V, T* O) const {
    const int64_t n = in_.n, d = dims_.d_model, dh = head_width();
    row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
      ops::matmul(matrix(P + r0 * n, r1 - r0, kend, n), matrix(V, kend, dh, d), matrix(O + r0 * d, r1 - r0, dh, d));
    });
  }

  // dV (n × d_h, row stride d) = Pᵀ dO, overwritten.
  void probs_transposed_times_grad(const T* P, const T* dO, T* dV) const {
    const int64_t n = in_.n, d = dims_.d_model, dh = head_width();
    ops::fill(matrix(dV, n, dh, d), 0);
    row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
      ops::matmul(matrix(P + r0 * n, r1 - r0, kend, n).t(), matrix(dO + r0 * d, r1 - r0, dh, d),
                  matrix(dV, kend, dh, d), 1, 1);
    });
  }

  // G (n × n) = dO Vᵀ + beta·G on the visible blocks (∂loss/∂P̃ of one sample and head).
  void grad_times_values_transposed(const T* dO, const T* V, T beta, T* G) const {
    const int64_t n = in_.n, d = dims_.d_model, dh = head_width();
    row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
      ops::matmul(matrix(dO + r0 * d, r1 - r0, dh, d), matrix(V, kend, dh, d).t(), matrix(G + r0 * n, r1 - r0, kend, n),
                  1, double(beta));
    });
  }

  // ---- the score generator (dense mode) ----

  // hid_ (B·n, h·hidden) = ReLU(x W1ᵀ + b1); factorised: fa_ (B·n, h·a), fb_ (B·n, h·b) per head.
  void generator_forward() {
    const int64_t rows = in_.B * in_.n, h = dims_.n_heads, hid = opt_.hidden, hw = h * hid;
    hid_.resize(rows * hw);
    const TensorView<T> units = hid_.view({rows, hw});
    ops::linear_forward(activation(in_.x), arena_.value_view(w1_), arena_.value_view(b1_), units);
    ops::relu_forward<T>(units, units);
    if (!opt_.factorized) return;
    const int64_t fa = opt_.factor_a, fb = opt_.factor_b;
    fa_.resize(rows * h * fa);
    fb_.resize(rows * h * fb);
    for (int64_t i = 0; i < h; ++i) {
      const TensorView<const T> U = head_columns<const T>(hid_.data(), i, hid);
      ops::linear_forward(U, head_slice(arena_.value_view(w2a_), i), head_bias(arena_.value_view(b2a_), i),
                          head_columns(fa_.data(), i, fa));
      ops::linear_forward(U, head_slice(arena_.value_view(w2b_), i), head_bias(arena_.value_view(b2b_), i),
                          head_columns(fb_.data(), i, fb));
    }
  }

  // G (n × n): ∂loss/∂P̃ on entry (∂loss/∂P without undo_dropout), ∂loss/∂S on return, given P (the
  // probabilities before dropout).
  void probs_backward(int64_t b, int64_t i, const T* P, T* G, bool undo_dropout = true) const {
    if (undo_dropout && dropout_ > 0) drop_probs(b, i, G, G, /*backward=*/true);
    ops::synthesizer_softmax_backward<T>(square(P), dims_.causal, square(G));
  }

  // Scores of head i, sample b, in P (dense mode), then its probabilities.
  void dense_probs(int64_t b, int64_t i, T* P) const {
    const int64_t n = in_.n, h = dims_.n_heads, hid = opt_.hidden;
    if (opt_.factorized) {
      ops::synthesizer_factorized_softmax<T>(head_columns<const T>(fa_.data(), i, opt_.factor_a, b),
                                             head_columns<const T>(fb_.data(), i, opt_.factor_b, b), key_mask(b),
                                             dims_.causal, square(P));
      return;
    }
    // S (n × n) = U_b^i W2^i[:n]ᵀ, U_b^i (n × hidden) the head's hidden units; b2 added in the softmax.
    const T* U = hid_.data() + b * n * h * hid + i * hid;
    const T* W2 = arena_.value(w2_) + i * dims_.max_len * hid;
    row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
      ops::matmul(matrix(U + r0 * h * hid, r1 - r0, hid, h * hid), matrix(W2, kend, hid).t(),
                  matrix(P + r0 * n, r1 - r0, kend, n));
    });
    ops::synthesizer_softmax<T>(square(P), head_bias(arena_.value_view(b2_), i).narrow(0, 0, n), key_mask(b),
                                dims_.causal, square(P));
  }

  void dense_core_forward() {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = head_width();
    Buffer<T> P(n * n);  // one head's n×n at a time
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < h; ++i) {
        dense_probs(b, i, P.data());
        if (dropout_ > 0)
          drop_probs(b, i, P.data(), P.data());
        probs_times_values(P.data(), v_.data() + b * n * d + i * dh, o_.data() + b * n * d + i * dh);
      }
  }

  // dv (B, n, d) overwritten; dx (B, n, d) = the score network's part of the input gradient.
  void dense_core_backward(const T* d_o, T* dv, T* dx) {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = head_width(), L = dims_.max_len;
    const int64_t hid = opt_.hidden, hw = h * hid, fa = opt_.factor_a, fb = opt_.factor_b, rows = B * n;
    Buffer<T> dhid(rows * hw), dfa, dfb;
    if (opt_.factorized) {
      dfa.resize(rows * h * fa);
      dfb.resize(rows * h * fb);
    }
    Buffer<T> P(n * n), G(n * n);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < h; ++i) {
        const T* dO = d_o + b * n * d + i * dh;
        const T* V = v_.data() + b * n * d + i * dh;
        dense_probs(b, i, P.data());  // exactly the forward's steps
        value_and_prob_grads(b, i, P.data(), dO, V, dv + b * n * d + i * dh, G.data());
        if (!opt_.factorized) {
          // dU_b^i = dS W2^i[:n];  dW2^i[:n] += dSᵀ U_b^i;  db2^i[:n] += Σ_t dS_t.
          const T* U = hid_.data() + b * n * hw + i * hid;
          const T* W2 = arena_.value(w2_) + i * L * hid;
          T* dU = dhid.data() + b * n * hw + i * hid;
          T* dW2 = arena_.grad(w2_) + i * L * hid;
          row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
            ops::matmul(matrix<const T>(G.data() + r0 * n, r1 - r0, kend, n), matrix(W2, kend, hid),
                        matrix(dU + r0 * hw, r1 - r0, hid, hw));
            ops::matmul(matrix<const T>(G.data() + r0 * n, r1 - r0, kend, n).t(), matrix(U + r0 * hw, r1 - r0, hid, hw),
                        matrix(dW2, kend, hid), 1, 1);
          });
          ops::add_column_sums<T>(G.view({n, n}), vector_view(arena_.grad(b2_) + i * L, n));
        } else {
          ops::synthesizer_factors_backward<T>(square(G.data()), head_columns<const T>(fa_.data(), i, fa, b),
                                               head_columns<const T>(fb_.data(), i, fb, b), dims_.causal,
                                               head_columns(dfa.data(), i, fa, b), head_columns(dfb.data(), i, fb, b));
        }
      }
    release_buffers(P, G);
    if (opt_.factorized) {
      // dU^i = dA^i W2a^i + dB^i W2b^i; the output layers' gradients.
      for (int64_t i = 0; i < h; ++i) {
        const TensorView<const T> U = head_columns<const T>(hid_.data(), i, hid);
        const TensorView<T> dU = head_columns(dhid.data(), i, hid);
        ops::linear_backward<T>(U, head_slice(arena_.value_view(w2a_), i), head_columns<const T>(dfa.data(), i, fa), dU,
                                head_slice(arena_.grad_view(w2a_), i), head_bias(arena_.grad_view(b2a_), i));
        ops::linear_backward<T>(U, head_slice(arena_.value_view(w2b_), i), head_columns<const T>(dfb.data(), i, fb), dU,
                                head_slice(arena_.grad_view(w2b_), i), head_bias(arena_.grad_view(b2b_), i),
                                /*accumulate_dx=*/true);
      }
    }
    const TensorView<T> dunits = dhid.view({rows, hw});
    ops::relu_backward<T>(hid_.view({rows, hw}), dunits, dunits);
    ops::linear_backward<T>(activation(in_.x), arena_.value_view(w1_), dunits, activation(dx),
                            arena_.grad_view(w1_), arena_.grad_view(b1_));
  }

  // With P (n × n) of head i, sample b: dV_b^i = P̃ᵀ dO (overwritten), and G = ∂loss/∂S.
  void value_and_prob_grads(int64_t b, int64_t i, const T* P, const T* dO, const T* V, T* dV, T* G) const {
    const T* Pv = P;
    if (dropout_ > 0) {
      drop_probs(b, i, P, G);
      Pv = G;
    }
    probs_transposed_times_grad(Pv, dO, dV);
    grad_times_values_transposed(dO, V, T(0), G);  // ∂loss/∂P̃
    probs_backward(b, i, P, G);
  }

  // ---- random mode ----

  // The probabilities do not depend on the input: without a key padding mask they are the same for
  // every sample and computed once per head.
  bool shared_probs() const { return in_.key_padding_mask == nullptr; }

  // Scores of head i (its top-left n×n): R^i itself (row stride max_len), or A^i[:n] B^i[:n]ᵀ in raw.
  TensorView<const T> random_scores(int64_t i, T* raw) const {
    const int64_t n = in_.n, L = dims_.max_len, r = opt_.rank;
    if (r == 0) return top_left(head_slice(arena_.value_view(r_), i));
    const T* A = arena_.value(ra_) + i * L * r;
    const T* Bf = arena_.value(rb_) + i * L * r;
    row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
      ops::matmul(matrix(A + r0 * r, r1 - r0, r), matrix(Bf, kend, r).t(), matrix(raw + r0 * n, r1 - r0, kend, n));
    });
    return square<const T>(raw);
  }

  // P (n × n) = the probabilities of head i, sample b, from its scores S (n × n).
  void random_probs(int64_t b, TensorView<const T> S, T* P) const {
    ops::synthesizer_softmax<T>(S, {}, key_mask(b), dims_.causal, square(P));
  }

  void random_core_forward() {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = head_width();
    Buffer<T> P(n * n), D(dropout_ > 0 ? n * n : 0), raw(opt_.rank > 0 ? n * n : 0);
    for (int64_t i = 0; i < h; ++i) {
      const TensorView<const T> S = random_scores(i, raw.data());
      if (shared_probs()) random_probs(0, S, P.data());
      for (int64_t b = 0; b < B; ++b) {
        if (!shared_probs()) random_probs(b, S, P.data());
        const T* Pv = P.data();
        if (dropout_ > 0) {
          drop_probs(b, i, P.data(), D.data());
          Pv = D.data();
        }
        probs_times_values(Pv, v_.data() + b * n * d + i * dh, o_.data() + b * n * d + i * dh);
      }
    }
  }

  void random_core_backward(const T* d_o, T* dv) {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = head_width(), L = dims_.max_len;
    const int64_t r = opt_.rank;
    const bool shared = shared_probs(), train_scores = !opt_.fixed;
    Buffer<T> P(n * n), G(n * n), raw(r > 0 ? n * n : 0);
    // acc: Σ_b ∂loss/∂S^i (with shared probabilities, Σ_b ∂loss/∂P̃ first: the softmax backward is
    // linear in it). It reuses raw once the shared probabilities are formed.
    Buffer<T> own_acc(train_scores && (r == 0 || !shared) ? n * n : 0);
    T* acc = own_acc.empty() ? raw.data() : own_acc.data();
    for (int64_t i = 0; i < h; ++i) {
      const TensorView<const T> S = random_scores(i, raw.data());
      if (shared) random_probs(0, S, P.data());
      for (int64_t b = 0; b < B; ++b) {
        const T* dO = d_o + b * n * d + i * dh;
        const T* V = v_.data() + b * n * d + i * dh;
        if (!shared) random_probs(b, S, P.data());  // exactly the forward's steps
        if (!train_scores) {  // fixed: only the values need a gradient
          const T* Pv = P.data();
          if (dropout_ > 0) {
            drop_probs(b, i, P.data(), G.data());
            Pv = G.data();
          }
          probs_transposed_times_grad(Pv, dO, dv + b * n * d + i * dh);
          continue;
        }
        if (shared) {
          // dV as in value_and_prob_grads; ∂loss/∂P (after the dropout's backward) summed over b.
          const T* Pv = P.data();
          if (dropout_ > 0) {
            drop_probs(b, i, P.data(), G.data());
            Pv = G.data();
          }
          probs_transposed_times_grad(Pv, dO, dv + b * n * d + i * dh);
          if (dropout_ == 0) {
            grad_times_values_transposed(dO, V, b == 0 ? T(0) : T(1), acc);
            continue;
          }
          grad_times_values_transposed(dO, V, T(0), G.data());
          drop_probs(b, i, G.data(), G.data(), /*backward=*/true);
        } else {
          value_and_prob_grads(b, i, P.data(), dO, V, dv + b * n * d + i * dh, G.data());
        }
        if (b == 0)
          ops::copy<T>(square(G.data()), square(acc));
        else
          ops::add<T>(square(G.data()), square(acc));
      }
      if (!train_scores) continue;
      if (shared) probs_backward(0, i, P.data(), acc, /*undo_dropout=*/false);
      // ∂loss/∂R^i[:n, :n] = acc, or through the factors: dA^i[:n] += acc B^i[:n], dB^i[:n] += accᵀ A^i[:n].
      if (r == 0) {
        ops::add<T>(square(acc), top_left(head_slice(arena_.grad_view(r_), i)));
      } else {
        const T* A = arena_.value(ra_) + i * L * r;
        const T* Bf = arena_.value(rb_) + i * L * r;
        T* dA = arena_.grad(ra_) + i * L * r;
        T* dB = arena_.grad(rb_) + i * L * r;
        row_blocks([&](int64_t r0, int64_t r1, int64_t kend) {
          ops::matmul(matrix<const T>(acc + r0 * n, r1 - r0, kend, n), matrix(Bf, kend, r),
                      matrix(dA + r0 * r, r1 - r0, r), 1, 1);
          ops::matmul(matrix<const T>(acc + r0 * n, r1 - r0, kend, n).t(), matrix(A + r0 * r, r1 - r0, r),
                      matrix(dB, kend, r), 1, 1);
        });
      }
    }
  }

  void release() { release_buffers(clean_, v_, o_, hid_, fa_, fb_); }

  AttentionDims dims_;
  SynthOptions opt_;
  ParamArena<T>& arena_;
  int wv_ = -1, bv_ = -1, wo_ = -1, bo_ = -1;
  int w1_ = -1, b1_ = -1, w2_ = -1, b2_ = -1, w2a_ = -1, b2a_ = -1, w2b_ = -1, b2b_ = -1;  // dense
  int r_ = -1, ra_ = -1, rb_ = -1;                                                       // random

  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  double dropout_ = 0;
  uint64_t seed_ = 0;
  Buffer<T> clean_;    // (B, n, d): x with padded rows 0 (with a mask only)
  Buffer<T> v_, o_;    // (B, n, d)
  Buffer<T> hid_;      // (B·n, h·hidden): the dense network's hidden units
  Buffer<T> fa_, fb_;  // (B·n, h·a), (B·n, h·b): the factors
};

}  // namespace

void register_synthesizer_attention(AttentionRegistry& registry) {
  register_kind<SynthesizerAttention>(registry, synthesizer_info(), parse_synthesizer);
}

}  // namespace lf
