// AFT-conv: equal to a plain reference of the paper's formula (the convolution with κ = exp(ŵ) − 1 plus
// the global sum, loops in double, written here from the parameters by name) for every option —
// causal or not, windows of 1, 3, 7 and wider than the sequence, even causal windows, key padding
// (also a sequence that is all padding), shorter than max_len, Q/K/V biases, one head or several, the
// parallel path; kernels with negative κ; keys of ±1000 give finite outputs equal to the stable
// reference; finite-difference gradients in double for every option, the kernel's w, γ, β included;
// causality (the Jacobian above the diagonal is exactly zero, a shorter sequence gives the same
// prefix bit for bit); padded positions have no influence, NaN included; results independent of the
// thread count; no n×n buffer at n = 16384; the registry, defaults and bad configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "linformer/error.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;
using test::with_mask;

AttentionCase conv_case(int64_t n, bool causal, json options = json::object(), int64_t max_len = 0, int64_t heads = 2,
                        int64_t d = 8, int64_t B = 2) {
  AttentionCase c;
  c.kind = "aft_conv";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

json window(int64_t s) { return {{"window", s}}; }

// γ and β start at 0 (κ = 0); the tests draw them so that the kernel matters and κ takes both signs.
template <class T>
void draw_kernel(AttentionRig<T>& rig, double gamma_scale = 1.0) {
  const int g = rig.arena.find("kernel.gamma"), b = rig.arena.find("kernel.beta");
  const int64_t h = rig.arena.info(g).numel;
  const auto gs = test::random_vector<double>(h, 31, 0.4, 1.5), bs = test::random_vector<double>(h, 32, -0.8, 0.8);
  for (int64_t i = 0; i < h; ++i) {
    rig.arena.value(g)[i] = T((i % 2 ? -1 : 1) * gs[size_t(i)] * gamma_scale);
    rig.arena.value(b)[i] = T(bs[size_t(i)]);
  }
}

// ---- the reference ------------------------------------------------------------------------------

// The paper's formula in plain loops, in double: per head i,
//   Y_t = σ(Q_t) ⊙ [Σ_j κ_j e_{t+o_j} V_{t+o_j} + Σ_{t'} e_{t'} V_{t'}] / [Σ_j κ_j e_{t+o_j} + Σ_{t'} e_{t'}]
// with κ = exp(ŵ) − 1, ŵ = γ (w − mean w)/√(var w + 1e-5) + β, e = exp(K − M) (M: the largest K the
// row sees, for stability), over the visible keys (causal: t' ≤ t).
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig) {
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const int64_t s = o.at("window").get<int64_t>();
  const bool causal = c.dims.causal;
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h;
  const auto Wq = test::param_values(rig, "to_q.weight"), Wk = test::param_values(rig, "to_k.weight"), Wv = test::param_values(rig, "to_v.weight"),
             Wo = test::param_values(rig, "to_out.weight"), bq = test::param_values(rig, "to_q.bias"), bk = test::param_values(rig, "to_k.bias"),
             bv = test::param_values(rig, "to_v.bias"), bo = test::param_values(rig, "to_out.bias"), w = test::param_values(rig, "kernel.weight"),
             gamma = test::param_values(rig, "kernel.gamma"), beta = test::param_values(rig, "kernel.beta");
  EXPECT_EQ(int64_t(w.size()), h * s);
  // κ (h × s).
  std::vector<double> kappa(size_t(h * s));
  for (int64_t i = 0; i < h; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < s; ++j) mean += w[size_t(i * s + j)] / double(s);
    for (int64_t j = 0; j < s; ++j) var += std::pow(w[size_t(i * s + j)] - mean, 2) / double(s);
    for (int64_t j = 0; j < s; ++j) {
      const double what = gamma[size_t(i)] * (w[size_t(i * s + j)] - mean) / std::sqrt(var + 1e-5) + beta[size_t(i)];
      kappa[size_t(i * s + j)] = std::exp(what) - 1;
    }
  }
  const auto linear = test::affine<double>;
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(n)), V(static_cast<size_t>(n));
    std::vector<bool> visible(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> x(static_cast<size_t>(d));
      for (int64_t e = 0; e < d; ++e) x[size_t(e)] = double(rig.x[size_t((b * n + t) * d + e)]);
      Q[size_t(t)] = linear(Wq, bq, x.data(), d, d);
      K[size_t(t)] = linear(Wk, bk, x.data(), d, h);
      V[size_t(t)] = linear(Wv, bv, x.data(), d, d);
      visible[size_t(t)] = c.mask.empty() || !c.mask[size_t(b * n + t)];
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> y(size_t(d), 0.0);
      auto sees = [&](int64_t u) { return u >= 0 && u < n && visible[size_t(u)] && (!causal || u <= t); };
      for (int64_t i = 0; i < h; ++i) {
        double M = -INFINITY;
        for (int64_t u = 0; u < n; ++u)
          if (sees(u)) M = std::max(M, K[size_t(u)][size_t(i)]);
        if (M == -INFINITY) continue;  // no visible key: Y = 0
        auto e = [&](int64_t u) { return std::exp(K[size_t(u)][size_t(i)] - M); };
        std::vector<double> num(size_t(dh), 0.0);
        double den = 0;
        for (int64_t u = 0; u < n; ++u) {  // the global sum
          if (!sees(u)) continue;
          for (int64_t x = 0; x < dh; ++x) num[size_t(x)] += e(u) * V[size_t(u)][size_t(i * dh + x)];
          den += e(u);
        }
        for (int64_t j = 0; j < s; ++j) {  // the convolution
          const int64_t u = t + (causal ? j - (s - 1) : j - s / 2);
          if (!sees(u)) continue;
          const double k = kappa[size_t(i * s + j)];
          for (int64_t x = 0; x < dh; ++x) num[size_t(x)] += k * e(u) * V[size_t(u)][size_t(i * dh + x)];
          den += k * e(u);
        }
        for (int64_t x = 0; x < dh; ++x)
          y[size_t(i * dh + x)] = 1.0 / (1.0 + std::exp(-Q[size_t(t)][size_t(i * dh + x)])) * num[size_t(x)] / den;
      }
      const std::vector<double> row = linear(Wo, bo, y.data(), d, d);
      std::copy(row.begin(), row.end(), out.begin() + (b * n + t) * d);
    }
  }
  return out;
}

// With the kernel drawn (draw) or as initialised (γ = β = 0: κ = 0).
void expect_matches_reference_both(const AttentionCase& c, bool draw = true) {
  test::expect_matches_reference_both(
      c, [&](const auto& rig) { return reference_forward(c, rig); },
      [&](auto& rig) {
        if (draw) draw_kernel(rig);
      });
}

TEST(AftConvAttention, MatchesReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(conv_case(12, causal, window(3)));
    expect_matches_reference_both(conv_case(12, causal, window(3)), false);  // γ = β = 0: κ = 0
    expect_matches_reference_both(conv_case(12, causal, window(1)));
    expect_matches_reference_both(conv_case(12, causal, window(7)));
    expect_matches_reference_both(conv_case(9, causal, json::object(), 0, 1));  // default window, one head
    // Wider than the sequence: non-causal up to 2·max_len − 1, causal up to max_len.
    expect_matches_reference_both(conv_case(6, causal, window(causal ? 6 : 11)));
    expect_matches_reference_both(conv_case(5, causal, window(causal ? 8 : 15), 8));  // n < max_len too
    expect_matches_reference_both(with_mask(conv_case(11, causal, window(5), 16), 6));
    expect_matches_reference_both(with_mask(conv_case(10, causal, window(3)), 0));
    expect_matches_reference_both(with_mask(conv_case(10, causal, window(3)), -1));  // all padding: Y = 0
    expect_matches_reference_both(conv_case(9, causal, {{"window", 5}, {"qkv_bias", true}}, 0, 4, 16));
    expect_matches_reference_both(conv_case(1, causal, window(1)));
    // Large enough for the parallel path (B·n·d > 32768).
    expect_matches_reference_both(with_mask(conv_case(180, causal, {{"window", 9}, {"qkv_bias", true}}, 200, 4, 64, 3), 100));
  }
  for (int64_t s : {2, 4}) expect_matches_reference_both(conv_case(10, true, window(s)));  // even causal windows
}

TEST(AftConvAttention, StrongKernelsWithNegativeKappa) {
  // |γ| up to 6: ŵ spans about ±12, κ reaches −1 + 1e-5 (the window nearly hides its keys) and e^12.
  for (bool causal : {false, true})
    for (int64_t s : {int64_t(3), int64_t(7)}) {
      const AttentionCase c = with_mask(conv_case(14, causal, window(s), 16), 5);
      const auto reference = [&](const auto& rig) { return reference_forward(c, rig); };
      const auto strong = [](auto& rig) { draw_kernel(rig, 4.0); };
      test::expect_matches_reference<double>(c, 1e-11, reference, strong);
      test::expect_matches_reference<float>(c, 5e-5, reference, strong);
    }
}

// ---- overflow -----------------------------------------------------------------------------------

// K = ±1000 (by head) + up to ±30 from the input: exp(K) overflows (or underflows to 0 for every
// key) in both precisions, so only shifted exponentials give a finite, correct result.
template <class T>
void make_keys_huge(AttentionRig<T>& rig) {
  const int wk = rig.arena.find("to_k.weight"), bk = rig.arena.find("to_k.bias");
  ASSERT_GE(bk, 0);
  const int64_t numel = rig.arena.info(wk).numel, h = rig.arena.info(bk).numel;
  for (int64_t e = 0; e < numel; ++e) rig.arena.value(wk)[e] *= T(60);
  for (int64_t i = 0; i < h; ++i) rig.arena.value(bk)[i] = T(i % 2 ? -1000 : 1000);
}

TEST(AftConvAttention, HugeKeysGiveFiniteOutputsEqualToTheStableReference) {
  for (bool causal : {false, true})
    for (bool masked : {false, true}) {
      AttentionCase c = conv_case(12, causal, {{"window", 3}, {"qkv_bias", true}}, 0, 4, 16);
      if (masked) c = with_mask(c, 4);
      const auto reference = [&](const auto& rig) { return reference_forward(c, rig); };
      const auto huge = [](auto& rig) {
        draw_kernel(rig);
        make_keys_huge(rig);
      };
      test::expect_matches_reference<double>(c, 1e-12, reference, huge);
      // K ≈ 1000 in float carries an absolute error of ~1e-4, which the weights inherit.
      test::expect_matches_reference<float>(c, 2e-3, reference, huge);
      test::expect_finite_backward<float>(c, huge);
    }
}

// ---- gradients ---------------------------------------------------------------------------------

// check_attention_gradients with the kernel drawn (and optionally the keys made huge) after the
// layer is built: the input and every parameter against central differences.
void check_gradients(const AttentionCase& c, bool huge_keys = false, double tol = 1e-6) {
  test::check_attention_gradients(c, tol, [&](AttentionRig<double>& rig) {
    for (const ParamInfo& p : rig.arena.params()) EXPECT_TRUE(p.trainable) << p.name;  // every one is checked
    draw_kernel(rig);
    if (huge_keys) make_keys_huge(rig);
  });
}

TEST(AftConvAttention, GradientsMatchFiniteDifferences) {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(conv_case(8, causal, window(3)));
    cases.push_back(conv_case(7, causal, window(1)));
    cases.push_back(conv_case(6, causal, window(causal ? 6 : 11)));             // wider than the sequence
    cases.push_back(with_mask(conv_case(7, causal, window(5), 9), 3));          // padding, n < max_len
    cases.push_back(with_mask(conv_case(6, causal, window(3)), -1));            // a sequence of padding only
    cases.push_back(conv_case(6, causal, {{"window", 3}, {"qkv_bias", true}}, 0, 1, 4));
    cases.push_back(conv_case(9, causal, json::object(), 0, 4, 8));             // default window 7, d_h = 2
  }
  cases.push_back(conv_case(8, true, window(4)));
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    check_gradients(c);
  }
  // The default initialisation (γ = β = 0): the kernel's w gets no gradient, γ and β do.
  const AttentionCase c = conv_case(8, false, window(3));
  test::check_attention_gradients(c);
}

TEST(AftConvAttention, GradientsMatchFiniteDifferencesWithHugeKeys) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(conv_case(7, causal, {{"window", 3}, {"qkv_bias", true}}), 2);
    SCOPED_TRACE(describe(c));
    check_gradients(c, true, 1e-5);
  }
}

TEST(AftConvAttention, ResultsDoNotDependOnTheThreadCount) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(conv_case(300, causal, {{"window", 9}, {"qkv_bias", true}}, 300, 4, 64, 3), 200);
    SCOPED_TRACE(describe(c));
    test::expect_results_independent_of_threads(c, [](AttentionRig<double>& rig) { draw_kernel(rig); });
  }
}

// ---- causality ---------------------------------------------------------------------------------

TEST(AftConvAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : {conv_case(10, true, window(3)), conv_case(9, true, window(1)),
                                 with_mask(conv_case(8, true, {{"window", 4}, {"qkv_bias", true}}, 12, 4, 16), 5)})
    test::expect_causal_jacobian_is_zero_above_the_diagonal(c, 1, true, [](auto& rig) { draw_kernel(rig); });
}

TEST(AftConvAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // In double only: the float GEMM of the maps (oneDNN) blocks by the row count, so a row's Q, K, V
  // can differ in the last bit between 7 and 16 rows; the AFT core itself reads rows ≤ t only.
  // A causal layer built for 16 positions gives, on the first 7 positions alone, exactly the outputs
  // it gives them inside the 16-position sequence.
  for (int64_t s : {1, 3, 4}) {
    SCOPED_TRACE(s);
    const int64_t d = 16;
    const json opt = {{"window", s}, {"qkv_bias", true}};
    test::expect_same_prefix<double>(conv_case(16, true, opt, 0, 4, d), conv_case(7, true, opt, 16, 4, d),
                                     [](auto& rig) { draw_kernel(rig); });
  }
}

TEST(AftConvAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(conv_case(11, causal, window(3), 12), 6);
    test::expect_padded_positions_have_no_influence<float>(c, test::nan_or(1e30), false,
                                                           [](auto& rig) { draw_kernel(rig); });
  }
}

// ---- memory ------------------------------------------------------------------------------------

TEST(AftConvAttention, LongSequenceNeedsNoQuadraticMemory) {
  // n = 16384, d = 64: an n×n float buffer is 1 GiB; AFT-conv keeps about 9 (B, n, d) buffers (36 MiB).
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal);
    const int64_t n = 16384, d = 64;
    ParamArena<float> arena;
    auto layer = make_attention<float>({"aft_conv", {d, 2, n, causal, 0}, window(15), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n * 4 / 8);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    LF_SKIP_WITHOUT_PROC_STATUS();
    test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(128) << 20, "peak_rss_growth_bytes",
                                       [](ParamArena<float>& a) { a.value(a.find("kernel.gamma"))[0] = 1; });
  }
}

// ---- registry and configurations ---------------------------------------------------------------

TEST(AftConvAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("aft_conv").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
  const json defaults = {{"window", 7}, {"qkv_bias", false}};
  EXPECT_EQ(validate_attention({"aft_conv", {8, 2, 64, false, 0.1}, json::object(), ""}), defaults);
  EXPECT_EQ(validate_attention({"aft_conv", {8, 2, 64, true, 0}, json::object(), ""}), defaults);
  // Short models: the widest useful window.
  EXPECT_EQ(validate_attention({"aft_conv", {8, 2, 3, false, 0}, json::object(), ""})["window"], 5);
  EXPECT_EQ(validate_attention({"aft_conv", {8, 2, 3, true, 0}, json::object(), ""})["window"], 3);
  EXPECT_EQ(validate_attention({"aft_conv", {8, 2, 1, false, 0}, json::object(), ""})["window"], 1);
  // Parameters: Q, V d → d, K d → h, the kernel (h, s) with γ = β = 0 at the start.
  ParamArena<float> arena;
  make_attention<float>({"aft_conv", {8, 2, 10, false, 0}, {{"window", 5}, {"qkv_bias", true}}, "l."}, arena);
  EXPECT_EQ(arena.info(arena.find("l.to_q.weight")).shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(arena.info(arena.find("l.to_k.weight")).shape, (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(arena.info(arena.find("l.to_k.bias")).shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(arena.info(arena.find("l.to_v.weight")).shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(arena.info(arena.find("l.to_out.weight")).shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(arena.info(arena.find("l.kernel.weight")).shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(arena.info(arena.find("l.kernel.gamma")).shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(arena.info(arena.find("l.kernel.beta")).shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(arena.count(), 11);
  arena.allocate();
  arena.initialize(1);
  EXPECT_EQ(arena.value(arena.find("l.kernel.gamma"))[1], 0.0f);
  EXPECT_EQ(arena.value(arena.find("l.kernel.beta"))[0], 0.0f);
}

TEST(AftConvAttention, RefusesBadConfigurations) {
  auto make = [](const json& options, bool causal = false, int64_t max_len = 8, double dropout = 0) {
    ParamArena<float> arena;
    return make_attention<float>({"aft_conv", {8, 2, max_len, causal, dropout}, options, ""}, arena);
  };
  EXPECT_THROW(make(window(0)), InvalidArgument);
  EXPECT_THROW(make(window(-3)), InvalidArgument);
  EXPECT_THROW(make(window(4)), InvalidArgument);  // even without causal masking
  EXPECT_THROW(make(window(17)), InvalidArgument);  // wider than 2·max_len − 1
  EXPECT_THROW(make(window(9), true), InvalidArgument);  // causal: wider than max_len
  EXPECT_THROW(make({{"window", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"window", "7"}}), InvalidArgument);
  EXPECT_THROW(make({{"qkv_bias", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"kernel", 3}}), InvalidArgument);  // unknown option
  EXPECT_THROW(make(json::object(), false, 8, 1.0), InvalidArgument);
  EXPECT_NO_THROW(make(window(15)));
  EXPECT_NO_THROW(make(window(8), true));
  EXPECT_NO_THROW(make(window(4), true));
  try {
    make(window(4));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("odd"), std::string::npos) << e.what();
  }
  // Longer than max_len; cross-attention.
  AttentionCase small = conv_case(6, false, window(3));
  AttentionRig<float> layer(small);
  AttentionCase longer = conv_case(9, false, window(3));
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  AttentionCase cross = conv_case(6, false, window(3));
  cross.m = 6;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
