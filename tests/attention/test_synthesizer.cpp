// Synthesizer attention: equal to a plain reference of its definition (loops in double, written here
// from the parameters by name) for every mode and option — dense, dense factorised, random, random
// fixed, random factorised — causal or not, key padding, shorter than max_len, dropout; finite-
// difference gradients in double for every option (fixed scores get none); causality (the Jacobian
// above the diagonal is exactly zero, a shorter causal sequence gives the same prefix); results
// independent of the thread count; the random mode sees its input only through the values; padded
// positions have no influence; training keeps no probabilities (peak RSS, activation_bytes); parameter
// counts of the factorised variants; bad options refused.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention_test_util.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;
using test::with_dropout;
using test::with_mask;

const json kDense = json::object();
const json kDenseFactorized = {{"factorized", true}};
const json kRandom = {{"mode", "random"}};
const json kRandomFixed = {{"mode", "random"}, {"fixed", true}};
const json kRandomFactorized = {{"mode", "random"}, {"rank", 2}};

// Every mode, with some option values beside the defaults.
std::vector<json> all_variants() {
  return {kDense,
          {{"hidden", 3}, {"v_bias", true}},
          kDenseFactorized,
          {{"factorized", true}, {"factor_a", 5}, {"hidden", 2}},  // a = 5, b = ⌈12/5⌉ = 3: a·b = 15 > 12
          kRandom,
          {{"mode", "random"}, {"v_bias", true}},
          kRandomFixed,
          kRandomFactorized,
          {{"mode", "random"}, {"rank", 1}, {"fixed", true}}};
}

AttentionCase syn_case(int64_t n, bool causal, json options = kDense, int64_t max_len = 0, int64_t heads = 2,
                       int64_t d = 8) {
  AttentionCase c;
  c.kind = "synthesizer";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = 2;
  c.n = n;
  return c;
}

// ---- the reference --------------------------------------------------------------------------------

// The layer's definition in plain loops, in double, from the rig's parameters and input.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig, uint64_t seed) {
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const bool dense = o.at("mode") == "dense";
  const bool factorized = dense && o.at("factorized").get<bool>();
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h, L = c.dims.max_len;
  const int64_t hid = dense ? o.at("hidden").get<int64_t>() : 0;
  const int64_t fa = factorized ? o.at("factor_a").get<int64_t>() : 0, fb = factorized ? (L + fa - 1) / fa : 0;
  const int64_t rank = dense ? 0 : o.at("rank").get<int64_t>();
  const double p = c.training ? c.dims.dropout : 0.0;
  auto param = [&](const std::string& name) { return test::param_values(rig, name); };
  const auto Wv = param("to_v.weight"), bv = param("to_v.bias"), Wo = param("to_out.weight"), bo = param("to_out.bias"),
             W1 = param("synth.hidden.weight"), b1 = param("synth.hidden.bias"), W2 = param("synth.out.weight"),
             b2 = param("synth.out.bias"), W2a = param("synth.out_a.weight"), b2a = param("synth.out_a.bias"),
             W2b = param("synth.out_b.weight"), b2b = param("synth.out_b.bias"), R = param("synth.random"),
             RA = param("synth.random_a"), RB = param("synth.random_b");
  // y (fan_out) = W x + b, W (fan_out × fan_in) at W + w_off, b at b + b_off (or none).
  auto linear = [](const std::vector<double>& W, int64_t w_off, const std::vector<double>& b, int64_t b_off,
                   const double* x, int64_t fan_in, int64_t fan_out) {
    std::vector<double> y(static_cast<size_t>(fan_out));
    for (int64_t r = 0; r < fan_out; ++r) {
      double acc = b.empty() ? 0.0 : b[size_t(b_off + r)];
      for (int64_t e = 0; e < fan_in; ++e) acc += W[size_t(w_off + r * fan_in + e)] * x[e];
      y[size_t(r)] = acc;
    }
    return y;
  };

  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    auto padded = [&](int64_t t) { return !c.mask.empty() && c.mask[size_t(b * n + t)] != 0; };
    std::vector<double> x(size_t(n * d));
    for (int64_t e = 0; e < n * d; ++e) x[size_t(e)] = double(rig.x[size_t(b * n * d + e)]);
    // V (n × d): zero at padded positions.
    std::vector<std::vector<double>> V(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(d), 0.0));
    for (int64_t t = 0; t < n; ++t)
      if (!padded(t)) V[size_t(t)] = linear(Wv, 0, bv, 0, &x[size_t(t * d)], d, d);
    std::vector<std::vector<double>> O(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(d), 0.0));
    for (int64_t i = 0; i < h; ++i)
      for (int64_t t = 0; t < n; ++t) {
        // Row t of the synthesised scores S^i (first n columns).
        std::vector<double> s(static_cast<size_t>(n), 0.0);
        if (dense) {
          std::vector<double> u = linear(W1, i * hid * d, b1, i * hid, &x[size_t(t * d)], d, hid);
          for (double& e : u) e = std::max(e, 0.0);
          if (!factorized) {
            const std::vector<double> row = linear(W2, i * L * hid, b2, i * L, u.data(), hid, L);
            std::copy(row.begin(), row.begin() + n, s.begin());
          } else {
            const std::vector<double> a = linear(W2a, i * fa * hid, b2a, i * fa, u.data(), hid, fa);
            const std::vector<double> bb = linear(W2b, i * fb * hid, b2b, i * fb, u.data(), hid, fb);
            for (int64_t j = 0; j < n; ++j) s[size_t(j)] = a[size_t(j / fb)] * bb[size_t(j % fb)];
          }
        } else {
          for (int64_t j = 0; j < n; ++j) {
            if (rank == 0) {
              s[size_t(j)] = R[size_t((i * L + t) * L + j)];
            } else {
              double acc = 0;
              for (int64_t k = 0; k < rank; ++k)
                acc += RA[size_t((i * L + t) * rank + k)] * RB[size_t((i * L + j) * rank + k)];
              s[size_t(j)] = acc;
            }
          }
        }
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          if ((c.dims.causal && j > t) || padded(j)) s[size_t(j)] = -INFINITY;
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -INFINITY) continue;  // no visible key: output 0
        double sum = 0;
        for (double& e : s) sum += (e = e == -INFINITY ? 0.0 : std::exp(e - mx));
        for (int64_t j = 0; j < n; ++j) {
          const uint64_t idx = uint64_t(((b * h + i) * n + t) * n + j);
          const bool keep = p == 0 || double(uniform01(seed, kProbsDropoutStream, idx)) >= double(float(p));
          if (!keep) continue;
          const double w = s[size_t(j)] / sum / (1 - p);
          for (int64_t e = 0; e < dh; ++e) O[size_t(t)][size_t(i * dh + e)] += w * V[size_t(j)][size_t(i * dh + e)];
        }
      }
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<double> y = linear(Wo, 0, bo, 0, O[size_t(t)].data(), d, d);
      std::copy(y.begin(), y.end(), out.begin() + (b * n + t) * d);
    }
  }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig, rig.kForwardSeed); });
}

TEST(SynthesizerAttention, MatchesReference) {
  for (const json& opt : all_variants())
    for (bool causal : {false, true}) {
      expect_matches_reference_both(syn_case(12, causal, opt));
      expect_matches_reference_both(syn_case(9, causal, opt, 12));  // shorter than max_len
      expect_matches_reference_both(with_mask(syn_case(11, causal, opt, 12), 6));
      expect_matches_reference_both(with_mask(syn_case(12, causal, opt), 0));
      expect_matches_reference_both(with_dropout(syn_case(12, causal, opt), 0.3));
      expect_matches_reference_both(with_dropout(with_mask(syn_case(10, causal, opt, 12), 4), 0.25));
      expect_matches_reference_both(syn_case(7, causal, opt, 12, 1, 4));  // one head
    }
  // Large enough for the parallel row loops (n² > 16384) and a longer factorisation.
  expect_matches_reference_both(with_dropout(with_mask(syn_case(140, false, kDenseFactorized, 150, 2, 16), 9), 0.1));
  expect_matches_reference_both(with_mask(syn_case(140, true, kRandomFactorized, 150, 2, 16), 9));
  expect_matches_reference_both(with_dropout(syn_case(140, true, kRandom, 150, 2, 16), 0.1));
}

TEST(SynthesizerAttention, GradientsMatchFiniteDifferences) {
  for (const json& opt : all_variants()) {
    std::vector<AttentionCase> cases;
    for (bool causal : {false, true}) {
      cases.push_back(syn_case(8, causal, opt));
      cases.push_back(with_mask(syn_case(7, causal, opt, 9), 5));     // padding, n < max_len
      cases.push_back(with_dropout(syn_case(8, causal, opt), 0.3));  // shared random probabilities + dropout
      cases.push_back(with_dropout(with_mask(syn_case(8, causal, opt, 10), 2), 0.3));
    }
    for (const AttentionCase& c : cases) {
      SCOPED_TRACE(describe(c));
      test::check_attention_gradients(c);
    }
  }
}

TEST(SynthesizerAttention, ResultsDoNotDependOnTheThreadCount) {
  // n² > 16384: every row loop runs in parallel.
  for (const json& opt : {kDense, kDenseFactorized, kRandom, kRandomFactorized})
    for (bool mask : {false, true}) {
      AttentionCase c = with_dropout(syn_case(150, true, opt, 160, 2, 16), 0.1);
      if (mask) c = with_mask(c, 100);
      SCOPED_TRACE(describe(c));
      test::expect_results_independent_of_threads(c);
    }
}

// ---- causality --------------------------------------------------------------------------------------

TEST(SynthesizerAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const json& opt : all_variants())
    for (const AttentionCase& c : {syn_case(9, true, opt, 12), with_mask(syn_case(8, true, opt), 5),
                                   with_dropout(syn_case(8, true, opt), 0.2)}) {
      test::expect_causal_jacobian_is_zero_above_the_diagonal(c, 1, /*past_nonzero=*/c.dims.dropout == 0 && c.mask.empty());
    }
}

TEST(SynthesizerAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // A causal layer built for 16 positions gives, on the first 7 positions alone, the outputs it gives
  // them inside the 16-position sequence. Equal to rounding, not bit for bit: P·V runs over n keys,
  // and the double reference product rounds a 7-term and a 16-term dot product (zeros after the
  // seventh) differently (vectorised body vs scalar tail). The causal Jacobian test above shows that
  // no later position has any influence at all.
  for (const json& opt : all_variants())
    for (bool mask : {false, true}) {
      SCOPED_TRACE(str_cat(opt.dump(), " mask=", mask));
      AttentionCase full = syn_case(16, true, opt), part = syn_case(7, true, opt, 16);
      if (mask) {  // sample 0 pads key 2; sample 1 key 5 (and, in the long one, key 12)
        full.mask.assign(32, 0);
        part.mask.assign(14, 0);
        full.mask[2] = part.mask[2] = 1;
        full.mask[16 + 5] = part.mask[7 + 5] = 1;
        full.mask[16 + 12] = 1;
      }
      const test::PrefixOutputs<double> r = test::prefix_outputs<double>(full, part);
      for (int64_t s = 0; s < 2; ++s) LF_EXPECT_CLOSE(r.part.data() + s * 7 * 8, r.full.data() + s * 7 * 8, 7 * 8, 1e-14);
      AttentionRig<double> a(full, 4);
      a.forward(full);
      // Changing the later positions changes nothing in the prefix (beyond that rounding, nothing at all).
      AttentionRig<double> c(full, 4);
      c.x = a.x;
      for (int64_t e = 7 * 8; e < 16 * 8; ++e) c.x[size_t(e)] += 0.9;
      c.forward(full);
      for (int64_t e = 0; e < 7 * 8; ++e) ASSERT_EQ(c.out[size_t(e)], a.out[size_t(e)]) << e;
    }
}

// ---- properties -------------------------------------------------------------------------------------

TEST(SynthesizerAttention, RandomModeSeesTheInputOnlyThroughTheValues) {
  // W_v with its first d/2 input columns zero: a change of x in those features leaves V unchanged.
  // The random mode's output then does not move at all (its scores do not read x); the dense mode's
  // does (its scores do), so the test can tell.
  const int64_t d = 8;
  for (const json& opt : all_variants()) {
    const bool random = opt.value("mode", "dense") == "random";
    for (const AttentionCase& c : {syn_case(9, false, opt), with_dropout(with_mask(syn_case(9, true, opt), 3), 0.2)}) {
      SCOPED_TRACE(describe(c));
      AttentionRig<double> a(c), b(c);
      for (AttentionRig<double>* r : {&a, &b}) {
        double* Wv = r->arena.value(r->arena.find("to_v.weight"));
        for (int64_t row = 0; row < d; ++row)
          for (int64_t col = 0; col < d / 2; ++col) Wv[row * d + col] = 0;
      }
      for (int64_t bt = 0; bt < c.B * c.n; ++bt)
        for (int64_t e = 0; e < d / 2; ++e) b.x[size_t(bt * d + e)] += 0.7 + 0.1 * double(e);
      a.forward(c);
      b.forward(c);
      if (random) {
        EXPECT_EQ(a.out, b.out);
        // And the input gradient lies in the row space of W_v: zero in those features.
        std::vector<double> dx(a.x.size());
        const auto w = test::random_vector<double>(int64_t(a.out.size()), 3);
        a.layer->backward(w.data(), dx.data());
        for (int64_t bt = 0; bt < c.B * c.n; ++bt)
          for (int64_t e = 0; e < d / 2; ++e) ASSERT_EQ(dx[size_t(bt * d + e)], 0.0);
      } else {
        EXPECT_NE(a.out, b.out);
      }
    }
  }
}

TEST(SynthesizerAttention, PaddedPositionsHaveNoInfluence) {
  for (const json& opt : all_variants())
    for (bool causal : {false, true}) {
      const AttentionCase c = with_mask(syn_case(11, causal, opt, 12), 6);
      test::expect_padded_positions_have_no_influence<double>(c, test::nan_or(1e30));
    }
}

TEST(SynthesizerAttention, FullyPaddedSampleGivesTheOutputBias) {
  // Every key padded: no probability anywhere, O = 0, Y = b_o (not NaN).
  for (const json& opt : {kDense, kRandom}) {
    AttentionCase c = syn_case(5, false, opt);
    c.mask.assign(size_t(c.B * c.n), 1);
    AttentionRig<double> rig(c);
    rig.forward(c);
    const double* bo = rig.arena.value(rig.arena.find("to_out.bias"));
    for (int64_t bt = 0; bt < c.B * c.n; ++bt)
      for (int64_t e = 0; e < 8; ++e) ASSERT_EQ(rig.out[size_t(bt * 8 + e)], bo[e]);
  }
}

// ---- memory -----------------------------------------------------------------------------------------

TEST(SynthesizerAttention, TrainingKeepsNoProbabilities) {
  // B = 2, h = 8, n = 2048: the probabilities of every (sample, head) would be 256 MiB of floats;
  // the layer holds one head's n×n (16 MiB) and its gradient at a time, and recomputes them.
  const int64_t B = 2, n = 2048, d = 64, h = 8;
  for (const json& opt : {kDense, kDenseFactorized, kRandom, kRandomFactorized}) {
    SCOPED_TRACE(opt.dump());
    ParamArena<float> arena;
    auto layer = make_attention<float>({"synthesizer", {d, h, n, true, 0.1}, opt, ""}, arena);
    const double estimate = layer->activation_bytes(B, n, n, true);
    EXPECT_LT(estimate, double(B) * h * n * n * 4 / 2);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    LF_SKIP_WITHOUT_PROC_STATUS();
    arena.allocate();
    arena.initialize(1);
    const int64_t growth = test::forward_backward_peak_rss_growth(*layer, B, n, d);
    // (The GEMM backend's own buffers, e.g. gemm.cpp's packed operand of up to 4 MiB per thread, are
    // not the layer's.)
    EXPECT_LT(double(growth), estimate + double(8 << 20)) << "activation_bytes underestimates the peak";
    EXPECT_LT(growth, int64_t(96) << 20) << "peak RSS grew by " << growth << " bytes";
  }
}

// ---- parameters, registry and configurations ------------------------------------------------------

int64_t count_params(const AttentionDims& dims, const json& options, ParamArena<float>* keep = nullptr) {
  ParamArena<float> arena;
  make_attention<float>({"synthesizer", dims, options, ""}, keep ? *keep : arena);
  return keep ? keep->numel() : arena.numel();
}

TEST(SynthesizerAttention, ParameterCountsAreAsDocumented) {
  const int64_t d = 64, h = 4, L = 1000, dh = d / h;
  const AttentionDims dims{d, h, L, false, 0};
  const int64_t maps = 2 * d * d + d;  // to_v.weight, to_out.weight and bias
  const int64_t a = 32, b = 32;        // ⌈√1000⌉ = 32, ⌈1000/32⌉ = 32
  const int64_t dense = count_params(dims, kDense), factor = count_params(dims, kDenseFactorized);
  EXPECT_EQ(dense, maps + h * dh * (d + 1) + h * L * (dh + 1));
  EXPECT_EQ(factor, maps + h * dh * (d + 1) + h * (a + b) * (dh + 1));
  EXPECT_LT(factor, dense);
  EXPECT_EQ(count_params(dims, {{"factorized", true}, {"factor_a", 10}, {"hidden", 8}}),
            maps + h * 8 * (d + 1) + h * (10 + 100) * (8 + 1));
  const int64_t random = count_params(dims, kRandom), rank8 = count_params(dims, {{"mode", "random"}, {"rank", 8}});
  EXPECT_EQ(random, maps + h * L * L);
  EXPECT_EQ(rank8, maps + 2 * h * L * 8);
  EXPECT_LT(rank8, random);
  EXPECT_EQ(count_params(dims, {{"mode", "random"}, {"v_bias", true}}), maps + d + h * L * L);

  ParamArena<float> arena;
  make_attention<float>({"synthesizer", {8, 2, 10, false, 0}, {{"factorized", true}}, "l."}, arena);
  EXPECT_EQ(arena.info(arena.find("l.synth.hidden.weight")).shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(arena.info(arena.find("l.synth.out_a.weight")).shape, (std::vector<int64_t>{2, 4, 4}));  // ⌈√10⌉ = 4
  EXPECT_EQ(arena.info(arena.find("l.synth.out_b.weight")).shape, (std::vector<int64_t>{2, 3, 4}));  // ⌈10/4⌉ = 3
  EXPECT_LT(arena.find("l.synth.out.weight"), 0);
  EXPECT_LT(arena.find("l.to_q.weight"), 0);
  EXPECT_LT(arena.find("l.to_k.weight"), 0);
  ParamArena<float> fixed;
  make_attention<float>({"synthesizer", {8, 2, 10, false, 0}, {{"mode", "random"}, {"fixed", true}, {"rank", 3}}, ""},
                        fixed);
  EXPECT_FALSE(fixed.info(fixed.find("synth.random_a")).trainable);
  EXPECT_FALSE(fixed.info(fixed.find("synth.random_b")).trainable);
  EXPECT_TRUE(fixed.info(fixed.find("to_v.weight")).trainable);
  ParamArena<float> learned;
  make_attention<float>({"synthesizer", {8, 2, 10, false, 0}, kRandom, ""}, learned);
  EXPECT_EQ(learned.info(learned.find("synth.random")).shape, (std::vector<int64_t>{2, 10, 10}));
  EXPECT_TRUE(learned.info(learned.find("synth.random")).trainable);
}

TEST(SynthesizerAttention, RandomScoresStartWithUnitVariance) {
  // The documented initialisation: R ~ N(0, 1); A, B ~ N(0, r^{-1/4}), so that (A Bᵀ)_ij has variance 1.
  for (const json& opt : {kRandom, json{{"mode", "random"}, {"rank", 16}}}) {
    SCOPED_TRACE(opt.dump());
    const int64_t L = 200, h = 2;
    ParamArena<double> arena;
    make_attention<double>({"synthesizer", {8, h, L, false, 0}, opt, ""}, arena);
    arena.allocate();
    arena.initialize(5);
    std::vector<double> S(size_t(h * L * L));
    if (opt.contains("rank")) {
      const int64_t r = 16;
      const double* A = arena.value(arena.find("synth.random_a"));
      const double* Bm = arena.value(arena.find("synth.random_b"));
      for (int64_t i = 0; i < h; ++i)
        for (int64_t t = 0; t < L; ++t)
          for (int64_t j = 0; j < L; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < r; ++k) acc += A[(i * L + t) * r + k] * Bm[(i * L + j) * r + k];
            S[size_t((i * L + t) * L + j)] = acc;
          }
    } else {
      const double* R = arena.value(arena.find("synth.random"));
      std::copy(R, R + h * L * L, S.begin());
    }
    double mean = 0, var = 0;
    for (double e : S) mean += e;
    mean /= double(S.size());
    for (double e : S) var += (e - mean) * (e - mean);
    var /= double(S.size());
    EXPECT_NEAR(mean, 0.0, 0.05);
    EXPECT_NEAR(var, 1.0, 0.1);
  }
}

TEST(SynthesizerAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("synthesizer").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
  const AttentionDims dims{64, 4, 1000, true, 0.1};
  EXPECT_EQ(validate_attention({"synthesizer", dims, json::object(), ""}),
            (json{{"mode", "dense"}, {"hidden", 16}, {"factorized", false}, {"v_bias", false}}));
  EXPECT_EQ(validate_attention({"synthesizer", dims, kDenseFactorized, ""}),
            (json{{"mode", "dense"}, {"hidden", 16}, {"factorized", true}, {"factor_a", 32}, {"v_bias", false}}));
  EXPECT_EQ(validate_attention({"synthesizer", dims, kRandom, ""}),
            (json{{"mode", "random"}, {"rank", 0}, {"fixed", false}, {"v_bias", false}}));
  EXPECT_EQ(validate_attention({"synthesizer", {8, 2, 16, false, 0}, kDenseFactorized, ""})["factor_a"], 4);
  EXPECT_EQ(validate_attention({"synthesizer", {8, 2, 17, false, 0}, kDenseFactorized, ""})["factor_a"], 5);
  EXPECT_EQ(validate_attention({"synthesizer", {8, 2, 1, false, 0}, kDenseFactorized, ""})["factor_a"], 1);
}

TEST(SynthesizerAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options, int64_t max_len = 8, double dropout = 0) {
    return make_attention<float>({"synthesizer", {8, 2, max_len, false, dropout}, options, ""}, arena);
  };
  EXPECT_THROW(make({{"mode", "mixture"}}), InvalidArgument);
  EXPECT_THROW(make({{"mode", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"hidden", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"hidden", -3}}), InvalidArgument);
  EXPECT_THROW(make({{"hidden", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"factorized", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"factor_a", 2}}), InvalidArgument);  // without factorized
  EXPECT_THROW(make({{"factorized", false}, {"factor_a", 2}}), InvalidArgument);
  EXPECT_THROW(make({{"factorized", true}, {"factor_a", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"factorized", true}, {"factor_a", -1}}), InvalidArgument);
  EXPECT_THROW(make({{"factorized", true}, {"factor_a", 9}}), InvalidArgument);  // more than max_len
  EXPECT_THROW(make({{"rank", 2}}), InvalidArgument);                            // rank with dense
  EXPECT_THROW(make({{"fixed", true}}), InvalidArgument);                        // fixed with dense
  EXPECT_THROW(make({{"mode", "random"}, {"hidden", 4}}), InvalidArgument);
  EXPECT_THROW(make({{"mode", "random"}, {"factorized", true}}), InvalidArgument);
  EXPECT_THROW(make({{"mode", "random"}, {"factor_a", 2}}), InvalidArgument);
  EXPECT_THROW(make({{"mode", "random"}, {"rank", -1}}), InvalidArgument);
  EXPECT_THROW(make({{"mode", "random"}, {"rank", 8}}), InvalidArgument);  // = max_len: saves nothing
  EXPECT_THROW(make({{"mode", "random"}, {"fixed", "yes"}}), InvalidArgument);
  EXPECT_THROW(make({{"qkv_bias", true}}), InvalidArgument);  // unknown option (there is no Q or K)
  EXPECT_THROW(make({{"v_bias", 1}}), InvalidArgument);
  EXPECT_THROW(make(json::object(), 8, 1.0), InvalidArgument);
  for (const auto& [options, key] : std::vector<std::pair<json, std::string>>{
           {{{"rank", 2}}, "rank"}, {{{"fixed", true}}, "fixed"}, {{{"factorized", true}, {"factor_a", 0}}, "factor_a"}}) {
    try {
      make(options);
      ADD_FAILURE() << options.dump() << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  // Longer than max_len; cross-attention.
  AttentionCase small = syn_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = syn_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  AttentionCase cross = syn_case(6, false);
  cross.m = 6;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
