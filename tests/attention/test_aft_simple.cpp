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
#include "core/error.h"
#include "cpu/threading.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

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
  return str_cat("n=", c.n, " max_len=", c.dims.max_len, " d=", c.dims.d_model, " B=", c.B, " causal=", c.dims.causal,
                 " mask=", !c.mask.empty(), " ", c.options.dump());
}

// ---- the reference ------------------------------------------------------------------------------

template <class T>
std::vector<double> param(const AttentionRig<T>& rig, const std::string& name) {
  const int id = rig.arena.find(name);
  if (id < 0) return {};
  return std::vector<double>(rig.arena.value(id), rig.arena.value(id) + rig.arena.info(id).numel);
}

// Y_tc = σ(Q_tc) Σ_{t'} softmax_{t'}(K_{·c}) V_{t'c} over the visible keys, in plain loops, in double;
// the softmax shifted by its own maximum (stable for any K).
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig) {
  const int64_t B = c.B, n = c.n, d = c.dims.d_model;
  const auto Wq = param(rig, "to_q.weight"), Wk = param(rig, "to_k.weight"), Wv = param(rig, "to_v.weight"),
             Wo = param(rig, "to_out.weight"), bq = param(rig, "to_q.bias"), bk = param(rig, "to_k.bias"),
             bv = param(rig, "to_v.bias"), bo = param(rig, "to_out.bias");
  auto linear = [&](const std::vector<double>& W, const std::vector<double>& b, const double* x) {
    std::vector<double> y(static_cast<size_t>(d));
    for (int64_t r = 0; r < d; ++r) {
      double acc = b.empty() ? 0.0 : b[size_t(r)];
      for (int64_t e = 0; e < d; ++e) acc += W[size_t(r * d + e)] * x[e];
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

template <class T>
void expect_matches_reference(const AttentionCase& c, double tol) {
  SCOPED_TRACE(describe(c));
  AttentionRig<T> rig(c, 3);
  rig.forward(c);
  const std::vector<double> ref = reference_forward(c, rig);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), tol);
  for (T e : rig.out) ASSERT_TRUE(std::isfinite(double(e)));
}

void expect_matches_reference_both(const AttentionCase& c) {
  expect_matches_reference<double>(c, 1e-12);
  expect_matches_reference<float>(c, 2e-5);
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
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rd(c, 3);
      make_keys_huge(rd);
      rd.forward(c);
      const std::vector<double> ref = reference_forward(c, rd);
      LF_EXPECT_CLOSE(rd.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
      AttentionRig<float> rf(c, 3);
      make_keys_huge(rf);
      rf.forward(c);
      const std::vector<double> ref_f = reference_forward(c, rf);
      // K ≈ 1000 in float carries an absolute error of ~1e-4, which the weights inherit.
      LF_EXPECT_CLOSE(rf.out.data(), ref_f.data(), int64_t(ref_f.size()), 2e-3);
      for (float e : rf.out) ASSERT_TRUE(std::isfinite(e));
      // The backward stays finite too.
      std::vector<float> dx(rf.x.size());
      const auto w = test::random_vector<float>(int64_t(rf.out.size()), 4);
      rf.arena.zero_grad();
      rf.layer->backward(w.data(), dx.data());
      for (float e : dx) ASSERT_TRUE(std::isfinite(e));
      for (int64_t e = 0; e < rf.arena.numel(); ++e) ASSERT_TRUE(std::isfinite(rf.arena.grads()[e]));
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
  for (const AttentionCase& c : {aft_case(9, true), with_mask(aft_case(8, true, {{"qkv_bias", true}}, 12, 20), 5)}) {
    const int64_t d = c.dims.d_model, n = c.n;
    for (int64_t t = 0; t < n; ++t) {
      SCOPED_TRACE(str_cat(describe(c), " t=", t));
      AttentionRig<double> rig(c);
      rig.forward(c);
      // d(w · out_t)/dx for sample 0, row t.
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
void expect_same_prefix() {
  // A causal layer built for 16 positions gives, on the first 7 positions alone, exactly the outputs
  // it gives them inside the 16-position sequence.
  const int64_t d = 20;
  AttentionCase full = aft_case(16, true, {{"qkv_bias", true}}, 0, d), part = aft_case(7, true, {{"qkv_bias", true}}, 16, d);
  AttentionRig<T> a(full, 4), b(part, 4);
  for (int64_t s = 0; s < 2; ++s)
    std::copy(a.x.begin() + s * 16 * d, a.x.begin() + (s * 16 + 7) * d, b.x.begin() + s * 7 * d);
  a.forward(full);
  b.forward(part);
  for (int64_t s = 0; s < 2; ++s)
    for (int64_t e = 0; e < 7 * d; ++e) ASSERT_EQ(b.out[size_t(s * 7 * d + e)], a.out[size_t(s * 16 * d + e)]);
}

TEST(AftSimpleAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // In double only: the float GEMM of the maps (oneDNN) blocks by the row count, so a row's Q, K, V
  // can differ in the last bit between 7 and 16 rows; the AFT core itself reads rows ≤ t only.
  expect_same_prefix<double>();
}

TEST(AftSimpleAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(aft_case(11, causal, json::object(), 12), 6);
    AttentionRig<float> a(c), b(c);
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

TEST(AftSimpleAttention, LongSequenceNeedsNoQuadraticMemory) {
  // n = 16384, d = 64: an n×n float buffer is 1 GiB; AFT-simple keeps about 13 (B, n, d) buffers (54 MiB).
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal);
    const int64_t n = 16384, d = 64;
    ParamArena<float> arena;
    auto layer = make_attention<float>({"aft_simple", {d, 1, n, causal, 0}, json::object(), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n * 4 / 8);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    if (proc_status_bytes("VmHWM") < 0) GTEST_SKIP() << "no /proc/self/status";
    arena.allocate();
    arena.initialize(1);
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
