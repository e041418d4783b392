// MLP token mixing (`mixer`): equal to a plain reference of its definition (loops in double, written
// here from the parameters by name) for every option — linear mixing or the token-mixing MLP, causal,
// key padding, n < max_len, one group or several, the output map, dropout on the MLP's hidden layer,
// sequences over several causal row blocks; its backward equal to a plain reference backward (long
// causal sequences) and to finite differences in double for every option; causality (outputs up to t
// ignore later inputs, the Jacobian above the diagonal is exactly zero, a shorter causal sequence gives
// the same prefix); padded positions have no influence; results independent of the thread count; the
// registry, parameter shapes, initialisation and bad configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
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

AttentionCase mx_case(int64_t n, bool causal, json options = json::object(), int64_t max_len = 0, int64_t groups = 2,
                      int64_t d = 8, int64_t B = 2) {
  AttentionCase c;
  c.kind = "mixer";
  c.dims = AttentionDims{d, groups, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

// ---- the plain reference ------------------------------------------------------------------------

double gelu(double v) { return 0.5 * v * std::erfc(-v / std::sqrt(2.0)); }

// The layer's definition in plain loops, in double, from the rig's parameters and input.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig, uint64_t seed) {
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const int64_t H = o.at("hidden").get<int64_t>();
  const bool out_proj = o.at("out_proj").get<bool>();
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, G = c.dims.n_heads, dh = d / G, L = c.dims.max_len;
  const double p = c.training && H > 0 ? c.dims.dropout : 0.0;
  const auto W = test::param_values(rig, "mix.weight"), bias = test::param_values(rig, "mix.bias"), W1 = test::param_values(rig, "mix1.weight"),
             b1 = test::param_values(rig, "mix1.bias"), W2 = test::param_values(rig, "mix2.weight"), b2 = test::param_values(rig, "mix2.bias"),
             Wo = test::param_values(rig, "to_out.weight"), bo = test::param_values(rig, "to_out.bias");
  // The layer's input with padded rows replaced by zeros.
  auto xin = [&](int64_t b, int64_t s, int64_t ch) {
    if (!c.mask.empty() && c.mask[size_t(b * n + s)]) return 0.0;
    return double(rig.x[size_t((b * n + s) * d + ch)]);
  };
  std::vector<double> y(size_t(B * n * d), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t ch = 0; ch < dh; ++ch) {
        const int64_t col = g * dh + ch;
        if (H == 0) {
          for (int64_t t = 0; t < n; ++t) {
            double acc = bias[size_t(g * L + t)];
            for (int64_t s = 0; s < n; ++s)
              if (!c.dims.causal || s <= t) acc += W[size_t((g * L + t) * L + s)] * xin(b, s, col);
            y[size_t((b * n + t) * d + col)] = acc;
          }
        } else {
          std::vector<double> a(static_cast<size_t>(H));
          for (int64_t j = 0; j < H; ++j) {
            double acc = b1[size_t(g * H + j)];
            for (int64_t s = 0; s < n; ++s) acc += W1[size_t((g * H + j) * L + s)] * xin(b, s, col);
            const uint64_t idx = uint64_t((g * H + j) * B * dh + b * dh + ch);
            const bool keep = p == 0 || double(uniform01(seed, kProbsDropoutStream, idx)) >= double(float(p));
            a[size_t(j)] = keep ? gelu(acc) / (1 - p) : 0.0;
          }
          for (int64_t t = 0; t < n; ++t) {
            double acc = b2[size_t(g * L + t)];
            for (int64_t j = 0; j < H; ++j) acc += W2[size_t((g * L + t) * H + j)] * a[size_t(j)];
            y[size_t((b * n + t) * d + col)] = acc;
          }
        }
      }
  if (!out_proj) return y;
  std::vector<double> out(y.size());
  for (int64_t r = 0; r < B * n; ++r)
    for (int64_t i = 0; i < d; ++i) {
      double acc = bo[size_t(i)];
      for (int64_t e = 0; e < d; ++e) acc += Wo[size_t(i * d + e)] * y[size_t(r * d + e)];
      out[size_t(r * d + i)] = acc;
    }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig, rig.kForwardSeed); });
}

const json kMlp = {{"hidden", 6}};
const json kOut = {{"out_proj", true}};

TEST(MixerAttention, MatchesPlainReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(mx_case(12, causal));
    expect_matches_reference_both(mx_case(9, causal, json::object(), 12));  // n < max_len
    expect_matches_reference_both(with_mask(mx_case(11, causal, json::object(), 16), 6));
    expect_matches_reference_both(mx_case(10, causal, json::object(), 0, 1));  // one group
    expect_matches_reference_both(mx_case(10, causal, json::object(), 0, 4, 8, 3));  // d_h = 2, B = 3
    expect_matches_reference_both(with_mask(mx_case(7, causal, kOut, 9), 2));
    expect_matches_reference_both(with_dropout(mx_case(8, causal), 0.3));  // ignored without a hidden layer
    expect_matches_reference_both(mx_case(1, causal, json::object(), 5));
  }
  // The token-mixing MLP (non-causal only).
  expect_matches_reference_both(mx_case(12, false, kMlp));
  expect_matches_reference_both(mx_case(9, false, kMlp, 12));
  expect_matches_reference_both(with_mask(mx_case(11, false, kMlp, 16), 6));
  expect_matches_reference_both(mx_case(10, false, {{"hidden", 1}}, 0, 1));
  expect_matches_reference_both(mx_case(10, false, {{"hidden", 20}, {"out_proj", true}}, 0, 4, 8, 3));
  expect_matches_reference_both(with_dropout(with_mask(mx_case(10, false, kMlp, 13), 4), 0.3));
}

TEST(MixerAttention, MatchesPlainReferenceOverSeveralCausalBlocks) {
  // The causal mixing runs in row blocks of 256: 300 and 520 positions cross one and two block borders.
  for (int64_t n : {256, 300, 520}) {
    expect_matches_reference_both(mx_case(n, true, json::object(), 0, 2, 4));
    expect_matches_reference_both(with_mask(mx_case(n - 3, true, kOut, n, 1, 2), 100));
    expect_matches_reference_both(mx_case(n, false, json::object(), 0, 2, 4));
  }
}

TEST(MixerAttention, DropoutIsIgnoredWithoutAHiddenLayer) {
  const AttentionCase plain = mx_case(10, false), dropped = with_dropout(plain, 0.5);
  AttentionRig<double> a(plain), b(dropped);
  a.forward(plain);
  b.forward(dropped);
  EXPECT_EQ(a.out, b.out);
  // With a hidden layer it does change the output (and the reference above follows it).
  const AttentionCase mlp = mx_case(10, false, kMlp), mlp_dropped = with_dropout(mlp, 0.5);
  AttentionRig<double> c(mlp), e(mlp_dropped);
  c.forward(mlp);
  e.forward(mlp_dropped);
  EXPECT_NE(c.out, e.out);
}

// ---- gradients ----------------------------------------------------------------------------------

TEST(MixerAttention, GradientsMatchFiniteDifferences) {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(mx_case(8, causal));
    cases.push_back(with_mask(mx_case(7, causal, json::object(), 10), 3));  // padding, n < max_len
    cases.push_back(mx_case(6, causal, kOut, 0, 1));                       // one group, the output map
    cases.push_back(with_mask(mx_case(6, causal, kOut, 8, 4), 2));
    cases.push_back(with_dropout(mx_case(6, causal), 0.3));
  }
  cases.push_back(mx_case(8, false, kMlp));
  cases.push_back(with_mask(mx_case(7, false, kMlp, 10), 3));
  cases.push_back(mx_case(6, false, {{"hidden", 3}, {"out_proj", true}}, 0, 1));
  cases.push_back(with_dropout(with_mask(mx_case(7, false, kMlp, 9, 4), 5), 0.3));
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

// The backward of the linear mixing in plain loops: dx (B, n, d) and dW (G, L, L), db (G, L) for the
// loss Σ w·out (no output map).
struct LinearMixingGrads {
  std::vector<double> dx, dW, db;
};

template <class T>
LinearMixingGrads reference_backward(const AttentionCase& c, const AttentionRig<T>& rig, const std::vector<double>& w) {
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, G = c.dims.n_heads, dh = d / G, L = c.dims.max_len;
  const auto W = test::param_values(rig, "mix.weight");
  LinearMixingGrads r{std::vector<double>(size_t(B * n * d), 0.0), std::vector<double>(size_t(G * L * L), 0.0),
                      std::vector<double>(size_t(G * L), 0.0)};
  auto padded = [&](int64_t b, int64_t s) { return !c.mask.empty() && c.mask[size_t(b * n + s)]; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t col = 0; col < d; ++col) {
        const int64_t g = col / dh;
        const double gy = w[size_t((b * n + t) * d + col)];
        r.db[size_t(g * L + t)] += gy;
        for (int64_t s = 0; s < n; ++s) {
          if ((c.dims.causal && s > t) || padded(b, s)) continue;
          r.dW[size_t((g * L + t) * L + s)] += gy * double(rig.x[size_t((b * n + s) * d + col)]);
          r.dx[size_t((b * n + s) * d + col)] += W[size_t((g * L + t) * L + s)] * gy;
        }
      }
  return r;
}

TEST(MixerAttention, BackwardMatchesPlainReferenceOverSeveralCausalBlocks) {
  for (bool causal : {true, false})
    for (int64_t n : {300, 520}) {
      const AttentionCase c = with_mask(mx_case(n - 5, causal, json::object(), n, 2, 4), 77);
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rig(c);
      rig.forward(c);
      const auto w = test::random_vector<double>(int64_t(rig.out.size()), 12);
      std::vector<double> dx(rig.x.size());
      rig.arena.zero_grad();
      rig.layer->backward(w.data(), dx.data());
      const LinearMixingGrads ref = reference_backward(c, rig, w);
      LF_EXPECT_CLOSE(dx.data(), ref.dx.data(), int64_t(dx.size()), 1e-12);
      const int iw = rig.arena.find("mix.weight"), ib = rig.arena.find("mix.bias");
      LF_EXPECT_CLOSE(rig.arena.grad(iw), ref.dW.data(), int64_t(ref.dW.size()), 1e-12);
      LF_EXPECT_CLOSE(rig.arena.grad(ib), ref.db.data(), int64_t(ref.db.size()), 1e-12);
      if (causal) {  // unused weights (above the diagonal, beyond n) get exactly zero
        const double* dW = rig.arena.grad(iw);
        for (int64_t e = 0; e < 2 * n * n; ++e) {
          const int64_t t = (e / n) % n, s = e % n;
          if (s > t || t >= c.n) {
            ASSERT_EQ(dW[e], 0.0) << "t " << t << " s " << s;
          }
        }
      }
    }
}

TEST(MixerAttention, ResultsDoNotDependOnTheThreadCount) {
  // Large enough for every parallel loop (packing, bias rows and sums) and several causal blocks.
  std::vector<AttentionCase> cases = {with_mask(mx_case(300, true, kOut, 300, 4, 64), 200),
                                      with_mask(mx_case(300, false, json::object(), 310, 4, 64), 200),
                                      with_dropout(with_mask(mx_case(300, false, {{"hidden", 40}}, 300, 4, 64), 100), 0.1)};
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::expect_results_independent_of_threads(c);
  }
}

// ---- causality ---------------------------------------------------------------------------------

std::vector<AttentionCase> causal_cases() {
  return {mx_case(12, true), with_mask(mx_case(11, true, kOut, 16), 6), mx_case(9, true, json::object(), 0, 1),
          mx_case(270, true, json::object(), 300, 2, 4, 1)};
}

TEST(MixerAttention, CausalOutputIgnoresTheFuture) {
  for (const AttentionCase& c : causal_cases()) {
    // The perturbation does reach the later outputs (of sample 0, when it has a later real position).
    const std::vector<int64_t> ts = {0, 2, 7, c.n / 2, c.n - 2};
    test::expect_outputs_ignore_the_future<double>(c, ts, test::LaterOutputs::kChangeUnlessPadded);
    test::expect_outputs_ignore_the_future<float>(c, ts, test::LaterOutputs::kChangeUnlessPadded);
  }
}

TEST(MixerAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : causal_cases()) test::expect_causal_jacobian_is_zero_above_the_diagonal(c, c.n > 20 ? 23 : 1);
}

// Variable length: a causal layer built for max_len positions gives, on the first positions alone,
// exactly the outputs it gives them inside the full sequence (also across causal row blocks: the
// products' shapes do not depend on n). In float only without the output map: that one is a product
// over the B·n rows, whose float GEMM is free to round differently for another row count.
template <class T>
void expect_same_prefix() {
  for (const auto& [len, part_len, out_proj] : {std::tuple<int64_t, int64_t, bool>{16, 7, false},
                                                {16, 7, true},
                                                {520, 300, false},
                                                {520, 256, true},
                                                {520, 5, false},
                                                {600, 513, false}}) {
    if (out_proj && std::is_same_v<T, float>) continue;
    SCOPED_TRACE(str_cat(len, " ", part_len, " ", out_proj));
    const int64_t d = 4;
    const json o = {{"out_proj", out_proj}};
    test::expect_same_prefix<T>(mx_case(len, true, o, 0, 2, d), mx_case(part_len, true, o, len, 2, d));
  }
}

TEST(MixerAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  expect_same_prefix<double>();
  expect_same_prefix<float>();
}

TEST(MixerAttention, PaddedPositionsHaveNoInfluence) {
  for (const AttentionCase& c0 : {mx_case(11, false, json::object(), 12), mx_case(11, true, kOut, 12),
                                  mx_case(11, false, kMlp, 12)}) {
    // The gradient reaches no padded row and stays finite.
    test::expect_padded_positions_have_no_influence<double>(with_mask(c0, 6), test::nan_or(1e300), /*gradients=*/true);
  }
}

// ---- registry and configurations ---------------------------------------------------------------

TEST(MixerAttention, IsRegisteredWithItsSupportDefaultsAndParameters) {
  const AttentionSupport s = AttentionRegistry::instance().get("mixer").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
  const json defaults = {{"hidden", 0}, {"out_proj", false}};
  EXPECT_EQ(validate_attention({"mixer", {8, 2, 64, true, 0.1}, json::object(), ""}), defaults);
  EXPECT_EQ(validate_attention({"mixer", {8, 2, 64, false, 0}, json(nullptr), ""}), defaults);

  auto shape = [](const ParamArena<double>& a, const std::string& name) {
    const int id = a.find(name);
    return id < 0 ? std::vector<int64_t>{} : a.info(id).shape;
  };
  using S = std::vector<int64_t>;
  ParamArena<double> linear;
  make_attention<double>({"mixer", {12, 3, 50, false, 0}, json::object(), "l."}, linear);
  EXPECT_EQ(linear.count(), 2);
  EXPECT_EQ(shape(linear, "l.mix.weight"), (S{3, 50, 50}));
  EXPECT_EQ(shape(linear, "l.mix.bias"), (S{3, 50}));
  ParamArena<double> mlp;
  make_attention<double>({"mixer", {12, 3, 50, false, 0}, {{"hidden", 7}, {"out_proj", true}}, "l."}, mlp);
  EXPECT_EQ(mlp.count(), 6);
  EXPECT_EQ(shape(mlp, "l.mix1.weight"), (S{3, 7, 50}));
  EXPECT_EQ(shape(mlp, "l.mix1.bias"), (S{3, 7}));
  EXPECT_EQ(shape(mlp, "l.mix2.weight"), (S{3, 50, 7}));
  EXPECT_EQ(shape(mlp, "l.mix2.bias"), (S{3, 50}));
  EXPECT_EQ(shape(mlp, "l.to_out.weight"), (S{12, 12}));
  EXPECT_EQ(shape(mlp, "l.to_out.bias"), (S{12}));
  EXPECT_LT(mlp.find("l.mix.weight"), 0);

  // nn.Linear's initialisation: U(±1/√fan_in), fan_in = max_len (mix, mix1) or H (mix2), d (to_out).
  mlp.allocate();
  mlp.initialize(5);
  linear.allocate();
  linear.initialize(5);
  auto expect_uniform = [](const ParamArena<double>& a, const std::string& name, double bound) {
    const int id = a.find(name);
    const double* v = a.value(id);
    double mx = 0;
    for (int64_t i = 0; i < a.info(id).numel; ++i) mx = std::max(mx, std::abs(v[i]));
    EXPECT_LE(mx, bound) << name;
    EXPECT_GT(mx, 0.8 * bound) << name;
  };
  expect_uniform(linear, "l.mix.weight", 1 / std::sqrt(50.0));
  expect_uniform(linear, "l.mix.bias", 1 / std::sqrt(50.0));
  expect_uniform(mlp, "l.mix1.weight", 1 / std::sqrt(50.0));
  expect_uniform(mlp, "l.mix1.bias", 1 / std::sqrt(50.0));
  expect_uniform(mlp, "l.mix2.weight", 1 / std::sqrt(7.0));
  expect_uniform(mlp, "l.mix2.bias", 1 / std::sqrt(7.0));
  expect_uniform(mlp, "l.to_out.weight", 1 / std::sqrt(12.0));

  // The cost model: n² mixing per channel (causal about half), the MLP 2·n·H per channel.
  ParamArena<float> a1, a2, a3;
  const auto full = make_attention<float>({"mixer", {64, 2, 4096, false, 0}, json::object(), ""}, a1);
  const auto causal = make_attention<float>({"mixer", {64, 2, 4096, true, 0}, json::object(), ""}, a2);
  const auto mlp_layer = make_attention<float>({"mixer", {64, 2, 4096, false, 0}, {{"hidden", 256}}, ""}, a3);
  EXPECT_DOUBLE_EQ(full->forward_flops(1, 4096, 4096), 2.0 * 4096 * 4096 * 64);
  EXPECT_GT(causal->forward_flops(1, 4096, 4096), 0.5 * full->forward_flops(1, 4096, 4096));
  EXPECT_LT(causal->forward_flops(1, 4096, 4096), 0.54 * full->forward_flops(1, 4096, 4096));
  EXPECT_DOUBLE_EQ(mlp_layer->forward_flops(1, 4096, 4096), 4.0 * 4096 * 256 * 64);
  EXPECT_LT(full->activation_bytes(1, 4096, 4096, true), 4096.0 * 4096);  // no n×n activation
}

TEST(MixerAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options, bool causal = false) {
    return make_attention<float>({"mixer", {8, 2, 8, causal, 0}, options, ""}, arena);
  };
  EXPECT_THROW(make({{"hidden", -1}}), InvalidArgument);
  EXPECT_THROW(make({{"hidden", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"hidden", "4"}}), InvalidArgument);
  EXPECT_THROW(make({{"out_proj", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"k", 4}}), InvalidArgument);       // unknown option
  EXPECT_THROW(make({{"qkv_bias", true}}), InvalidArgument);  // no Q/K/V maps
  EXPECT_THROW(make({{"hidden", 4}}, true), InvalidArgument);
  try {
    make({{"hidden", 4}}, true);
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("causal"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hidden"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(make({{"hidden", 0}}, true));
  // Longer than max_len; cross-attention.
  AttentionCase small = mx_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = mx_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  AttentionCase cross = mx_case(6, false);
  cross.m = 6;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
