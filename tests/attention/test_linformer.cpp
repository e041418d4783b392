// Linformer attention: against a plain reference of the formula, finite-difference gradients for
// every sharing mode, projection and association order, padding masks, layerwise sharing, fixed
// projections, and refusal of bad configurations.
#include <cmath>
#include <limits>

#include "attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

constexpr int64_t kD = 8, kH = 2, kL = 8, kK = 4;

AttentionCase linformer_case(json options, int64_t n = kL, bool mask = false) {
  AttentionCase c;
  c.kind = "linformer";
  c.dims = AttentionDims{kD, kH, kL, false, 0};
  if (!options.contains("k")) options["k"] = kK;
  c.options = options;
  c.B = 2;
  c.n = n;
  if (mask) {  // sample 0: first position padded; sample 1: last two
    c.mask.assign(size_t(c.B * n), 0);
    c.mask[0] = 1;
    c.mask[size_t(2 * n - 1)] = c.mask[size_t(2 * n - 2)] = 1;
  }
  return c;
}

// E (p = 0) or F (p = 1) of the layer as (G, k, L) doubles, built independently of the layer's code.
std::vector<double> dense_projection(const ParamArena<double>& arena, const json& opt, int p) {
  const std::string sharing = opt.value("sharing", "headwise"), proj = opt.value("projection", "learned");
  const int64_t k = opt["k"], G = sharing == "none" ? kH : 1, window = kL / k;
  const bool e_is_f = sharing == "kv" || sharing == "layerwise";
  const std::string name = sharing == "layerwise" ? "shared_proj" : (p == 0 || e_is_f) ? "proj_k" : "proj_v";
  std::vector<double> E(size_t(G * k * kL), 0.0);
  if (proj == "learned" || proj == "fixed") {
    const int id = arena.find(name);
    EXPECT_GE(id, 0) << name;
    std::copy(arena.value(id), arena.value(id) + E.size(), E.begin());
  } else {
    const int id = proj == "conv" ? arena.find(name + "_kernel") : -1;
    for (int64_t g = 0; g < G; ++g)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t t = 0; t < window; ++t)
          E[size_t((g * k + j) * kL + j * window + t)] = proj == "mean" ? 1.0 / double(window) : arena.value(id)[g * window + t];
  }
  return E;
}

// The layer's formula with plain loops, from the parameters in the arena.
std::vector<double> reference_linformer(const AttentionCase& c, const ParamArena<double>& arena, const std::vector<double>& x) {
  const json& o = c.options;
  const int64_t B = c.B, n = c.n, m = n, d = kD, h = kH, dh = d / h, k = o["k"];
  const bool one_kv = o.value("one_kv_head", false), share_lin = o.value("share_kv_linear", false);
  const int64_t kvd = one_kv ? dh : d, G = o.value("sharing", "headwise") == "none" ? h : 1;
  const std::vector<double> E = dense_projection(arena, o, 0), F = dense_projection(arena, o, 1);
  auto param = [&](const std::string& name) -> const double* {
    const int id = arena.find(name);
    return id < 0 ? nullptr : arena.value(id);
  };
  const double *Wq = param("to_q.weight"), *Wk = param("to_k.weight"), *Wo = param("to_out.weight"), *bo = param("to_out.bias");
  const double* Wv = share_lin ? Wk : param("to_v.weight");
  const double *bq = param("to_q.bias"), *bk = param("to_k.bias"), *bv = share_lin ? bk : param("to_v.bias");
  auto lin = [&](const double* row, const double* W, const double* b, int64_t out_dim, int64_t r) {
    double s = b ? b[r] : 0.0;
    for (int64_t e = 0; e < d; ++e) s += row[e] * W[r * d + e];
    (void)out_dim;
    return s;
  };
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> Q(size_t(n * d)), K(size_t(m * kvd)), V(size_t(m * kvd)), O(size_t(n * d));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < d; ++r) Q[size_t(t * d + r)] = lin(&x[size_t((b * n + t) * d)], Wq, bq, d, r);
    for (int64_t t = 0; t < m; ++t) {
      const bool pad = !c.mask.empty() && c.mask[size_t(b * m + t)];
      for (int64_t r = 0; r < kvd; ++r) {
        K[size_t(t * kvd + r)] = pad ? 0.0 : lin(&x[size_t((b * n + t) * d)], Wk, bk, kvd, r);
        V[size_t(t * kvd + r)] = pad ? 0.0 : lin(&x[size_t((b * n + t) * d)], Wv, bv, kvd, r);
      }
    }
    for (int64_t i = 0; i < h; ++i) {
      const int64_t g = one_kv ? 0 : i, e = G == 1 ? 0 : i;
      std::vector<double> Kc(size_t(k * dh), 0.0), Vc(size_t(k * dh), 0.0);
      for (int64_t j = 0; j < k; ++j)
        for (int64_t cc = 0; cc < dh; ++cc)
          for (int64_t t = 0; t < m; ++t) {
            Kc[size_t(j * dh + cc)] += E[size_t((e * k + j) * kL + t)] * K[size_t(t * kvd + g * dh + cc)];
            Vc[size_t(j * dh + cc)] += F[size_t((e * k + j) * kL + t)] * V[size_t(t * kvd + g * dh + cc)];
          }
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> s(static_cast<size_t>(k));
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < k; ++j) {
          for (int64_t cc = 0; cc < dh; ++cc) s[size_t(j)] += Q[size_t(t * d + i * dh + cc)] * Kc[size_t(j * dh + cc)];
          s[size_t(j)] /= std::sqrt(double(dh));
          mx = std::max(mx, s[size_t(j)]);
        }
        for (auto& v : s) sum += (v = std::exp(v - mx));
        for (int64_t cc = 0; cc < dh; ++cc) {
          double acc = 0;
          for (int64_t j = 0; j < k; ++j) acc += s[size_t(j)] / sum * Vc[size_t(j * dh + cc)];
          O[size_t(t * d + i * dh + cc)] = acc;
        }
      }
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < d; ++r) out[size_t((b * n + t) * d + r)] = lin(&O[size_t(t * d)], Wo, bo, d, r);
  }
  return out;
}

// The option matrix: every sharing mode × projection × association order, with one kv head, biases,
// masks and short sequences spread over it.
std::vector<AttentionCase> option_matrix() {
  std::vector<AttentionCase> cases;
  int index = 0;
  for (const char* sharing : {"none", "headwise", "kv", "layerwise"})
    for (const char* projection : {"learned", "fixed", "mean", "conv"})
      for (const char* order : {"project_first", "compress_first"}) {
        json o = {{"sharing", sharing}, {"projection", projection}, {"order", order},
                  {"one_kv_head", index % 2 == 1}, {"qkv_bias", index % 3 != 2}};
        cases.push_back(linformer_case(o, index % 4 == 3 ? 6 : kL, index % 5 != 4));
        ++index;
      }
  cases.push_back(linformer_case({{"sharing", "kv"}, {"share_kv_linear", true}}));
  cases.push_back(linformer_case({{"sharing", "headwise"}, {"share_kv_linear", true}, {"qkv_bias", true}, {"order", "compress_first"}}, 7, true));
  cases.push_back(linformer_case({{"sharing", "none"}, {"one_kv_head", true}, {"share_kv_linear", true}, {"order", "project_first"}}, 5));
  cases.push_back(linformer_case({{"init", "xavier"}, {"k", 8}}));
  return cases;
}

std::string case_name(const AttentionCase& c) { return c.options.dump() + " n=" + std::to_string(c.n) + (c.mask.empty() ? "" : " masked"); }

TEST(Linformer, MatchesPlainReferenceInFloatAndDouble) {
  for (const AttentionCase& c : option_matrix()) {
    SCOPED_TRACE(case_name(c));
    AttentionRig<double> rig(c);
    rig.forward(c);
    const std::vector<double> ref = reference_linformer(c, rig.arena, rig.x);
    LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
    AttentionRig<float> rigf(c);
    rigf.forward(c);
    LF_EXPECT_CLOSE(rigf.out.data(), ref.data(), int64_t(ref.size()), 1e-5);
  }
}

TEST(Linformer, GradientsMatchFiniteDifferences) {
  for (const AttentionCase& c : option_matrix()) {
    SCOPED_TRACE(case_name(c));
    test::check_attention_gradients(c);
  }
}

TEST(Linformer, GradientsWithDropoutAndCrossAttention) {
  AttentionCase c = linformer_case({{"sharing", "headwise"}, {"qkv_bias", true}});
  c.dims.dropout = 0.25;
  c.training = true;
  test::check_attention_gradients(c);
  AttentionCase x = linformer_case({{"sharing", "none"}, {"qkv_bias", true}, {"order", "compress_first"}}, 5);
  x.m = 7;
  x.mask.assign(size_t(x.B * x.m), 0);
  x.mask[3] = 1;
  test::check_attention_gradients(x);
  x.options["order"] = "project_first";
  test::check_attention_gradients(x);
}

TEST(Linformer, BothAssociationOrdersAgree) {
  for (const char* sharing : {"none", "headwise", "kv", "layerwise"})
    for (bool one_kv : {false, true}) {
      AttentionCase pf = linformer_case({{"sharing", sharing}, {"one_kv_head", one_kv}, {"qkv_bias", true}, {"order", "project_first"}}, 7, true);
      AttentionCase cf = pf;
      cf.options["order"] = "compress_first";
      AttentionRig<double> a(pf), b(cf);
      a.forward(pf);
      b.forward(cf);
      LF_EXPECT_CLOSE(a.out.data(), b.out.data(), int64_t(a.out.size()), 1e-13);
      const auto w = test::random_vector<double>(int64_t(a.out.size()), 5);
      std::vector<double> dxa(a.x.size()), dxb(b.x.size());
      a.layer->backward(w.data(), dxa.data());
      b.layer->backward(w.data(), dxb.data());
      LF_EXPECT_CLOSE(dxa.data(), dxb.data(), int64_t(dxa.size()), 1e-12);
      LF_EXPECT_CLOSE(a.arena.grads(), b.arena.grads(), a.arena.numel(), 1e-12);
    }
}

TEST(Linformer, AutoOrderPicksTheCheaperOne) {
  // d = 512, h = 8, k = 256, n = 4096: compressing first costs 2·k·n·d + 2·k·d·d per tensor, far less
  // than projecting all n positions first, so auto must run as fast as compress_first would: check
  // through the FLOP count it reports.
  AttentionDims dims{512, 8, 4096, false, 0};
  ParamArena<float> a1, a2, a3;
  auto autoo = make_attention<float>({"linformer", dims, {{"k", 256}}, ""}, a1);
  auto pf = make_attention<float>({"linformer", dims, {{"k", 256}, {"order", "project_first"}}, ""}, a2);
  auto cf = make_attention<float>({"linformer", dims, {{"k", 256}, {"order", "compress_first"}}, ""}, a3);
  EXPECT_DOUBLE_EQ(autoo->forward_flops(1, 4096, 4096), cf->forward_flops(1, 4096, 4096));
  EXPECT_DOUBLE_EQ(autoo->forward_flops(1, 4096, 4096), pf->forward_flops(1, 4096, 4096));  // min of both
}

TEST(Linformer, PaddedPositionsContributeNothing) {
  // Garbage in every padded position: huge values, and NaN when with_nan. Real positions' outputs must
  // not change. With finite garbage the parameter gradients from real positions must not change
  // either (with NaN they cannot stay finite: a padded query's zero gradient times NaN in W_q's update).
  for (bool with_nan : {true, false})
    for (const char* order : {"project_first", "compress_first"})
      for (const char* sharing : {"none", "headwise"}) {
        SCOPED_TRACE(std::string(order) + " " + sharing + (with_nan ? " NaN" : " finite"));
        AttentionCase c = linformer_case({{"sharing", sharing}, {"qkv_bias", true}, {"order", order}}, kL, true);
        AttentionRig<float> clean(c), dirty(c);
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t t = 0; t < c.n; ++t)
            if (c.mask[size_t(b * c.n + t)])
              for (int64_t e = 0; e < kD; ++e)
                dirty.x[size_t((b * c.n + t) * kD + e)] =
                    e % 2 ? (with_nan ? std::numeric_limits<float>::quiet_NaN() : -3e5f) : 1e6f;
        clean.forward(c);
        dirty.forward(c);
        std::vector<float> w = test::random_vector<float>(int64_t(clean.out.size()), 5);
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t t = 0; t < c.n; ++t)
            for (int64_t e = 0; e < kD; ++e) {
              const size_t i = size_t((b * c.n + t) * kD + e);
              if (c.mask[size_t(b * c.n + t)])
                w[i] = 0;  // upstream gradient only on real positions
              else
                EXPECT_EQ(clean.out[i], dirty.out[i]) << "position " << b << "," << t;
            }
        if (with_nan) continue;
        std::vector<float> dx_clean(clean.x.size()), dx_dirty(clean.x.size());
        clean.layer->backward(w.data(), dx_clean.data());
        dirty.layer->backward(w.data(), dx_dirty.data());
        for (int64_t i = 0; i < clean.arena.numel(); ++i) EXPECT_EQ(clean.arena.grads()[i], dirty.arena.grads()[i]);
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t t = 0; t < c.n; ++t)
            for (int64_t e = 0; e < kD; ++e) {
              const size_t i = size_t((b * c.n + t) * kD + e);
              if (c.mask[size_t(b * c.n + t)])
                EXPECT_EQ(dx_dirty[i], 0.0f) << "a padded position received a gradient";
              else
                EXPECT_EQ(dx_clean[i], dx_dirty[i]);
            }
      }
}

TEST(Linformer, ShorterSequenceUsesTheFirstColumnsOfE) {
  // n < max_len equals a layer built for max_len = n whose E holds the first n columns.
  AttentionCase shortc = linformer_case({{"sharing", "headwise"}, {"k", 4}}, 6);
  AttentionRig<double> big(shortc);
  big.forward(shortc);
  AttentionCase exact = shortc;
  exact.dims.max_len = 6;
  AttentionRig<double> small(exact);
  for (const ParamInfo& p : small.arena.params()) {
    const int id = big.arena.find(p.name);
    ASSERT_GE(id, 0);
    const ParamInfo& q = big.arena.info(id);
    if (p.shape == q.shape) {
      std::copy(big.arena.value(id), big.arena.value(id) + p.numel, small.arena.values() + p.offset);
    } else {  // (k, L): keep the first 6 columns
      for (int64_t j = 0; j < p.shape[0]; ++j)
        for (int64_t t = 0; t < p.shape[1]; ++t) small.arena.values()[p.offset + j * p.shape[1] + t] = big.arena.value(id)[j * kL + t];
    }
  }
  small.x = big.x;
  small.forward(exact);
  LF_EXPECT_CLOSE(small.out.data(), big.out.data(), int64_t(big.out.size()), 1e-13);
}

TEST(Linformer, ParameterCountsFollowTheSharingMode) {
  auto proj_numel = [](const json& o) {
    ParamArena<float> arena;
    make_attention<float>({"linformer", {kD, kH, kL, false, 0}, o, "layer."}, arena);
    int64_t n = 0;
    for (const ParamInfo& p : arena.params())
      if (p.name.find("proj") != std::string::npos) n += p.numel;
    return n;
  };
  EXPECT_EQ(proj_numel({{"k", kK}, {"sharing", "none"}}), 2 * kH * kK * kL);
  EXPECT_EQ(proj_numel({{"k", kK}, {"sharing", "headwise"}}), 2 * kK * kL);
  EXPECT_EQ(proj_numel({{"k", kK}, {"sharing", "kv"}}), kK * kL);
  EXPECT_EQ(proj_numel({{"k", kK}, {"sharing", "layerwise"}}), kK * kL);
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "mean"}}), 0);
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "conv"}}), 2 * (kL / kK));
}

TEST(Linformer, LayerwiseSharingIsOneTensorAcrossLayers) {
  // Two layers in one arena share `shared_proj`; its gradient sums both layers' contributions.
  const json o = {{"k", kK}, {"sharing", "layerwise"}, {"qkv_bias", true}};
  const AttentionDims dims{kD, kH, kL, false, 0};
  ParamArena<double> arena;
  auto l1 = make_attention<double>({"linformer", dims, o, "layers.0.attn."}, arena);
  auto l2 = make_attention<double>({"linformer", dims, o, "layers.1.attn."}, arena);
  arena.allocate();
  arena.initialize(3);
  int shared = 0;
  for (const ParamInfo& p : arena.params()) shared += p.name.find("proj") != std::string::npos;
  EXPECT_EQ(shared, 1);
  const int64_t B = 2, N = B * kL * kD;
  auto x = test::random_vector<double>(N, 4);
  const auto w = test::random_vector<double>(N, 5);
  std::vector<double> y1(static_cast<size_t>(N)), y2(static_cast<size_t>(N));
  auto loss = [&] {
    AttentionInput<double> in{x.data(), B, kL};
    l1->forward(in, y1.data(), false, 0);
    AttentionInput<double> in2{y1.data(), B, kL};
    l2->forward(in2, y2.data(), false, 0);
    return test::weighted_sum(y2.data(), w.data(), N);
  };
  loss();
  arena.zero_grad();
  std::vector<double> dy1(static_cast<size_t>(N)), dx(static_cast<size_t>(N));
  l2->backward(w.data(), dy1.data());
  l1->backward(dy1.data(), dx.data());
  const int id = arena.find("shared_proj");
  ASSERT_GE(id, 0);
  const std::vector<double> analytic(arena.grad(id), arena.grad(id) + arena.info(id).numel);
  test::expect_gradient_matches(loss, arena.value(id), arena.info(id).numel, analytic.data(), "shared_proj");
  test::expect_gradient_matches(loss, x.data(), N, dx.data(), "x");
}

TEST(Linformer, FixedProjectionsFollowTheoremTwoAndAreReproducible) {
  const double delta = 0.7;
  AttentionCase c = linformer_case({{"projection", "fixed"}, {"delta", delta}, {"k", 4}});
  AttentionRig<double> a(c, 5), b(c, 5);
  const double *E = a.arena.value(a.arena.find("proj_k")), *F = a.arena.value(a.arena.find("proj_v"));
  double sumsq = 0;
  for (int64_t i = 0; i < kK * kL; ++i) {
    EXPECT_NEAR(F[i], E[i] / delta * std::exp(-delta), 1e-15);  // E = δR, F = e^{-δ}R: the same R
    EXPECT_EQ(E[i], b.arena.value(b.arena.find("proj_k"))[i]);   // seeded: a rebuild gives the same E
    sumsq += (E[i] / delta) * (E[i] / delta);
  }
  EXPECT_NEAR(sumsq / double(kK * kL), 1.0 / kK, 0.5 / kK);  // R ~ N(0, 1/k)
  EXPECT_FALSE(a.arena.info(a.arena.find("proj_k")).trainable);
}

TEST(Linformer, RefusesBadConfigurations) {
  const AttentionDims ok{32, 4, 16, false, 0};
  struct Bad {
    AttentionDims dims;
    json options;
    std::string expect;
  };
  const std::vector<Bad> table = {
      {ok, {{"k", 17}}, "must not exceed max_len"},
      {ok, {{"k", 0}}, "must be positive"},
      {{30, 4, 16, false, 0}, {{"k", 8}}, "divisible by the number of heads"},
      {ok, {{"sharing", "sometimes"}}, "must be one of none | headwise | kv | layerwise"},
      {ok, {{"projection", "max"}}, "must be one of"},
      {ok, {{"k", 5}, {"projection", "mean"}}, "divisible by k"},
      {ok, {{"kk", 8}}, "unknown option 'kk'"},
      {ok, {{"k", "eight"}}, "must be an integer"},
      {ok, {{"delta", -1.0}}, "must be a positive number"},
      {{32, 4, 16, true, 0}, {{"k", 8}}, "does not support causal"},
      {{32, 4, 16, false, 1.5}, {{"k", 8}}, "dropout must be in [0, 1)"},
      {{32, 4, 0, false, 0}, {{"k", 8}}, "max_len must be positive"},
  };
  for (const Bad& b : table) {
    ParamArena<float> arena;
    try {
      make_attention<float>({"linformer", b.dims, b.options, ""}, arena);
      ADD_FAILURE() << "accepted " << b.options.dump();
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(b.expect), std::string::npos) << e.what();
    }
  }
  ParamArena<float> arena;
  EXPECT_THROW(make_attention<float>({"linformr", ok, json::object(), ""}, arena), InvalidArgument);
}

TEST(Linformer, RefusesSequencesLongerThanMaxLen) {
  AttentionCase c = linformer_case({{"k", kK}}, kL + 1);
  c.dims.max_len = kL + 1;
  AttentionRig<float> rig(c);  // input of kL + 1 positions
  AttentionCase small = linformer_case({{"k", kK}});
  AttentionRig<float> layer(small);
  std::vector<float> out(rig.out.size());
  AttentionInput<float> in{rig.x.data(), c.B, kL + 1};
  try {
    layer.layer->forward(in, out.data(), false, 0);
    ADD_FAILURE() << "accepted a sequence longer than max_len";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the maximum"), std::string::npos) << e.what();
  }
}

TEST(Linformer, DropoutIsSeededAndOffAtInference) {
  AttentionCase c = linformer_case({{"k", kK}});
  c.dims.dropout = 0.5;
  AttentionRig<float> rig(c);
  std::vector<float> a(rig.out.size()), b(rig.out.size()), e1(rig.out.size()), e2(rig.out.size());
  const auto in = rig.input(c);
  rig.layer->forward(in, a.data(), true, 42);
  rig.layer->forward(in, b.data(), true, 42);
  EXPECT_EQ(a, b);
  rig.layer->forward(in, e1.data(), false, 42);
  rig.layer->forward(in, e2.data(), false, 7);
  EXPECT_EQ(e1, e2);
  EXPECT_NE(a, e1);
}

}  // namespace
}  // namespace lf
