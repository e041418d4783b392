// Performer (FAVOR+): the layer against a double reference of its definition (features without any
// stabiliser, from the `features` parameter by name; float within 2e-5), finite-difference gradients
// for every option (the fixed features get none), causality (Jacobian exactly zero above the
// diagonal; later inputs and a shorter sequence leave earlier outputs bitwise unchanged — each key's
// stabiliser is its own and the core's running max covers earlier keys only), padded keys without
// influence, thread-count independence, large inputs (×30) finite, the kernel approximation converging to exact softmax attention as the feature count grows, the
// orthogonal random features (orthogonal blocks, Gaussian row norms, deterministic draws), the redraw
// hook through the layer and the trainer (a resumed run redraws as the uninterrupted one), features
// kept by a checkpoint, memory at n = 16384, the registry and bad options.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "attention/linear_core.h"
#include "cpu/feature_maps.h"
#include "attention_test_util.h"
#include "io/safetensors.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/model.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "linformer/trainer.h"
#include "tiny_model_config.h"

namespace lf {
namespace {

namespace fs = std::filesystem;
using test::AttentionCase;
using test::AttentionRig;
using test::cross;
using test::describe;
using test::with;
using test::with_mask;

AttentionCase pf_case(int64_t n, bool causal, json options = {{"chunk", 4}, {"features", 7}}, int64_t max_len = 0,
                      int64_t heads = 2, int64_t d = 8) {
  AttentionCase c;
  c.kind = "performer";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = 2;
  c.n = n;
  return c;
}

const json kSmall = {{"chunk", 4}, {"features", 7}};

// ---- the reference -------------------------------------------------------------------------------

// O (B, n, d) before the output map (with_output: Y = O W_oᵀ + b_o), by the definition in double:
// φ(x)_j = exp(w_j·x − ‖x‖²/2)/√m_f on x = q / d_h^{1/4} (generalized_attention: relu(w_j·x) + ε),
// no stabiliser, explicit sums over the keys.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig, bool with_output = true) {
  const int64_t B = c.B, n = c.n, m = c.m > 0 ? c.m : c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h;
  auto param = [&](const std::string& name) { return test::param_values(rig, name); };
  const bool no_projection = c.options.value("no_projection", false);
  const auto Wq = param("to_q.weight"), Wk = param("to_k.weight"), Wv = param("to_v.weight"),
             Wo = param("to_out.weight"), bq = param("to_q.bias"), bk = param("to_k.bias"), bv = param("to_v.bias"),
             bo = param("to_out.bias"), W = no_projection ? std::vector<double>() : param("features");
  const int64_t mf = no_projection ? dh : int64_t(W.size()) / dh;
  auto linear = [&](const std::vector<double>& Wm, const std::vector<double>& b, const T* x) {
    return test::affine(Wm, b, x, d, d);
  };
  const double c4 = std::pow(double(dh), -0.25);
  const bool generalized = c.options.value("generalized_attention", false);
  const double eps = c.options.value("kernel_epsilon", 1e-3);
  auto phi = [&](const std::vector<double>& q, int64_t hd) {
    std::vector<double> f(static_cast<size_t>(mf));
    double sq = 0;
    for (int64_t e = 0; e < dh; ++e) sq += c4 * q[size_t(hd * dh + e)] * c4 * q[size_t(hd * dh + e)];
    for (int64_t j = 0; j < mf; ++j) {
      double u = 0;
      for (int64_t e = 0; e < dh; ++e) u += W[size_t(j * dh + e)] * c4 * q[size_t(hd * dh + e)];
      f[size_t(j)] = generalized ? std::max(u, 0.0) + eps : std::exp(u - sq / 2) / std::sqrt(double(mf));
    }
    return f;
  };
  // no_projection: φ(q) = softmax of q's d_h entries; φ(k) = exp(k) causal, else the softmax of k's
  // entry c over the (valid) positions.
  auto softmax_entries = [&](const std::vector<double>& q, int64_t hd) {
    std::vector<double> f(static_cast<size_t>(dh));
    double sum = 0;
    for (int64_t e = 0; e < dh; ++e) sum += f[size_t(e)] = std::exp(q[size_t(hd * dh + e)]);
    for (double& x : f) x /= sum;
    return f;
  };
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    const T* x = rig.x.data() + b * n * d;
    const T* ctx = c.m > 0 ? rig.ctx.data() + b * m * d : x;
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(m)), V(static_cast<size_t>(m));
    for (int64_t t = 0; t < n; ++t) Q[size_t(t)] = linear(Wq, bq, x + t * d);
    for (int64_t s = 0; s < m; ++s) {
      K[size_t(s)] = linear(Wk, bk, ctx + s * d);
      V[size_t(s)] = linear(Wv, bv, ctx + s * d);
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> O(static_cast<size_t>(d), 0.0);
      for (int64_t hd = 0; hd < h; ++hd) {
        const std::vector<double> fq = no_projection ? softmax_entries(Q[size_t(t)], hd) : phi(Q[size_t(t)], hd);
        std::vector<double> colsum(static_cast<size_t>(dh), 0.0);  // no_projection, non-causal
        if (no_projection && !c.dims.causal)
          for (int64_t s = 0; s < m; ++s)
            if (c.mask.empty() || !c.mask[size_t(b * m + s)])
              for (int64_t e = 0; e < dh; ++e) colsum[size_t(e)] += std::exp(K[size_t(s)][size_t(hd * dh + e)]);
        std::vector<double> num(static_cast<size_t>(dh), 0.0);
        double den = 0;
        const int64_t last = c.dims.causal ? t : m - 1;  // causal: the explicit sum over s ≤ t
        for (int64_t s = 0; s <= last; ++s) {
          if (!c.mask.empty() && c.mask[size_t(b * m + s)]) continue;
          std::vector<double> fk(static_cast<size_t>(mf));
          if (no_projection)
            for (int64_t e = 0; e < dh; ++e)
              fk[size_t(e)] = std::exp(K[size_t(s)][size_t(hd * dh + e)]) / (c.dims.causal ? 1.0 : colsum[size_t(e)]);
          else
            fk = phi(K[size_t(s)], hd);
          double w = 0;
          for (int64_t j = 0; j < mf; ++j) w += fq[size_t(j)] * fk[size_t(j)];
          den += w;
          for (int64_t e = 0; e < dh; ++e) num[size_t(e)] += w * V[size_t(s)][size_t(hd * dh + e)];
        }
        for (int64_t e = 0; e < dh; ++e) O[size_t(hd * dh + e)] = den > 0 ? num[size_t(e)] / den : 0.0;
      }
      for (int64_t r = 0; r < d; ++r) {
        double acc = with_output ? bo[size_t(r)] : O[size_t(r)];
        if (with_output)
          for (int64_t e = 0; e < d; ++e) acc += Wo[size_t(r * d + e)] * O[size_t(e)];
        out[size_t((b * n + t) * d + r)] = acc;
      }
    }
  }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig); });
}

TEST(PerformerAttention, MatchesReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(pf_case(12, causal));                                  // a multiple of the chunk
    expect_matches_reference_both(pf_case(10, causal, kSmall, 12));                      // n < max_len, partial chunk
    expect_matches_reference_both(pf_case(3, causal, {{"chunk", 8}}, 8));                // n < chunk, default m_f
    expect_matches_reference_both(pf_case(13, causal, {{"chunk", 3}, {"features", 2}}));  // several chunks, m_f < d_h
    expect_matches_reference_both(with_mask(pf_case(11, causal, kSmall, 16), 6));
    expect_matches_reference_both(with_mask(pf_case(9, causal, with(kSmall, {{"qkv_bias", true}, {"seed", 5}})), 0));
    expect_matches_reference_both(pf_case(8, causal, {{"chunk", 1}, {"features", 16}}, 0, 1));  // one head, chunk 1
    expect_matches_reference_both(pf_case(13, causal, {{"chunk", 4}, {"features", 40}}, 16, 4, 16));
    expect_matches_reference_both(pf_case(40, causal, json::object()));  // defaults
    expect_matches_reference_both(with_mask(cross(pf_case(6, false), 9), 4));
    expect_matches_reference_both(cross(pf_case(7, false, with(kSmall, {{"qkv_bias", true}})), 3));
    // Large enough for the parallel paths and full register blocks.
    expect_matches_reference_both(with_mask(pf_case(150, causal, {{"chunk", 32}}, 160, 2, 64), 100));
  }
  expect_matches_reference_both(cross(pf_case(8, true), 8));  // causal cross-attention (m = n)
  // The other feature draws (the reference reads W from the layer; PerformerFeatures checks the draws).
  // Generalized attention (ReLU features).
  const json relu = with(kSmall, {{"generalized_attention", true}});
  for (bool causal : {false, true}) {
    expect_matches_reference_both(pf_case(12, causal, relu));
    expect_matches_reference_both(with_mask(pf_case(11, causal, with(relu, {{"kernel_epsilon", 0.1}}), 16), 6));
    expect_matches_reference_both(with_mask(pf_case(150, causal, {{"chunk", 32}, {"generalized_attention", true}}, 160, 2, 64), 100));
  }
  expect_matches_reference_both(with_mask(cross(pf_case(6, false, relu), 9), 4));
  // no_projection (no random features; m_f = d_h).
  const json plain = {{"chunk", 4}, {"no_projection", true}};
  for (bool causal : {false, true}) {
    expect_matches_reference_both(pf_case(12, causal, plain));
    expect_matches_reference_both(with_mask(pf_case(11, causal, plain, 16), 6));
    expect_matches_reference_both(with_mask(pf_case(150, causal, {{"chunk", 32}, {"no_projection", true}}, 160, 2, 64), 100));
  }
  expect_matches_reference_both(with_mask(cross(pf_case(6, false, plain), 9), 4));
  for (bool causal : {false, true}) {
    expect_matches_reference_both(with_mask(pf_case(11, causal, with(kSmall, {{"ortho_features", false}}), 16), 6));
    expect_matches_reference_both(with_mask(pf_case(11, causal, with(kSmall, {{"ortho_scaling", 1}}), 16), 6));
  }
}

// ---- gradients -----------------------------------------------------------------------------------

TEST(PerformerAttention, GradientsMatchFiniteDifferences) {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(pf_case(12, causal));
    cases.push_back(with_mask(pf_case(10, causal, kSmall, 12), 5));  // padding, n < max_len
    cases.push_back(pf_case(9, causal, with(kSmall, {{"qkv_bias", true}, {"seed", 3}, {"redraw_every", 0}})));
    cases.push_back(pf_case(3, causal, {{"chunk", 8}, {"features", 9}}));   // n < chunk, two blocks of W
    cases.push_back(pf_case(13, causal, {{"chunk", 3}, {"features", 2}}));  // several chunks, m_f < d_h
    cases.push_back(pf_case(6, causal, {{"chunk", 1}}, 0, 1));
  }
  cases.push_back(with_mask(cross(pf_case(5, false, with(kSmall, {{"qkv_bias", true}})), 7), 3));
  cases.push_back(cross(pf_case(6, true), 6));
  cases.push_back(with_mask(pf_case(10, false, with(kSmall, {{"ortho_features", false}}), 12), 5));
  cases.push_back(pf_case(9, true, with(kSmall, {{"ortho_scaling", 1}})));
  for (bool causal : {false, true}) {
    cases.push_back(with_mask(pf_case(10, causal, with(kSmall, {{"generalized_attention", true}}), 12), 5));
    cases.push_back(pf_case(9, causal, with(kSmall, {{"generalized_attention", true}, {"kernel_epsilon", 0.0}})));
  }
  cases.push_back(cross(pf_case(6, false, with(kSmall, {{"generalized_attention", true}})), 8));
  for (bool causal : {false, true})
    cases.push_back(with_mask(pf_case(10, causal, {{"chunk", 4}, {"no_projection", true}}, 12), 5));
  cases.push_back(with_mask(cross(pf_case(5, false, {{"chunk", 4}, {"no_projection", true}}), 7), 3));
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);  // also: the fixed `features` receive no gradient
  }
}

TEST(PerformerAttention, ResultsDoNotDependOnTheThreadCount) {
  for (bool causal : {false, true})
    for (const json& o : {json{{"chunk", 16}}, json{{"chunk", 16}, {"generalized_attention", true}},
                          json{{"chunk", 16}, {"no_projection", true}}}) {
      const AttentionCase c = with_mask(pf_case(300, causal, o, 300, 4, 64), 200);
      SCOPED_TRACE(describe(c));
      test::expect_results_independent_of_threads(c);
    }
}

// ---- causality -----------------------------------------------------------------------------------

std::vector<AttentionCase> causal_cases() {
  return {pf_case(12, true), with_mask(pf_case(11, true, kSmall, 16), 6), pf_case(9, true, {{"chunk", 3}, {"features", 5}}),
          pf_case(5, true, {{"chunk", 8}}), with_mask(pf_case(11, true, with(kSmall, {{"generalized_attention", true}}), 16), 6),
          with_mask(pf_case(11, true, {{"chunk", 4}, {"no_projection", true}}, 16), 6)};
}

// Outputs up to t with and without a change of the later inputs: bitwise equal (no stabiliser reaches
// back: a key's is its own, the core's running max covers the keys up to t).
TEST(PerformerAttention, CausalOutputIgnoresTheFuture) {
  for (const AttentionCase& c : causal_cases()) {
    const int64_t d = c.dims.d_model, n = c.n;
    for (int64_t t = 0; t < n - 1; ++t) {
      SCOPED_TRACE(str_cat(describe(c), " t=", t));
      AttentionRig<double> a(c), b(c);
      for (int64_t s = 0; s < c.B; ++s)
        for (int64_t u = t + 1; u < n; ++u)
          for (int64_t e = 0; e < d; ++e) b.x[size_t((s * n + u) * d + e)] += 0.5 + 0.3 * double(e);
      a.forward(c);
      b.forward(c);
      double worst = 0, later = 0;
      for (int64_t s = 0; s < c.B; ++s)
        for (int64_t u = 0; u < n; ++u)
          for (int64_t e = 0; e < d; ++e) {
            const size_t i = size_t((s * n + u) * d + e);
            if (u <= t)
              worst = std::max(worst, std::abs(a.out[i] - b.out[i]) / std::max(1e-3, std::abs(a.out[i])));
            else
              later = std::max(later, std::abs(a.out[i] - b.out[i]));
          }
      EXPECT_EQ(worst, 0.0);
      EXPECT_GT(later, 1e-6);  // the change does reach the later outputs
    }
  }
}

TEST(PerformerAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : causal_cases()) test::expect_causal_jacobian_is_zero_above_the_diagonal(c);
}

TEST(PerformerAttention, ShorterCausalSequenceGivesTheSamePrefixBitwise) {
  for (auto [chunk, full_n, part_n] : {std::tuple<int64_t, int64_t, int64_t>{4, 16, 7}, {4, 16, 8}, {8, 16, 3},
                                       {3, 20, 13}, {64, 100, 65}}) {
    SCOPED_TRACE(str_cat("chunk=", chunk, " n=", full_n, " prefix=", part_n));
    const json o = {{"chunk", chunk}, {"features", 11}};
    const test::PrefixOutputs<double> r =
        test::prefix_outputs<double>(pf_case(full_n, true, o), pf_case(part_n, true, o, full_n));
    for (size_t i = 0; i < r.part.size(); ++i)
      ASSERT_EQ(r.part[i], r.full[i]) << "element " << i;
  }
}

TEST(PerformerAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(pf_case(11, causal, kSmall, 12), 6);
    test::expect_padded_positions_have_no_influence<double>(c, test::nan_or(1e30));
  }
}

template <class T>
void expect_finite_at_large_inputs(const AttentionCase& c) {
  SCOPED_TRACE(describe(c));
  AttentionRig<T> rig(c, 2);
  for (T& e : rig.x) e *= T(30);  // q, k (and v) ×30: w·x spans hundreds, exp would overflow unstabilised
  rig.forward(c);
  for (T e : rig.out) ASSERT_TRUE(std::isfinite(double(e)));
  std::vector<T> dout(rig.out.size(), T(0.5)), dx(rig.x.size());
  rig.arena.zero_grad();
  rig.layer->backward(dout.data(), dx.data());
  for (T e : dx) ASSERT_TRUE(std::isfinite(double(e)));
  for (int64_t i = 0; i < rig.arena.numel(); ++i) ASSERT_TRUE(std::isfinite(double(rig.arena.grads()[i])));
}

TEST(PerformerAttention, LargeInputsGiveFiniteResults) {
  for (bool causal : {false, true})
    for (const AttentionCase& c : {pf_case(40, causal, {{"chunk", 8}}, 40, 2, 32), with_mask(pf_case(12, causal), 5),
                                   pf_case(64, causal, json::object(), 64, 1, 64)}) {
      expect_finite_at_large_inputs<float>(c);
      expect_finite_at_large_inputs<double>(c);
    }
}

TEST(PerformerAttention, IgnoresDropout) {
  AttentionCase c = pf_case(9, true), dropped = c;
  dropped.dims.dropout = 0.5;
  dropped.training = true;
  AttentionRig<double> a(c), b(dropped);
  a.forward(c);
  b.forward(dropped);
  EXPECT_EQ(a.out, b.out);
}

// ---- the kernel approximation --------------------------------------------------------------------

// Exact softmax attention O (B, n, d) in double from the rig's Q/K/V maps.
std::vector<double> softmax_reference(const AttentionCase& c, const AttentionRig<double>& rig) {
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h;
  auto W = [&](const char* name) { return rig.arena.value(rig.arena.find(name)); };
  const double *Wq = W("to_q.weight"), *Wk = W("to_k.weight"), *Wv = W("to_v.weight");
  std::vector<double> Q(size_t(B * n * d), 0.0), K = Q, V = Q, O = Q;
  for (int64_t row = 0; row < B * n; ++row)
    for (int64_t r = 0; r < d; ++r)
      for (int64_t e = 0; e < d; ++e) {
        const double x = rig.x[size_t(row * d + e)];
        Q[size_t(row * d + r)] += Wq[r * d + e] * x;
        K[size_t(row * d + r)] += Wk[r * d + e] * x;
        V[size_t(row * d + r)] += Wv[r * d + e] * x;
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hd = 0; hd < h; ++hd)
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> p(static_cast<size_t>(n));
        double mx = -INFINITY, sum = 0;
        for (int64_t s = 0; s < n; ++s) {
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e) dot += Q[size_t((b * n + t) * d + hd * dh + e)] * K[size_t((b * n + s) * d + hd * dh + e)];
          p[size_t(s)] = dot / std::sqrt(double(dh));
          mx = std::max(mx, p[size_t(s)]);
        }
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int64_t s = 0; s < n; ++s)
          for (int64_t e = 0; e < dh; ++e)
            O[size_t((b * n + t) * d + hd * dh + e)] += p[size_t(s)] / sum * V[size_t((b * n + s) * d + hd * dh + e)];
      }
  return O;
}

TEST(PerformerAttention, ApproximatesSoftmaxAttentionBetterWithMoreFeatures) {
  // The Q/K/V maps fixed (one initialisation seed), the output map set to the identity: the layer's
  // output is its attention output, compared with exact softmax attention for m_f = 16 ... 4096,
  // relative RMS error averaged over 8 feature draws. Measured (d_h = 16, n = 32, 2 heads, inputs
  // in [-1, 1]): 0.256, 0.124, 0.064, 0.033, 0.018 — halving for every 4× more features, FAVOR+'s
  // O(1/√m_f). (With inputs ×2 the estimator's variance, growing like e^{‖x+y‖²}, dominates: 0.79,
  // 0.56, 0.38, 0.26, 0.15 over 20 draws — still falling, but slowly and noisily.)
  const std::vector<int64_t> counts = {16, 64, 256, 1024, 4096};
  std::vector<double> errors;
  for (int64_t mf : counts) {
    double mean = 0;
    const int draws = 8;
    for (int seed = 0; seed < draws; ++seed) {
      AttentionCase c = pf_case(32, false, {{"features", mf}, {"seed", seed}}, 32, 2, 32);
      c.B = 1;
      AttentionRig<double> rig(c, 21);
      double* Wo = rig.arena.value(rig.arena.find("to_out.weight"));
      std::fill(Wo, Wo + 32 * 32, 0.0);
      for (int64_t i = 0; i < 32; ++i) Wo[i * 32 + i] = 1;
      std::fill_n(rig.arena.value(rig.arena.find("to_out.bias")), 32, 0.0);
      rig.forward(c);
      const std::vector<double> exact = softmax_reference(c, rig);
      double num = 0, den = 0;
      for (size_t i = 0; i < exact.size(); ++i) {
        num += (rig.out[i] - exact[i]) * (rig.out[i] - exact[i]);
        den += exact[i] * exact[i];
      }
      mean += std::sqrt(num / den) / draws;
    }
    errors.push_back(mean);
  }
  std::string report;
  for (size_t i = 0; i < counts.size(); ++i) report += str_cat(" m_f=", counts[i], ": ", errors[i]);
  RecordProperty("relative_errors", report);
  std::printf("performer vs softmax, relative RMS error:%s\n", report.c_str());
  for (size_t i = 1; i < errors.size(); ++i) EXPECT_LT(errors[i], 0.8 * errors[i - 1]) << report;
  EXPECT_LT(errors.back(), errors.front() / 6) << report;
  EXPECT_LT(errors.back(), 0.03) << report;
}

// ---- the random features -------------------------------------------------------------------------

TEST(PerformerFeatures, OrthogonalBlocksWithGaussianRowNorms) {
  const int64_t dh = 16, m = 4096 + 7;  // a truncated last block
  std::vector<double> W(size_t(m * dh));
  performer_orthogonal_features(3, "layers.2.attn.", 5, m, dh, W.data());
  std::vector<double> norm(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) {
    double s = 0;
    for (int64_t e = 0; e < dh; ++e) s += W[size_t(j * dh + e)] * W[size_t(j * dh + e)];
    norm[size_t(j)] = std::sqrt(s);
  }
  double worst = 0, across = 0;  // |cos| within a block; and between rows of two blocks
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = i + 1; j < std::min(m, i + dh + 1); ++j) {
      double dot = 0;
      for (int64_t e = 0; e < dh; ++e) dot += W[size_t(i * dh + e)] * W[size_t(j * dh + e)];
      const double cosine = std::abs(dot) / (norm[size_t(i)] * norm[size_t(j)]);
      if (i / dh == j / dh)
        worst = std::max(worst, cosine);
      else
        across = std::max(across, cosine);
    }
  EXPECT_LT(worst, 1e-12);
  EXPECT_GT(across, 0.3);  // independent blocks are not orthogonal to each other
  // Row norms: those of N(0, I_16) vectors, χ with 16 degrees of freedom: E‖w‖² = 16, Var = 32.
  double mean_sq = 0, mn = INFINITY, mx = 0;
  for (double r : norm) {
    mean_sq += r * r / double(m);
    mn = std::min(mn, r);
    mx = std::max(mx, r);
  }
  EXPECT_NEAR(mean_sq, 16.0, 0.5);
  EXPECT_LT(mn, 3.0);
  EXPECT_GT(mx, 5.0);  // not a constant √d_h
}

// ortho_features false: every entry an i.i.d. standard normal of the draw's stream; ortho_scaling 1:
// the orthogonal draw's rows rescaled to norm √d_h (performer-pytorch's scaling = 1).
TEST(PerformerFeatures, IidAndSqrtScaledDraws) {
  const int64_t dh = 8, m = 2000 + 3;
  std::vector<double> iid(size_t(m * dh)), orth(iid.size()), sqrtd(iid.size());
  performer_features(PerformerFeatureDraw::kIid, 4, "l.", 2, m, dh, iid.data());
  performer_features(PerformerFeatureDraw::kOrthogonal, 4, "l.", 2, m, dh, orth.data());
  performer_features(PerformerFeatureDraw::kOrthogonalSqrtD, 4, "l.", 2, m, dh, sqrtd.data());
  std::vector<double> plain(iid.size());
  performer_orthogonal_features(4, "l.", 2, m, dh, plain.data());
  EXPECT_EQ(orth, plain);
  const uint64_t stream = stream_id("l.features/draw-2");
  for (int64_t i = 0; i < m * dh; ++i) ASSERT_EQ(iid[size_t(i)], normal_f64(4, stream, uint64_t(i))) << i;
  double iid_worst = 0, mean_sq = 0;  // rows of one block are not orthogonal; E‖w‖² = d_h
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0, sq_orth = 0, sq_sqrtd = 0;
    for (int64_t e = 0; e < dh; ++e) {
      sq += iid[size_t(j * dh + e)] * iid[size_t(j * dh + e)];
      sq_orth += orth[size_t(j * dh + e)] * orth[size_t(j * dh + e)];
      sq_sqrtd += sqrtd[size_t(j * dh + e)] * sqrtd[size_t(j * dh + e)];
    }
    mean_sq += sq / double(m);
    ASSERT_NEAR(sq_sqrtd, double(dh), 1e-12) << j;
    for (int64_t e = 0; e < dh; ++e)  // the same direction as the orthogonal draw's row
      ASSERT_NEAR(sqrtd[size_t(j * dh + e)], orth[size_t(j * dh + e)] * std::sqrt(double(dh) / sq_orth), 1e-12);
    if (j % dh != 0) {
      double dot = 0, sq_prev = 0;
      for (int64_t e = 0; e < dh; ++e) {
        dot += iid[size_t(j * dh + e)] * iid[size_t((j - 1) * dh + e)];
        sq_prev += iid[size_t((j - 1) * dh + e)] * iid[size_t((j - 1) * dh + e)];
      }
      iid_worst = std::max(iid_worst, std::abs(dot) / std::sqrt(sq * sq_prev));
    }
  }
  EXPECT_GT(iid_worst, 0.5);
  EXPECT_NEAR(mean_sq, double(dh), 0.3);
  // The layer's parameter is draw 0 of its kind, and a redraw draws the same kind.
  ParamArena<double> arena;
  auto layer = make_attention<double>({"performer", {16, 2, 8, false, 0}, {{"features", 10}, {"ortho_features", false},
                                       {"redraw_every", 1}}, "p."}, arena);
  arena.allocate();
  arena.initialize(1);
  std::vector<double> want(size_t(10 * 8));
  performer_features(PerformerFeatureDraw::kIid, 0, "p.", 0, 10, 8, want.data());
  const int id = arena.find("p.features");
  EXPECT_EQ(std::vector<double>(arena.value(id), arena.value(id) + 80), want);
  layer->set_training_step(3);
  performer_features(PerformerFeatureDraw::kIid, 0, "p.", 3, 10, 8, want.data());
  EXPECT_EQ(std::vector<double>(arena.value(id), arena.value(id) + 80), want);
}

// no_projection's softmax of the keys over the positions: the kernels against their plain references
// (bitwise for any thread count: the sums run in position order), sums of 1, and a padded sample.
TEST(PerformerFeatures, ColumnSoftmaxMatchesItsReference) {
  const int64_t B = 2, m = 300, h = 3, r = 40;
  std::vector<double> phi = test::random_vector<double>(B * m * h * r, 4, 0, 1);
  for (int64_t e = 0; e < h * r; ++e) phi[size_t((B * m - 1) * h * r + e)] = 0;  // a padded key
  for (int64_t e = 0; e < m * h * r; ++e) phi[size_t(e)] = 0;                   // sample 0 all padded
  std::vector<double> y(phi.size()), yr(phi.size());
  column_softmax_forward(B, m, h, r, phi.data(), y.data());
  column_softmax_forward_ref(B, m, h, r, phi.data(), yr.data());
  LF_EXPECT_CLOSE(y.data(), yr.data(), int64_t(y.size()), 1e-14);
  for (int64_t e = 0; e < m * h * r; ++e) ASSERT_EQ(y[size_t(e)], 0.0);
  for (int64_t hd = 0; hd < h; ++hd)
    for (int64_t c = 0; c < r; ++c) {
      double sum = 0;
      for (int64_t s = 0; s < m; ++s) sum += y[size_t(((m + s) * h + hd) * r + c)];
      ASSERT_NEAR(sum, 1.0, 1e-12);
    }
  const std::vector<double> dy = test::random_vector<double>(int64_t(y.size()), 5);
  std::vector<double> du(y.size()), dur(y.size());
  column_softmax_backward(B, m, h, r, y.data(), dy.data(), du.data());
  column_softmax_backward_ref(B, m, h, r, y.data(), dy.data(), dur.data());
  LF_EXPECT_CLOSE(du.data(), dur.data(), int64_t(du.size()), 1e-12);
  std::vector<float> yf(y.size()), y1(y.size());
  const std::vector<float> pf = test::cast_vector<float>(phi);
  for (int threads : {1, 2, 3}) {
    const RuntimeScope scope(RuntimeOptions{threads});
    column_softmax_forward(B, m, h, r, pf.data(), yf.data());
    if (threads == 1) y1 = yf;
    EXPECT_EQ(yf, y1) << threads;
  }
}

TEST(PerformerFeatures, DrawsAreAPureFunctionOfSeedPrefixAndIndex) {
  const int64_t m = 20, dh = 8;
  auto draw = [&](uint64_t seed, const std::string& prefix, int64_t index) {
    std::vector<double> W(size_t(m * dh));
    performer_orthogonal_features(seed, prefix, index, m, dh, W.data());
    return W;
  };
  EXPECT_EQ(draw(1, "a.", 3), draw(1, "a.", 3));
  EXPECT_NE(draw(1, "a.", 3), draw(1, "a.", 4));
  EXPECT_NE(draw(1, "a.", 3), draw(2, "a.", 3));
  EXPECT_NE(draw(1, "a.", 3), draw(1, "b.", 3));
}

std::vector<float> expected_draw(uint64_t seed, const std::string& prefix, int64_t index, int64_t m, int64_t dh) {
  std::vector<double> W(size_t(m * dh));
  performer_orthogonal_features(seed, prefix, index, m, dh, W.data());
  return std::vector<float>(W.begin(), W.end());
}

std::vector<float> features_of(ParamArena<float>& arena, const std::string& name) {
  const int id = arena.find(name);
  EXPECT_GE(id, 0) << name;
  return std::vector<float>(arena.value(id), arena.value(id) + arena.info(id).numel);
}

TEST(PerformerFeatures, InitialisationIsDrawZeroAndTheHookRedrawsOnSchedule) {
  const std::string prefix = "layers.1.attn.";
  ParamArena<float> arena;
  auto layer = make_attention<float>({"performer", {16, 2, 8, false, 0}, {{"features", 12}, {"redraw_every", 3}, {"seed", 9}},
                                      prefix},
                                     arena);
  const ParamInfo& info = arena.info(arena.find(prefix + "features"));
  EXPECT_FALSE(info.trainable);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{12, 8}));
  arena.allocate();
  arena.initialize(77);  // the arena's seed does not matter: draw 0 of the option's seed
  EXPECT_EQ(features_of(arena, prefix + "features"), expected_draw(9, prefix, 0, 12, 8));
  for (int64_t step : {0, 1, 2, 3, 5, 6, 7, 30, 4, 0}) {
    layer->set_training_step(step);
    EXPECT_EQ(features_of(arena, prefix + "features"), expected_draw(9, prefix, step / 3, 12, 8)) << "step " << step;
  }
  EXPECT_NE(expected_draw(9, prefix, 0, 12, 8), expected_draw(9, prefix, 1, 12, 8));
  EXPECT_THROW(layer->set_training_step(-1), InvalidArgument);
  // redraw_every = 0: never redrawn.
  ParamArena<float> fixed;
  auto still = make_attention<float>({"performer", {16, 2, 8, false, 0}, {{"redraw_every", 0}}, ""}, fixed);
  fixed.allocate();
  fixed.initialize(1);
  const std::vector<float> w0 = features_of(fixed, "features");
  still->set_training_step(123456);
  EXPECT_EQ(features_of(fixed, "features"), w0);
}

// ---- model, trainer and checkpoints --------------------------------------------------------------

ModelConfig performer_model(int64_t redraw_every) {
  ModelConfig c;
  c.vocab_size = 260;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 32;
  c.max_len = 16;
  c.attention = {LayerAttention{"performer", {{"features", 10}, {"redraw_every", redraw_every}, {"seed", 4}}}};
  return c;
}

class PerformerTraining : public test::TempDirTest {
 protected:
  PerformerTraining() : TempDirTest("lf_performer") {}
  void SetUp() override {
    TempDirTest::SetUp();
    std::ofstream out(dir_ / "corpus.txt");
    for (int i = 0; i < 2000; ++i) out << (i % 3 ? "the cat sat on the mat. " : "a dog ran in the park. ");
  }
  TrainOptions options(const std::string& run) const {
    TrainOptions o = test::tiny_train_options(dir_, run);
    o.steps = 7;
    o.warmup_steps = 2;
    o.eval_batches = 2;
    return o;
  }
};

TEST_F(PerformerTraining, TrainerRedrawsAndAResumedRunMatches) {
  TrainOptions o = options("full");
  o.save_every = 3;
  o.keep_checkpoints = 5;  // step 3 must survive for the resume
  const TrainSummary full = train(performer_model(2), o, false);
  // The last step was step 6 (0-based): draw 3 in every layer, saved in the checkpoint.
  const SafeTensorsFile file = SafeTensorsFile::read(full.checkpoint + "/model.safetensors");
  for (int layer = 0; layer < 2; ++layer) {
    const std::string prefix = str_cat("layers.", layer, ".attn.");
    EXPECT_EQ(to_vector<float>(file.get(prefix + "features")), expected_draw(4, prefix, 3, 10, 8)) << prefix;
  }
  // Resumed from step 3 (saved with draw 1): the trainer redraws as the uninterrupted run did.
  const fs::path resumed = dir_ / "resumed";
  fs::create_directories(resumed / "checkpoints");
  fs::copy(fs::path(o.run_dir) / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003",
           fs::copy_options::recursive);
  const SafeTensorsFile at3 =
      SafeTensorsFile::read((resumed / "checkpoints" / "step-00000003" / "model.safetensors").string());
  EXPECT_EQ(to_vector<float>(at3.get("layers.0.attn.features")), expected_draw(4, "layers.0.attn.", 1, 10, 8));
  TrainOptions r = o;
  r.run_dir = resumed.string();
  const TrainSummary cont = train(ModelConfig{}, r, /*resume=*/true);
  EXPECT_EQ(cont.last_loss, full.last_loss);
  const SafeTensorsFile b = SafeTensorsFile::read(cont.checkpoint + "/model.safetensors");
  ASSERT_EQ(file.names(), b.names());
  for (const std::string& name : file.names()) {
    const StoredTensor ta = file.get(name), tb = b.get(name);
    ASSERT_EQ(ta.nbytes, tb.nbytes);
    EXPECT_EQ(0, std::memcmp(ta.data, tb.data, ta.nbytes)) << name << " differs after resume";
  }
}

TEST_F(PerformerTraining, CheckpointKeepsTheFeatures) {
  const ModelConfig config = performer_model(2);
  ParamArena<float> arena;
  Model<float> model(config, arena);
  arena.allocate();
  arena.initialize(1);
  model.set_training_step(7);  // draw 3
  const std::vector<float> drawn = features_of(arena, "layers.1.attn.features");
  ASSERT_EQ(drawn, expected_draw(4, "layers.1.attn.", 3, 10, 8));
  const std::string dir = (dir_ / "ckpt").string();
  save_checkpoint(dir, config, arena, nullptr, json());
  ParamArena<float> back;
  Model<float> restored(read_checkpoint_config(dir), back);
  back.allocate();
  back.initialize(1);
  ASSERT_NE(features_of(back, "layers.1.attn.features"), drawn);  // draw 0 before loading
  load_checkpoint_weights(dir, back, nullptr);
  EXPECT_EQ(features_of(back, "layers.1.attn.features"), drawn);
  EXPECT_EQ(std::vector<float>(back.values(), back.values() + back.numel()),
            std::vector<float>(arena.values(), arena.values() + arena.numel()));
}

// ---- memory --------------------------------------------------------------------------------------

TEST(PerformerAttention, LongSequenceKeepsNeitherScoresNorPerPositionStates) {
  // n = 16384, d = d_h = 64, one head, m_f = 266: n×n floats are 1 GiB and per-position m_f×d_h causal
  // states n·m_f·d_h floats = 1.1 GiB; the layer keeps O(n·(d + m_f)): φq, φk and their gradients are
  // 17 MiB each.
  const int64_t n = 16384, d = 64;
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    ParamArena<float> arena;
    auto layer = make_attention<float>({"performer", {d, 1, n, causal, 0}, json::object(), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * 266 * d);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    LF_SKIP_WITHOUT_PROC_STATUS();
    test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(256) << 20,
                                       causal ? "causal_peak_rss_growth_bytes" : "peak_rss_growth_bytes");
  }
}

// ---- registry and configurations -----------------------------------------------------------------

TEST(PerformerAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("performer").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_TRUE(s.cross_attention);
  const json defaults = {{"features", 266},        {"redraw_every", 1000}, {"seed", 0}, {"qkv_bias", false},
                         {"ortho_features", true}, {"ortho_scaling", 0},   {"generalized_attention", false},
                         {"no_projection", false}, {"kernel_fn", "relu"},    {"kernel_epsilon", 1e-3},
                         {"chunk", 64}};
  EXPECT_EQ(validate_attention({"performer", {512, 8, 4096, true, 0.1}, json::object(), ""}), defaults);
  // int(d_h · ln d_h), at least 1: d_h = 4 → 5, 2 → 1, 1 → 1, 16 → 44.
  EXPECT_EQ(validate_attention({"performer", {8, 2, 8, false, 0}, json::object(), ""})["features"], 5);
  EXPECT_EQ(validate_attention({"performer", {8, 4, 8, false, 0}, json::object(), ""})["features"], 1);
  EXPECT_EQ(validate_attention({"performer", {8, 8, 8, false, 0}, json::object(), ""})["features"], 1);
  EXPECT_EQ(validate_attention({"performer", {32, 2, 8, false, 0}, json::object(), ""})["features"], 44);
  ParamArena<float> arena;
  make_attention<float>({"performer", {8, 2, 10, false, 0}, {{"qkv_bias", true}}, "l."}, arena);
  for (const char* name : {"l.to_q.weight", "l.to_k.bias", "l.to_v.weight", "l.to_out.weight", "l.to_out.bias", "l.features"})
    EXPECT_GE(arena.find(name), 0) << name;
  EXPECT_EQ(arena.count(), 9);
}

TEST(PerformerAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options) {
    return make_attention<float>({"performer", {8, 2, 8, false, 0}, options, ""}, arena);
  };
  EXPECT_THROW(make({{"features", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"features", -3}}), InvalidArgument);
  EXPECT_THROW(make({{"features", 100000}}), InvalidArgument);
  EXPECT_THROW(make({{"features", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"redraw_every", -1}}), InvalidArgument);
  EXPECT_THROW(make({{"redraw_every", "often"}}), InvalidArgument);
  EXPECT_THROW(make({{"seed", -1}}), InvalidArgument);
  EXPECT_THROW(make({{"chunk", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"qkv_bias", "yes"}}), InvalidArgument);
  EXPECT_THROW(make({{"kernel", "relu"}}), InvalidArgument);  // unknown option
  EXPECT_THROW(make({{"ortho_features", "no"}}), InvalidArgument);
  EXPECT_THROW(make({{"ortho_scaling", 2}}), InvalidArgument);
  EXPECT_THROW(make({{"ortho_scaling", 1}, {"ortho_features", false}}), InvalidArgument);
  EXPECT_THROW(make({{"generalized_attention", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"kernel_fn", "gelu"}}), InvalidArgument);
  EXPECT_THROW(make({{"kernel_epsilon", -0.1}}), InvalidArgument);
  EXPECT_THROW(make({{"kernel_epsilon", "small"}}), InvalidArgument);
  EXPECT_THROW(make({{"no_projection", "yes"}}), InvalidArgument);
  EXPECT_THROW(make({{"no_projection", true}, {"generalized_attention", true}}), InvalidArgument);
  try {
    make({{"features", 0}});
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("features"), std::string::npos) << e.what();
  }
  AttentionCase small = pf_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = pf_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
}

}  // namespace
}  // namespace lf
