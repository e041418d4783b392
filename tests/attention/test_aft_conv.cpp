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
#include "core/error.h"
#include "cpu/threading.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

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

// Key padding: sample 0 pads key 1 and its last key; sample 1 pads every key but `keep` (none when
// keep < 0); further samples pad nothing.
AttentionCase with_mask(AttentionCase c, int64_t keep) {
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[1] = 1;
  c.mask[size_t(c.n - 1)] = 1;
  for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(c.n + j)] = j == keep ? 0 : 1;
  return c;
}

std::string describe(const AttentionCase& c) {
  return str_cat("n=", c.n, " max_len=", c.dims.max_len, " h=", c.dims.n_heads, " d=", c.dims.d_model, " B=", c.B,
                 " causal=", c.dims.causal, " mask=", !c.mask.empty(), " ", c.options.dump());
}

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

template <class T>
std::vector<double> param(const AttentionRig<T>& rig, const std::string& name) {
  const int id = rig.arena.find(name);
  if (id < 0) return {};
  return std::vector<double>(rig.arena.value(id), rig.arena.value(id) + rig.arena.info(id).numel);
}

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
  const auto Wq = param(rig, "to_q.weight"), Wk = param(rig, "to_k.weight"), Wv = param(rig, "to_v.weight"),
             Wo = param(rig, "to_out.weight"), bq = param(rig, "to_q.bias"), bk = param(rig, "to_k.bias"),
             bv = param(rig, "to_v.bias"), bo = param(rig, "to_out.bias"), w = param(rig, "kernel.weight"),
             gamma = param(rig, "kernel.gamma"), beta = param(rig, "kernel.beta");
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
  auto linear = [](const std::vector<double>& W, const std::vector<double>& b, const double* x, int64_t fan_in,
                   int64_t fan_out) {
    std::vector<double> y(static_cast<size_t>(fan_out));
    for (int64_t r = 0; r < fan_out; ++r) {
      double acc = b.empty() ? 0.0 : b[size_t(r)];
      for (int64_t e = 0; e < fan_in; ++e) acc += W[size_t(r * fan_in + e)] * x[e];
      y[size_t(r)] = acc;
    }
    return y;
  };
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

template <class T>
void expect_matches_reference(const AttentionCase& c, double tol, bool draw = true) {
  SCOPED_TRACE(describe(c));
  AttentionRig<T> rig(c, 3);
  if (draw) draw_kernel(rig);
  rig.forward(c);
  const std::vector<double> ref = reference_forward(c, rig);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), tol);
  for (T e : rig.out) ASSERT_TRUE(std::isfinite(double(e)));
}

void expect_matches_reference_both(const AttentionCase& c, bool draw = true) {
  expect_matches_reference<double>(c, 1e-12, draw);
  expect_matches_reference<float>(c, 2e-5, draw);
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
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rig(c, 3);
      draw_kernel(rig, 4.0);
      rig.forward(c);
      const std::vector<double> ref = reference_forward(c, rig);
      LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-11);
      AttentionRig<float> rf(c, 3);
      draw_kernel(rf, 4.0);
      rf.forward(c);
      const std::vector<double> ref_f = reference_forward(c, rf);
      LF_EXPECT_CLOSE(rf.out.data(), ref_f.data(), int64_t(ref_f.size()), 5e-5);
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
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rd(c, 3);
      draw_kernel(rd);
      make_keys_huge(rd);
      rd.forward(c);
      const std::vector<double> ref = reference_forward(c, rd);
      LF_EXPECT_CLOSE(rd.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
      AttentionRig<float> rf(c, 3);
      draw_kernel(rf);
      make_keys_huge(rf);
      rf.forward(c);
      const std::vector<double> ref_f = reference_forward(c, rf);
      // K ≈ 1000 in float carries an absolute error of ~1e-4, which the weights inherit.
      LF_EXPECT_CLOSE(rf.out.data(), ref_f.data(), int64_t(ref_f.size()), 2e-3);
      for (float e : rf.out) ASSERT_TRUE(std::isfinite(e));
      std::vector<float> dx(rf.x.size());
      const auto w = test::random_vector<float>(int64_t(rf.out.size()), 4);
      rf.arena.zero_grad();
      rf.layer->backward(w.data(), dx.data());
      for (float e : dx) ASSERT_TRUE(std::isfinite(e));
      for (int64_t e = 0; e < rf.arena.numel(); ++e) ASSERT_TRUE(std::isfinite(rf.arena.grads()[e]));
    }
}

// ---- gradients ---------------------------------------------------------------------------------

// check_attention_gradients with the kernel drawn (and optionally the keys made huge) after the
// layer is built: the input and every parameter against central differences.
void check_gradients(const AttentionCase& c, bool huge_keys = false, double tol = 1e-6) {
  AttentionRig<double> rig(c);
  draw_kernel(rig);
  if (huge_keys) make_keys_huge(rig);
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
  test::expect_gradient_matches(loss, rig.x.data(), int64_t(rig.x.size()), dx.data(), "input", tol);
  for (const ParamInfo& p : rig.arena.params()) {
    ASSERT_TRUE(p.trainable);
    const std::vector<double> analytic(rig.arena.grads() + p.offset, rig.arena.grads() + p.offset + p.numel);
    test::expect_gradient_matches(loss, rig.arena.values() + p.offset, p.numel, analytic.data(), p.name, tol);
  }
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
                                 with_mask(conv_case(8, true, {{"window", 4}, {"qkv_bias", true}}, 12, 4, 16), 5)}) {
    const int64_t d = c.dims.d_model, n = c.n;
    for (int64_t t = 0; t < n; ++t) {
      SCOPED_TRACE(str_cat(describe(c), " t=", t));
      AttentionRig<double> rig(c);
      draw_kernel(rig);
      rig.forward(c);
      std::vector<double> dout(rig.out.size(), 0.0), dx(rig.x.size());
      const auto w = test::random_vector<double>(d, 5 + uint64_t(t));
      std::copy(w.begin(), w.end(), dout.begin() + t * d);
      rig.arena.zero_grad();
      rig.layer->backward(dout.data(), dx.data());
      double past = 0;
      for (int64_t u = 0; u <= t; ++u)
        for (int64_t e = 0; e < d; ++e) past = std::max(past, std::abs(dx[size_t(u * d + e)]));
      EXPECT_GT(past, 0.0);
      for (int64_t e = (t + 1) * d; e < c.B * n * d; ++e) ASSERT_EQ(dx[size_t(e)], 0.0) << "element " << e;
    }
  }
}

template <class T>
void expect_same_prefix(int64_t s) {
  // A causal layer built for 16 positions gives, on the first 7 positions alone, exactly the outputs
  // it gives them inside the 16-position sequence.
  const int64_t d = 16;
  const json opt = {{"window", s}, {"qkv_bias", true}};
  AttentionCase full = conv_case(16, true, opt, 0, 4, d), part = conv_case(7, true, opt, 16, 4, d);
  AttentionRig<T> a(full, 4), b(part, 4);
  draw_kernel(a);
  draw_kernel(b);
  for (int64_t r = 0; r < 2; ++r)
    std::copy(a.x.begin() + r * 16 * d, a.x.begin() + (r * 16 + 7) * d, b.x.begin() + r * 7 * d);
  a.forward(full);
  b.forward(part);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t e = 0; e < 7 * d; ++e) ASSERT_EQ(b.out[size_t(r * 7 * d + e)], a.out[size_t(r * 16 * d + e)]);
}

TEST(AftConvAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // In double only: the float GEMM of the maps (oneDNN) blocks by the row count, so a row's Q, K, V
  // can differ in the last bit between 7 and 16 rows; the AFT core itself reads rows ≤ t only.
  for (int64_t s : {1, 3, 4}) {
    SCOPED_TRACE(s);
    expect_same_prefix<double>(s);
  }
}

TEST(AftConvAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(conv_case(11, causal, window(3), 12), 6);
    AttentionRig<float> a(c), b(c);
    draw_kernel(a);
    draw_kernel(b);
    const int64_t d = c.dims.d_model;
    for (int64_t bt = 0; bt < c.B * c.n; ++bt)
      if (c.mask[size_t(bt)])
        for (int64_t e = 0; e < d; ++e) b.x[size_t(bt * d + e)] = e % 2 ? std::nanf("") : 1e30f;
    a.forward(c);
    b.forward(c);
    for (int64_t bt = 0; bt < c.B * c.n; ++bt)
      if (!c.mask[size_t(bt)]) {
        for (int64_t e = 0; e < d; ++e) ASSERT_EQ(a.out[size_t(bt * d + e)], b.out[size_t(bt * d + e)]) << bt;
      }
  }
}

// ---- memory ------------------------------------------------------------------------------------

int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return -1;
}

TEST(AftConvAttention, LongSequenceNeedsNoQuadraticMemory) {
  // n = 16384, d = 64: an n×n float buffer is 1 GiB; AFT-conv keeps about 9 (B, n, d) buffers (36 MiB).
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal);
    const int64_t n = 16384, d = 64;
    ParamArena<float> arena;
    auto layer = make_attention<float>({"aft_conv", {d, 2, n, causal, 0}, window(15), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n * 4 / 8);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    if (proc_status_bytes("VmHWM") < 0) GTEST_SKIP() << "no /proc/self/status";
    arena.allocate();
    arena.initialize(1);
    arena.value(arena.find("kernel.gamma"))[0] = 1;
    const auto x = test::random_vector<float>(n * d, 1);
    const auto dout = test::random_vector<float>(n * d, 2);
    std::vector<float> out(size_t(n * d)), dx(size_t(n * d));
    AttentionInput<float> in;
    in.x = x.data();
    in.B = 1;
    in.n = n;
    { std::ofstream("/proc/self/clear_refs") << "5"; }
    const int64_t before = std::max(proc_status_bytes("VmRSS"), int64_t(0));
    const int64_t hwm_before = proc_status_bytes("VmHWM");
    layer->forward(in, out.data(), true, 1);
    layer->backward(dout.data(), dx.data());
    const int64_t growth = proc_status_bytes("VmHWM") - std::max(before, hwm_before);
    RecordProperty("peak_rss_growth_bytes", std::to_string(growth));
    EXPECT_LT(growth, int64_t(128) << 20) << "peak RSS grew by " << growth << " bytes (n² floats: " << n * n * 4 << ")";
    for (int64_t i = 0; i < n * d; i += 4099) {
      ASSERT_TRUE(std::isfinite(out[size_t(i)]));
      ASSERT_TRUE(std::isfinite(dx[size_t(i)]));
    }
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
