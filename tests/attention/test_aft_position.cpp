// aft_full and aft_local (Attention Free Transformer): equal to a plain double reference of the
// definition (loops over t, t', c, the bias read from `pos_bias.*` by name, a log-sum-exp per (t, c))
// for every option — bias_rank 0 and > 0, windows 1, small and ≥ n, causal, key padding, n < max_len,
// more rows than one block; finite-difference gradients in double for every option, also through the
// exact (underflow) path; K of ±1000 and large biases give the stable reference's finite outputs;
// causality (outputs ignore later inputs bit for bit, the Jacobian above the diagonal is exactly zero,
// a shorter causal sequence gives bit for bit the same prefix in double); aft_local with a window ≥ n
// equals aft_full with the same bias; results independent of the thread count; no n×n buffer at long
// n; the registry, defaults and bad configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <type_traits>
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

AttentionCase aft_case(const std::string& kind, int64_t n, bool causal, json options = json::object(),
                       int64_t max_len = 0, int64_t d = 8, int64_t B = 2) {
  AttentionCase c;
  c.kind = kind;
  c.dims = AttentionDims{d, 2, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

// The bias starts near 0 (the unfactorised one at exactly 0): draw it from ±scale so that it matters.
template <class T>
void randomise_bias(ParamArena<T>& arena, double scale, uint64_t seed = 21) {
  for (const char* name : {"pos_bias.u", "pos_bias.v", "pos_bias.w", "pos_bias.band"}) {
    const int id = arena.find(name);
    if (id < 0) continue;
    const auto r = test::random_vector<double>(arena.info(id).numel, seed++, -scale, scale);
    std::copy(r.begin(), r.end(), arena.value(id));
  }
}

// randomise_bias(1.0) as the `prepare` of the shared checks.
const auto random_bias = [](auto& rig) { randomise_bias(rig.arena, 1.0); };

// Inputs growing along the sequence, so that the running maximum of K keeps growing across the row
// blocks (the causal rescale of the earlier blocks' sums is then not 1).
template <class T>
void grow_inputs(std::vector<T>& x, const AttentionCase& c) {
  const int64_t d = c.dims.d_model;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t e = 0; e < d; ++e) x[size_t((b * c.n + t) * d + e)] *= T(0.2 + 0.05 * double(t));
}

// ---- the reference ------------------------------------------------------------------------------

// The layer's definition in plain loops, in double, from the rig's parameters and input.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const ParamArena<T>& arena, const std::vector<T>& xin) {
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const bool local = c.kind == "aft_local", causal = c.dims.causal;
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, L = c.dims.max_len;
  const int64_t rank = o.at("bias_rank").get<int64_t>(), s = local ? o.at("window").get<int64_t>() : 0;
  const auto Wq = test::param_values(arena, "to_q.weight"), Wk = test::param_values(arena, "to_k.weight"), Wv = test::param_values(arena, "to_v.weight"),
             Wo = test::param_values(arena, "to_out.weight"), bq = test::param_values(arena, "to_q.bias"), bk = test::param_values(arena, "to_k.bias"),
             bv = test::param_values(arena, "to_v.bias"), bo = test::param_values(arena, "to_out.bias"), U = test::param_values(arena, "pos_bias.u"),
             P = test::param_values(arena, "pos_bias.v"), Wfull = test::param_values(arena, "pos_bias.w"), band = test::param_values(arena, "pos_bias.band");
  // w̃_tt': the factorised or stored bias; aft_local: 0 outside |t − t'| < s.
  auto bias = [&](int64_t t, int64_t u) {
    if (local && std::abs(t - u) >= s) return 0.0;
    if (rank > 0) {
      double acc = 0;
      for (int64_t r = 0; r < rank; ++r) acc += U[size_t(t * rank + r)] * P[size_t(u * rank + r)];
      return acc;
    }
    if (!local) return Wfull[size_t(t * L + u)];
    const int64_t width = causal ? s : 2 * s - 1;
    return band[size_t(t * width + (u - t + s - 1))];
  };
  auto linear = [&](const std::vector<double>& W, const std::vector<double>& b, const double* x) {
    return test::affine(W, b, x, d, d);
  };
  std::vector<double> out(static_cast<size_t>(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(n)), V(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> x(static_cast<size_t>(d));
      for (int64_t e = 0; e < d; ++e) x[size_t(e)] = double(xin[size_t((b * n + t) * d + e)]);
      Q[size_t(t)] = linear(Wq, bq, x.data());
      K[size_t(t)] = linear(Wk, bk, x.data());
      V[size_t(t)] = linear(Wv, bv, x.data());
    }
    auto visible = [&](int64_t t, int64_t u) {
      return (c.mask.empty() || !c.mask[size_t(b * n + u)]) && (!causal || u <= t);
    };
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> Y(static_cast<size_t>(d), 0.0);
      for (int64_t ch = 0; ch < d; ++ch) {
        double mx = -INFINITY;
        for (int64_t u = 0; u < n; ++u)
          if (visible(t, u)) mx = std::max(mx, K[size_t(u)][size_t(ch)] + bias(t, u));
        if (mx == -INFINITY) continue;  // no visible key: 0
        double num = 0, den = 0;
        for (int64_t u = 0; u < n; ++u) {
          if (!visible(t, u)) continue;
          const double e = std::exp(K[size_t(u)][size_t(ch)] + bias(t, u) - mx);
          num += e * V[size_t(u)][size_t(ch)];
          den += e;
        }
        Y[size_t(ch)] = num / den / (1 + std::exp(-Q[size_t(t)][size_t(ch)]));
      }
      const std::vector<double> y = linear(Wo, bo, Y.data());
      std::copy(y.begin(), y.end(), out.begin() + (b * n + t) * d);
    }
  }
  return out;
}

// With random biases (and, growing, inputs that grow along the sequence); float within 3e-5.
void expect_matches_reference_both(const AttentionCase& c, bool growing = false) {
  test::expect_matches_reference_both(
      c, [&](const auto& rig) { return reference_forward(c, rig.arena, rig.x); },
      [&](auto& rig) {
        randomise_bias(rig.arena, 1.0);
        if (growing) grow_inputs(rig.x, c);
      },
      3e-5);
}

TEST(AftAttention, FullMatchesReference) {
  for (bool causal : {false, true}) {
    for (int64_t rank : {0, 1, 3}) {
      const json o = {{"bias_rank", rank}};
      expect_matches_reference_both(aft_case("aft_full", 12, causal, o));
      expect_matches_reference_both(aft_case("aft_full", 9, causal, o, 12));  // n < max_len
      expect_matches_reference_both(with_mask(aft_case("aft_full", 11, causal, o, 16), 6));
      expect_matches_reference_both(with_mask(aft_case("aft_full", 12, causal, o), 0));
    }
    expect_matches_reference_both(aft_case("aft_full", 7, causal));                         // default rank (= max_len)
    expect_matches_reference_both(aft_case("aft_full", 1, causal, {{"bias_rank", 1}}, 4));  // one position
    expect_matches_reference_both(aft_case("aft_full", 12, causal, {{"qkv_bias", true}, {"bias_rank", 2}}));
    // Several row blocks (R = 64): the causal GEMM over earlier blocks and its rescale.
    expect_matches_reference_both(with_mask(aft_case("aft_full", 150, causal, {{"bias_rank", 4}}, 160), 100));
    expect_matches_reference_both(aft_case("aft_full", 130, causal, {{"bias_rank", 0}}, 130, 16, 1));
    expect_matches_reference_both(aft_case("aft_full", 200, causal, {{"bias_rank", 2}}, 200, 8, 2), true);
  }
}

TEST(AftAttention, LocalMatchesReference) {
  for (bool causal : {false, true}) {
    for (int64_t rank : {0, 2}) {
      for (int64_t window : {1, 2, 3, 5, 12}) {  // 12: ≥ n, every key in the window
        const json o = {{"bias_rank", rank}, {"window", window}};
        expect_matches_reference_both(aft_case("aft_local", 12, causal, o));
        expect_matches_reference_both(aft_case("aft_local", 9, causal, o, 12));  // n < max_len
        expect_matches_reference_both(with_mask(aft_case("aft_local", 11, causal, o, 16), 6));
        expect_matches_reference_both(with_mask(aft_case("aft_local", 12, causal, o), 0));
      }
    }
    expect_matches_reference_both(aft_case("aft_local", 10, causal));  // defaults: window = rank = max_len
    expect_matches_reference_both(aft_case("aft_local", 12, causal, {{"qkv_bias", true}, {"window", 4}}));
    expect_matches_reference_both(
        with_mask(aft_case("aft_local", 150, causal, {{"window", 7}, {"bias_rank", 3}}, 160), 90));
    expect_matches_reference_both(aft_case("aft_local", 140, causal, {{"window", 40}, {"bias_rank", 0}}, 140, 16, 1));
    expect_matches_reference_both(aft_case("aft_local", 200, causal, {{"window", 3}, {"bias_rank", 2}}, 200, 8, 2),
                                  true);
  }
}

// ---- gradients ----------------------------------------------------------------------------------

// check_attention_gradients with the bias drawn from ±bias_scale first, and an optional change to
// the parameters and input (`setup`) before the check.
template <class Setup>
void check_gradients(const AttentionCase& c, double bias_scale, const Setup& setup, double tol = 1e-6) {
  SCOPED_TRACE(describe(c));
  test::check_attention_gradients(c, tol, [&](AttentionRig<double>& rig) {
    for (const ParamInfo& p : rig.arena.params()) EXPECT_TRUE(p.trainable) << p.name;  // every one is checked
    randomise_bias(rig.arena, bias_scale);
    setup(rig);
  });
}
void check_gradients(const AttentionCase& c, double bias_scale = 1.0) {
  check_gradients(c, bias_scale, [](AttentionRig<double>&) {});
}

TEST(AftAttention, FullGradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    check_gradients(aft_case("aft_full", 9, causal, {{"bias_rank", 0}}));
    check_gradients(aft_case("aft_full", 9, causal, {{"bias_rank", 3}}));
    check_gradients(with_mask(aft_case("aft_full", 8, causal, {{"bias_rank", 2}}, 11), 5));  // mask, n < max_len
    check_gradients(with_mask(aft_case("aft_full", 7, causal, {{"bias_rank", 0}}, 9), 0));
    check_gradients(aft_case("aft_full", 6, causal, {{"bias_rank", 1}, {"qkv_bias", true}}));
    const AttentionCase blocks = aft_case("aft_full", 70, causal, {{"bias_rank", 1}}, 70, 4, 1);  // two row blocks
    check_gradients(blocks, 2.0);
    check_gradients(blocks, 1.0, [&](AttentionRig<double>& rig) { grow_inputs(rig.x, blocks); });
  }
}

TEST(AftAttention, LocalGradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    for (int64_t window : {1, 3, 9}) {
      check_gradients(aft_case("aft_local", 9, causal, {{"bias_rank", 0}, {"window", window}}));
      check_gradients(aft_case("aft_local", 9, causal, {{"bias_rank", 2}, {"window", window}}));
    }
    check_gradients(with_mask(aft_case("aft_local", 8, causal, {{"bias_rank", 2}, {"window", 2}}, 11), 5));
    check_gradients(with_mask(aft_case("aft_local", 9, causal, {{"bias_rank", 0}, {"window", 4}}, 10), 3));
    check_gradients(aft_case("aft_local", 7, causal, {{"window", 2}, {"qkv_bias", true}}));
    const AttentionCase blocks = aft_case("aft_local", 70, causal, {{"bias_rank", 1}, {"window", 5}}, 70, 4, 1);
    check_gradients(blocks, 2.0);
    check_gradients(blocks, 1.0, [&](AttentionRig<double>& rig) { grow_inputs(rig.x, blocks); });
  }
}

// The separable shift underflows when the largest K of a channel and the largest bias of a row sit
// on different keys more than the exponent range apart: key 0's K is about −1000 and its bias
// +1000 for every row. Those (t, c) take the exact path; it matches the reference and its gradients
// match finite differences (double, where the shifted terms underflow past e^−745).
template <class T>
void make_key0_extreme(AttentionRig<T>& rig, const AttentionCase& c) {
  const int64_t d = c.dims.d_model, n = c.n, L = c.dims.max_len;
  ParamArena<T>& a = rig.arena;
  T* wk = a.value(a.find("to_k.weight"));
  for (int64_t r = 0; r < d; ++r) wk[r * d] = T(1);  // K_tc = x_t0 + …
  for (int64_t b = 0; b < c.B; ++b) rig.x[size_t(b * n * d)] = T(-1000);
  const bool local = c.kind == "aft_local";
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const int64_t rank = o.at("bias_rank").get<int64_t>();
  if (rank > 0) {  // w_t0 = U_t · V_0 = 1000 + small
    T* U = a.value(a.find("pos_bias.u"));
    T* P = a.value(a.find("pos_bias.v"));
    for (int64_t t = 0; t < L; ++t) U[t * rank] = T(std::sqrt(1000.0));
    P[0] = T(std::sqrt(1000.0));
    for (int64_t t = 1; t < L; ++t) P[t * rank] = T(0);
  } else if (!local) {
    T* W = a.value(a.find("pos_bias.w"));
    for (int64_t t = 0; t < L; ++t) W[t * L] = T(1000);
  } else {
    const int64_t s = o.at("window").get<int64_t>(), width = c.dims.causal ? s : 2 * s - 1;
    T* band = a.value(a.find("pos_bias.band"));
    for (int64_t t = 0; t < std::min(s, L); ++t) band[t * width + (s - 1 - t)] = T(1000);  // w_t0, |t| < s
  }
}

std::vector<AttentionCase> extreme_cases() {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(aft_case("aft_full", 8, causal, {{"bias_rank", 0}}));
    cases.push_back(aft_case("aft_full", 8, causal, {{"bias_rank", 2}}));
    cases.push_back(with_mask(aft_case("aft_full", 7, causal, {{"bias_rank", 0}}, 9), 0));
    cases.push_back(aft_case("aft_local", 8, causal, {{"bias_rank", 0}, {"window", 3}}));
    cases.push_back(aft_case("aft_local", 8, causal, {{"bias_rank", 0}, {"window", 8}}));
    cases.push_back(aft_case("aft_local", 8, causal, {{"bias_rank", 2}, {"window", 8}}));
  }
  return cases;
}

TEST(AftAttention, ExactPathMatchesReferenceAndFiniteDifferences) {
  for (const AttentionCase& c : extreme_cases()) {
    SCOPED_TRACE(describe(c));
    for (int precision : {64, 32}) {
      std::vector<double> out, ref;
      if (precision == 64) {
        AttentionRig<double> rig(c, 3);
        randomise_bias(rig.arena, 0.5);
        make_key0_extreme(rig, c);
        rig.forward(c);
        out = rig.out;
        ref = reference_forward(c, rig.arena, rig.x);
      } else {
        AttentionRig<float> rig(c, 3);
        randomise_bias(rig.arena, 0.5);
        make_key0_extreme(rig, c);
        rig.forward(c);
        out = test::cast_vector<double>(rig.out);
        ref = reference_forward(c, rig.arena, rig.x);
      }
      for (double e : out) ASSERT_TRUE(std::isfinite(e));
      LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(ref.size()),
                      precision == 64 ? 1e-12 : 5e-4);  // float: K ≈ −1000 carries 6·10⁻⁵ of rounding
    }
    // Key 0 dominates (K + w ≈ 0 against K ≈ 0 elsewhere), so the test exercises both paths. tol 1e-5
    // of each entry: the extreme keys' third derivative sets the central differences' own error.
    check_gradients(
        c, 0.5, [&](AttentionRig<double>& rig) { make_key0_extreme(rig, c); }, 1e-5);
  }
}

TEST(AftAttention, LargeKeysAndBiasesStayFinite) {
  // K entries about ±1000 and biases up to ±400: exp overflows without the shifts.
  for (const std::string kind : {"aft_full", "aft_local"})
    for (bool causal : {false, true})
      for (int64_t rank : {0, 3}) {
        json o = {{"bias_rank", rank}};
        if (kind == "aft_local") o["window"] = 4;
        AttentionCase c = with_mask(aft_case(kind, 90, causal, o, 96, 8), 40);
        SCOPED_TRACE(describe(c));
        auto prepare = [&](auto& rig) {
          using T = std::decay_t<decltype(rig.x[0])>;
          ParamArena<T>& a = rig.arena;
          T* wk = a.value(a.find("to_k.weight"));
          const int64_t d = c.dims.d_model;
          for (int64_t e = 0; e < d * d; ++e)
            wk[e] = T(e % 3 == 0 ? 1000.0 / 3 : e % 3 == 1 ? -1000.0 / 3 : 0.0) * wk[e] / std::abs(wk[e]);
          randomise_bias(a, rank > 0 ? std::sqrt(400.0 / 3) : 400.0);
        };
        AttentionRig<double> rd(c, 5);
        AttentionRig<float> rf(c, 5);
        prepare(rd);
        prepare(rf);
        rd.forward(c);
        rf.forward(c);
        const std::vector<double> ref_d = reference_forward(c, rd.arena, rd.x);
        const std::vector<double> ref_f = reference_forward(c, rf.arena, rf.x);
        double kmax = 0;  // the test does reach the overflow range
        const auto Wk = test::param_values(rd.arena, "to_k.weight");
        for (int64_t t = 0; t < c.n; ++t)
          for (int64_t r = 0; r < c.dims.d_model; ++r) {
            double k = 0;
            for (int64_t e = 0; e < c.dims.d_model; ++e)
              k += Wk[size_t(r * c.dims.d_model + e)] * rd.x[size_t(t * c.dims.d_model + e)];
            kmax = std::max(kmax, std::abs(k));
          }
        EXPECT_GT(kmax, 700.0);
        LF_EXPECT_CLOSE(rd.out.data(), ref_d.data(), int64_t(ref_d.size()), 1e-12);
        LF_EXPECT_CLOSE(rf.out.data(), ref_f.data(), int64_t(ref_f.size()), 5e-4);  // float K ≈ 1000: 6·10⁻⁵ rounding
        for (float e : rf.out) ASSERT_TRUE(std::isfinite(e));
        std::vector<float> dx(rf.x.size()), dout(rf.out.size(), 0.01f);
        rf.layer->backward(dout.data(), dx.data());
        for (float e : dx) ASSERT_TRUE(std::isfinite(e));
        for (int64_t i = 0; i < rf.arena.numel(); ++i) ASSERT_TRUE(std::isfinite(rf.arena.grads()[i]));
      }
}

// ---- causality ----------------------------------------------------------------------------------

std::vector<AttentionCase> causal_cases() {
  return {aft_case("aft_full", 12, true, {{"bias_rank", 0}}),
          aft_case("aft_full", 12, true, {{"bias_rank", 3}}),
          with_mask(aft_case("aft_full", 11, true, {{"bias_rank", 2}}, 16), 6),
          aft_case("aft_full", 80, true, {{"bias_rank", 2}}, 80, 4, 1),
          aft_case("aft_local", 12, true, {{"bias_rank", 0}, {"window", 1}}),
          aft_case("aft_local", 12, true, {{"bias_rank", 0}, {"window", 3}}),
          aft_case("aft_local", 12, true, {{"bias_rank", 2}, {"window", 12}}),
          with_mask(aft_case("aft_local", 11, true, {{"bias_rank", 2}, {"window", 4}}, 16), 6),
          aft_case("aft_local", 80, true, {{"bias_rank", 2}, {"window", 5}}, 80, 4, 1)};
}

TEST(AftAttention, CausalOutputIgnoresTheFuture) {
  for (const AttentionCase& c : causal_cases()) {
    const std::vector<int64_t> ts = {0, 2, 5, c.n / 2, c.n - 2};
    test::expect_outputs_ignore_the_future<double>(c, ts, test::LaterOutputs::kChange, random_bias);
    test::expect_outputs_ignore_the_future<float>(c, ts, test::LaterOutputs::kChange, random_bias);
  }
}

TEST(AftAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : causal_cases())
    test::expect_causal_jacobian_is_zero_above_the_diagonal(c, c.n > 20 ? 7 : 1, true, random_bias);
}

TEST(AftAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // A causal layer built for 150 positions gives, on the first 100 (or 7) alone, bit for bit the
  // outputs it gives them inside the 150 (double: the shifts use no later position, and the GEMM
  // over earlier blocks sums in the same order).
  for (const json& o : {json{{"bias_rank", 3}}, json{{"bias_rank", 0}}})
    for (const std::string kind : {"aft_full", "aft_local"})
      for (int64_t part_n : {7, 100}) {
        json oo = o;
        if (kind == "aft_local") oo["window"] = 6;
        test::expect_same_prefix<double>(aft_case(kind, 150, true, oo), aft_case(kind, part_n, true, oo, 150), random_bias);
      }
}

TEST(AftAttention, PaddedPositionsHaveNoInfluence) {
  for (const std::string kind : {"aft_full", "aft_local"})
    for (bool causal : {false, true}) {
      const AttentionCase c = with_mask(aft_case(kind, 11, causal, {{"bias_rank", 2}}, 12), 6);
      test::expect_padded_positions_have_no_influence<double>(c, test::nan_or(1e300), false, random_bias);
    }
}

// ---- aft_local with every key in the window is aft_full ------------------------------------------

TEST(AftAttention, LocalWithAWindowOfAtLeastNEqualsFull) {
  for (bool causal : {false, true})
    for (int64_t rank : {0, 3})
      for (int64_t window : {10, 12}) {  // n = 10, max_len = 12
        AttentionCase lc =
            with_mask(aft_case("aft_local", 10, causal, {{"bias_rank", rank}, {"window", window}}, 12), 4);
        AttentionCase fc = with_mask(aft_case("aft_full", 10, causal, {{"bias_rank", rank}}, 12), 4);
        SCOPED_TRACE(describe(lc));
        AttentionRig<double> l(lc, 6), f(fc, 6);
        randomise_bias(f.arena, 1.0);
        for (const char* name : {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias",
                                 "pos_bias.u", "pos_bias.v"}) {
          const int id = f.arena.find(name);
          if (id >= 0)
            std::copy(f.arena.value(id), f.arena.value(id) + f.arena.info(id).numel, l.arena.value(l.arena.find(name)));
        }
        if (rank == 0) {  // the band of the full matrix
          const int64_t L = 12, width = causal ? window : 2 * window - 1;
          const double* W = f.arena.value(f.arena.find("pos_bias.w"));
          double* band = l.arena.value(l.arena.find("pos_bias.band"));
          for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < width; ++j) {
              const int64_t u = t + j - window + 1;
              if (u >= 0 && u < L) band[t * width + j] = W[t * L + u];
            }
        }
        l.x = f.x;
        l.forward(lc);
        f.forward(fc);
        LF_EXPECT_CLOSE(l.out.data(), f.out.data(), int64_t(f.out.size()), 1e-13);
      }
}

// ---- threads ------------------------------------------------------------------------------------

TEST(AftAttention, ResultsDoNotDependOnTheThreadCount) {
  for (const std::string kind : {"aft_full", "aft_local"})
    for (bool causal : {false, true})
      for (int64_t rank : {0, 4}) {
        json o = {{"bias_rank", rank}};
        if (kind == "aft_local") o["window"] = 9;
        const AttentionCase c = with_mask(aft_case(kind, 200, causal, o, 200, 40), 150);
        SCOPED_TRACE(describe(c));
        test::expect_results_independent_of_threads(c, [](AttentionRig<double>& rig) { randomise_bias(rig.arena, 1.0); });
      }
}

// ---- memory -------------------------------------------------------------------------------------

// Forward + backward at length n: peak RSS growth well below one n×n float matrix.
void expect_no_square_buffer(const std::string& kind, int64_t n, bool causal, int64_t limit_mib) {
  SCOPED_TRACE(str_cat(kind, " n=", n, " causal=", causal));
  const int64_t d = 32;
  ParamArena<float> arena;
  auto layer = make_attention<float>({kind, {d, 1, n, causal, 0}, {{"bias_rank", 16}}, ""}, arena);
  EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n * sizeof(float) / 8);
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  test::expect_peak_rss_growth_below(arena, *layer, n, d, limit_mib << 20,
                                     str_cat("peak_rss_growth_bytes_", kind, causal ? "_causal" : ""));
}

TEST(AftAttention, LongSequenceDoesNotAllocateAnNxNBuffer) {
  // n×n floats: 256 MiB at 8192, 1 GiB at 16384. aft_full holds 64 rows × n of the bias at a time.
  expect_no_square_buffer("aft_full", 8192, false, 64);
  expect_no_square_buffer("aft_full", 8192, true, 64);
  expect_no_square_buffer("aft_local", 16384, false, 64);
  expect_no_square_buffer("aft_local", 16384, true, 64);
}

// ---- registry and configurations ----------------------------------------------------------------

TEST(AftAttention, IsRegisteredWithItsSupportAndDefaults) {
  for (const std::string kind : {"aft_full", "aft_local"}) {
    const AttentionSupport s = AttentionRegistry::instance().get(kind).info.support;
    EXPECT_TRUE(s.causal);
    EXPECT_TRUE(s.key_padding_mask);
    EXPECT_TRUE(s.variable_length);
    EXPECT_FALSE(s.cross_attention);
  }
  EXPECT_EQ(validate_attention({"aft_full", {8, 2, 4096, true, 0.1}, json::object(), ""}),
            (json{{"bias_rank", 128}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"aft_local", {8, 2, 4096, false, 0}, json::object(), ""}),
            (json{{"window", 32}, {"bias_rank", 128}, {"qkv_bias", false}}));
  // Capped at max_len by default.
  EXPECT_EQ(validate_attention({"aft_full", {8, 2, 20, false, 0}, json::object(), ""})["bias_rank"], 20);
  EXPECT_EQ(validate_attention({"aft_local", {8, 2, 20, false, 0}, json::object(), ""})["window"], 20);
  // Parameter names and shapes.
  auto shapes = [](const std::string& kind, bool causal, const json& o) {
    ParamArena<float> a;
    make_attention<float>({kind, {8, 2, 10, causal, 0}, o, "l."}, a);
    std::vector<std::pair<std::string, std::vector<int64_t>>> out;
    for (const ParamInfo& p : a.params())
      if (p.name.find("pos_bias") != std::string::npos) out.emplace_back(p.name, p.shape);
    return out;
  };
  using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
  EXPECT_EQ(shapes("aft_full", false, {{"bias_rank", 4}}),
            (Shapes{{"l.pos_bias.u", {10, 4}}, {"l.pos_bias.v", {10, 4}}}));
  EXPECT_EQ(shapes("aft_full", true, {{"bias_rank", 0}}), (Shapes{{"l.pos_bias.w", {10, 10}}}));
  EXPECT_EQ(shapes("aft_local", false, {{"bias_rank", 0}, {"window", 3}}), (Shapes{{"l.pos_bias.band", {10, 5}}}));
  EXPECT_EQ(shapes("aft_local", true, {{"bias_rank", 0}, {"window", 3}}), (Shapes{{"l.pos_bias.band", {10, 3}}}));
  EXPECT_EQ(shapes("aft_local", true, {{"bias_rank", 2}, {"window", 3}}),
            (Shapes{{"l.pos_bias.u", {10, 2}}, {"l.pos_bias.v", {10, 2}}}));
  // The bias starts near 0: U, V ~ N(0, 0.1/√d'), so w = U Vᵀ has entries of standard deviation 0.1.
  ParamArena<double> a;
  make_attention<double>({"aft_full", {8, 2, 256, false, 0}, json::object(), ""}, a);
  a.allocate();
  a.initialize(3);
  const auto U = test::param_values(a, "pos_bias.u"), P = test::param_values(a, "pos_bias.v");
  double ss = 0;
  for (int64_t t = 0; t < 256; ++t)
    for (int64_t u = 0; u < 256; ++u) {
      double w = 0;
      for (int64_t r = 0; r < 128; ++r) w += U[size_t(t * 128 + r)] * P[size_t(u * 128 + r)];
      ss += w * w;
    }
  EXPECT_NEAR(std::sqrt(ss / (256.0 * 256.0)), 0.1, 0.01);
}

TEST(AftAttention, RefusesBadConfigurations) {
  for (const std::string kind : {"aft_full", "aft_local"}) {
    SCOPED_TRACE(kind);
    ParamArena<float> arena;
    auto make = [&](const json& options, int64_t max_len = 8) {
      return make_attention<float>({kind, {8, 2, max_len, false, 0}, options, ""}, arena);
    };
    EXPECT_THROW(make({{"bias_rank", -1}}), InvalidArgument);
    EXPECT_THROW(make({{"bias_rank", 9}}), InvalidArgument);  // above max_len
    EXPECT_THROW(make({{"bias_rank", "4"}}), InvalidArgument);
    EXPECT_THROW(make({{"bias_rank", 2.5}}), InvalidArgument);
    EXPECT_THROW(make({{"qkv_bias", 1}}), InvalidArgument);
    EXPECT_THROW(make({{"k", 4}}), InvalidArgument);  // unknown option
    try {
      make({{"bias_rank", 9}});
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("bias_rank"), std::string::npos) << e.what();
    }
    if (kind == "aft_local") {
      EXPECT_THROW(make({{"window", 0}}), InvalidArgument);
      EXPECT_THROW(make({{"window", -3}}), InvalidArgument);
      EXPECT_THROW(make({{"window", 9}}), InvalidArgument);  // above max_len
      EXPECT_THROW(make({{"window", true}}), InvalidArgument);
    } else {
      EXPECT_THROW(make({{"window", 4}}), InvalidArgument);  // aft_full has no window
    }
    // Longer than max_len; cross-attention.
    AttentionCase small = aft_case(kind, 6, false);
    AttentionRig<float> layer(small);
    AttentionCase longer = aft_case(kind, 9, false);
    AttentionRig<float> rig(longer);
    std::vector<float> out(rig.out.size());
    EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
    AttentionCase cross = aft_case(kind, 6, false);
    cross.m = 6;
    AttentionRig<float> crig(cross);
    EXPECT_THROW(crig.forward(cross), InvalidArgument);
  }
}

}  // namespace
}  // namespace lf
