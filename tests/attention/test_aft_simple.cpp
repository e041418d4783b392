// AFT-simple: equal to a plain reference of its definition (loops in double, written here from the
// parameters by name) for every option — causal or not, key padding (also a sequence that is all
// padding), shorter than max_len, Q/K/V biases, widths that are not a multiple of the channel block,
// the parallel path; keys of ±1000 (exp would overflow) give finite outputs equal to the stable
// reference; finite-difference gradients in double for every option; causality (the Jacobian above
// the diagonal is exactly zero, a shorter sequence gives the same prefix bit for bit); padded
// positions have no influence, NaN included; results independent of the thread count; no n×n
// buffer at n = 16384; the registry, defaults and bad configurations.
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

AttentionCase aft_case(int64_t n, bool causal, json options = json::object(), int64_t max_len = 0, int64_t d = 8,
                       int64_t B = 2) {
  AttentionCase c;
  c.kind = "aft_simple";
  c.dims = AttentionDims{d, 2, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

// ---- the reference ------------------------------------------------------------------------------

// Y_tc = σ(Q_tc) Σ_{t'} softmax_{t'}(K_{·c}) V_{t'c} over the visible keys, in plain loops, in double;
// the softmax shifted by its own maximum (stable for any K).
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig) {
  const int64_t B = c.B, n = c.n, d = c.dims.d_model;
  const auto Wq = test::param_values(rig, "to_q.weight"), Wk = test::param_values(rig, "to_k.weight"), Wv = test::param_values(rig, "to_v.weight"),
             Wo = test::param_values(rig, "to_out.weight"), bq = test::param_values(rig, "to_q.bias"), bk = test::param_values(rig, "to_k.bias"),
             bv = test::param_values(rig, "to_v.bias"), bo = test::param_values(rig, "to_out.bias");
  auto linear = [&](const std::vector<double>& W, const std::vector<double>& b, const double* x) {
    return test::affine(W, b, x, d, d);
  };
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(n)), V(static_cast<size_t>(n));
    std::vector<bool> visible(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> x(static_cast<size_t>(d));
      for (int64_t e = 0; e < d; ++e) x[size_t(e)] = double(rig.x[size_t((b * n + t) * d + e)]);
      Q[size_t(t)] = linear(Wq, bq, x.data());
      K[size_t(t)] = linear(Wk, bk, x.data());
      V[size_t(t)] = linear(Wv, bv, x.data());
      visible[size_t(t)] = c.mask.empty() || !c.mask[size_t(b * n + t)];
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> y(size_t(d), 0.0);
      for (int64_t ch = 0; ch < d; ++ch) {
        const int64_t last = c.dims.causal ? t : n - 1;
        double mx = -INFINITY;
        for (int64_t u = 0; u <= last; ++u)
          if (visible[size_t(u)]) mx = std::max(mx, K[size_t(u)][size_t(ch)]);
        if (mx == -INFINITY) continue;  // no visible key: Y = 0
        double num = 0, den = 0;
        for (int64_t u = 0; u <= last; ++u) {
          if (!visible[size_t(u)]) continue;
          const double e = std::exp(K[size_t(u)][size_t(ch)] - mx);
          num += e * V[size_t(u)][size_t(ch)];
          den += e;
        }
        y[size_t(ch)] = 1.0 / (1.0 + std::exp(-Q[size_t(t)][size_t(ch)])) * num / den;
      }
      const std::vector<double> o = linear(Wo, bo, y.data());
      std::copy(o.begin(), o.end(), out.begin() + (b * n + t) * d);
    }
  }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig); });
}

TEST(AftSimpleAttention, MatchesReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(aft_case(9, causal));
    expect_matches_reference_both(aft_case(7, causal, json::object(), 12));  // shorter than max_len
    expect_matches_reference_both(with_mask(aft_case(11, causal, json::object(), 16), 6));
    expect_matches_reference_both(with_mask(aft_case(10, causal), 0));   // sample 1 sees its first key only
    expect_matches_reference_both(with_mask(aft_case(10, causal), -1));  // sample 1 is all padding: Y = 0
    expect_matches_reference_both(aft_case(9, causal, {{"qkv_bias", true}}));
    expect_matches_reference_both(aft_case(1, causal));
    expect_matches_reference_both(aft_case(8, causal, json::object(), 0, 20, 3));  // 20 = 16 + 4 channels
    // Large enough for the parallel path (B·n·d > 32768), several channel blocks.
    expect_matches_reference_both(with_mask(aft_case(170, causal, {{"qkv_bias", true}}, 180, 72, 3), 100));
  }
}

// ---- overflow -----------------------------------------------------------------------------------

// K_tc = ±1000 (by channel) + up to ±30 from the input: exp(K) overflows (or underflows to 0 for
// every key) in both precisions, so only a shifted softmax gives a finite, correct result.
template <class T>
void make_keys_huge(AttentionRig<T>& rig) {
  const int wk = rig.arena.find("to_k.weight"), bk = rig.arena.find("to_k.bias");
  ASSERT_GE(bk, 0);
  const int64_t numel = rig.arena.info(wk).numel, d = rig.arena.info(bk).numel;
  for (int64_t e = 0; e < numel; ++e) rig.arena.value(wk)[e] *= T(60);
  for (int64_t ch = 0; ch < d; ++ch) rig.arena.value(bk)[ch] = T(ch % 2 ? -1000 : 1000);
}

TEST(AftSimpleAttention, HugeKeysGiveFiniteOutputsEqualToTheStableReference) {
  for (bool causal : {false, true})
    for (bool masked : {false, true}) {
      AttentionCase c = aft_case(12, causal, {{"qkv_bias", true}}, 0, 20);
      if (masked) c = with_mask(c, 4);
      const auto reference = [&](const auto& rig) { return reference_forward(c, rig); };
      const auto huge = [](auto& rig) { make_keys_huge(rig); };
      test::expect_matches_reference<double>(c, 1e-12, reference, huge);
      // K ≈ 1000 in float carries an absolute error of ~1e-4, which the weights inherit.
      test::expect_matches_reference<float>(c, 2e-3, reference, huge);
      test::expect_finite_backward<float>(c, huge);  // the backward stays finite too
    }
}

// ---- gradients ---------------------------------------------------------------------------------

std::vector<AttentionCase> gradient_cases() {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(aft_case(7, causal));
    cases.push_back(with_mask(aft_case(6, causal, json::object(), 9), 3));  // padding, n < max_len
    cases.push_back(with_mask(aft_case(6, causal), -1));                   // a sequence of padding only
    cases.push_back(aft_case(5, causal, {{"qkv_bias", true}}, 0, 18));     // two channel blocks
    cases.push_back(aft_case(1, causal));
  }
  return cases;
}

TEST(AftSimpleAttention, GradientsMatchFiniteDifferences) {
  for (const AttentionCase& c : gradient_cases()) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

TEST(AftSimpleAttention, GradientsMatchFiniteDifferencesWithHugeKeys) {
  // The backward's recurrences with maxima that jump by ~2000 between channels and ±30 along t.
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(aft_case(6, causal, {{"qkv_bias", true}}), 2);
    SCOPED_TRACE(describe(c));
    AttentionRig<double> rig(c);
    make_keys_huge(rig);
    const int64_t d = c.dims.d_model;
    const std::vector<double> w = test::random_vector<double>(c.B * c.n * d, 99);
    auto loss = [&] {
      rig.forward(c);
      return test::weighted_sum(rig.out.data(), w.data(), int64_t(w.size()));
    };
    loss();
    std::vector<double> dx(rig.x.size());
    rig.arena.zero_grad();
    rig.layer->backward(w.data(), dx.data());
    test::expect_gradient_matches(loss, rig.x.data(), int64_t(rig.x.size()), dx.data(), "input", 1e-5);
    const int bk = rig.arena.find("to_k.bias");
    const std::vector<double> gbk(rig.arena.grad(bk), rig.arena.grad(bk) + d);
    test::expect_gradient_matches(loss, rig.arena.value(bk), d, gbk.data(), "to_k.bias", 1e-5);
  }
}

TEST(AftSimpleAttention, ResultsDoNotDependOnTheThreadCount) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(aft_case(300, causal, {{"qkv_bias", true}}, 300, 72, 3), 200);
    SCOPED_TRACE(describe(c));
    test::expect_results_independent_of_threads(c);
  }
}

// ---- causality ---------------------------------------------------------------------------------

TEST(AftSimpleAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : {aft_case(9, true), with_mask(aft_case(8, true, {{"qkv_bias", true}}, 12, 20), 5)})
    test::expect_causal_jacobian_is_zero_above_the_diagonal(c);
}

TEST(AftSimpleAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // In double only: the float GEMM of the maps (oneDNN) blocks by the row count, so a row's Q, K, V
  // can differ in the last bit between 7 and 16 rows; the AFT core itself reads rows ≤ t only.
  // A causal layer built for 16 positions gives, on the first 7 positions alone, exactly the outputs
  // it gives them inside the 16-position sequence.
  const int64_t d = 20;
  test::expect_same_prefix<double>(aft_case(16, true, {{"qkv_bias", true}}, 0, d),
                                   aft_case(7, true, {{"qkv_bias", true}}, 16, d));
}

TEST(AftSimpleAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(aft_case(11, causal, json::object(), 12), 6);
    test::expect_padded_positions_have_no_influence<float>(c, test::nan_or(1e30));
  }
}

// ---- memory ------------------------------------------------------------------------------------

TEST(AftSimpleAttention, LongSequenceNeedsNoQuadraticMemory) {
  // n = 16384, d = 64: an n×n float buffer is 1 GiB; AFT-simple keeps about 13 (B, n, d) buffers (54 MiB).
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal);
    const int64_t n = 16384, d = 64;
    ParamArena<float> arena;
    auto layer = make_attention<float>({"aft_simple", {d, 1, n, causal, 0}, json::object(), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n * 4 / 8);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    LF_SKIP_WITHOUT_PROC_STATUS();
    test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(128) << 20);
  }
}

// ---- registry and configurations ---------------------------------------------------------------

TEST(AftSimpleAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("aft_simple").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
  EXPECT_EQ(validate_attention({"aft_simple", {8, 2, 64, true, 0.1}, json::object(), ""}), json({{"qkv_bias", false}}));
  // The four maps of standard attention, named as PyTorch's modules.
  ParamArena<float> arena;
  make_attention<float>({"aft_simple", {8, 2, 10, false, 0}, {{"qkv_bias", true}}, "l."}, arena);
  for (const char* name : {"l.to_q.weight", "l.to_k.weight", "l.to_v.weight", "l.to_out.weight", "l.to_q.bias",
                           "l.to_k.bias", "l.to_v.bias", "l.to_out.bias"})
    EXPECT_GE(arena.find(name), 0) << name;
  EXPECT_EQ(arena.count(), 8);
}

TEST(AftSimpleAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options, double dropout = 0) {
    return make_attention<float>({"aft_simple", {8, 2, 8, false, dropout}, options, ""}, arena);
  };
  EXPECT_THROW(make({{"qkv_bias", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"window", 4}}), InvalidArgument);  // unknown option
  EXPECT_THROW(make(json::object(), 1.0), InvalidArgument);
  EXPECT_THROW(make(json::array()), InvalidArgument);
  // Longer than max_len; cross-attention.
  AttentionCase small = aft_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = aft_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  AttentionCase cross = aft_case(6, false);
  cross.m = 6;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
