// Arbitrary attention masks and additive biases (AttentionInput::attn_mask, attn_bias: PyTorch SDPA's
// attn_mask) for `full` and `flash`: against the plain reference for every broadcast layout, with the
// causal and key padding masks and grouped K/V heads; a boolean mask equals its −inf bias bitwise;
// queries that may attend nothing output zero; finite-difference gradients in double; thread counts;
// every other kind refuses them; bad layouts and values are refused.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention_test_util.h"
#include "linformer/error.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;

// A case with its score mask and bias, (mask_batch, mask_heads, n, m) each, or empty.
struct MaskCase {
  AttentionCase c;
  int64_t mask_batch = 1, mask_heads = 1;
  std::vector<uint8_t> mask;  // nonzero = attended
  std::vector<double> bias;
};

// Random masks (about a third hidden) and biases (N(0, 1), some −inf) of the given layout; query row
// `blind` (when >= 0) of the first block may attend no key at all.
MaskCase mask_case(AttentionCase c, int64_t mb, int64_t mh, bool mask, bool bias, int64_t blind = -1) {
  MaskCase mc{c, mb, mh, {}, {}};
  const int64_t m = c.m > 0 ? c.m : c.n, size = mb * mh * c.n * m;
  const std::vector<double> r = test::random_vector<double>(size, 77), g = test::random_vector<double>(size, 78);
  if (mask) {
    mc.mask.resize(size_t(size));
    for (int64_t e = 0; e < size; ++e) mc.mask[size_t(e)] = r[size_t(e)] > -0.33 ? 1 : 0;
    if (blind >= 0)
      for (int64_t j = 0; j < m; ++j) mc.mask[size_t(blind * m + j)] = 0;
  }
  if (bias) {
    mc.bias.resize(size_t(size));
    for (int64_t e = 0; e < size; ++e) mc.bias[size_t(e)] = 2 * g[size_t(e)];
    for (int64_t e = 3; e < size; e += 7) mc.bias[size_t(e)] = -std::numeric_limits<double>::infinity();
    if (blind >= 0 && !mask)
      for (int64_t j = 0; j < m; ++j) mc.bias[size_t(blind * m + j)] = -std::numeric_limits<double>::infinity();
  }
  return mc;
}

AttentionCase base_case(const std::string& kind, bool causal, int64_t n = 7, int64_t heads = 2, int64_t d = 8,
                        json options = json::object()) {
  AttentionCase c;
  c.kind = kind;
  c.dims = AttentionDims{d, heads, n, causal, 0};
  c.options = std::move(options);
  c.n = n;
  return c;
}

template <class T>
struct MaskedRun {
  std::vector<T> bias;  // the bias in T, alive until backward
  AttentionInput<T> input(const MaskCase& mc, const AttentionRig<T>& rig) {
    AttentionInput<T> in = rig.input(mc.c);
    bias.assign(mc.bias.begin(), mc.bias.end());
    in.attn_mask = mc.mask.empty() ? nullptr : mc.mask.data();
    in.attn_bias = bias.empty() ? nullptr : bias.data();
    in.mask_batch = mc.mask_batch;
    in.mask_heads = mc.mask_heads;
    return in;
  }
  void forward(const MaskCase& mc, AttentionRig<T>& rig) {
    rig.layer->forward(input(mc, rig), rig.out.data(), mc.c.training, AttentionRig<T>::kForwardSeed);
  }
};

// The layer in double: its maps with plain loops, then sdpa_forward_ref with the score mask and bias.
template <class T>
std::vector<double> reference(const MaskCase& mc, const AttentionRig<T>& rig) {
  const AttentionCase& c = mc.c;
  const int64_t d = c.dims.d_model, h = c.dims.n_heads, d_h = d / h, B = c.B, n = c.n, m = c.m > 0 ? c.m : c.n;
  const int64_t hk = c.options.value("kv_heads", h);
  // Padded key rows are zeroed before the K/V maps, as the layer does (they are hidden anyway).
  std::vector<double> src(c.m > 0 ? rig.ctx.begin() : rig.x.begin(), c.m > 0 ? rig.ctx.end() : rig.x.end());
  if (!c.mask.empty())
    for (int64_t r = 0; r < B * m; ++r)
      if (c.mask[size_t(r)])
        for (int64_t e = 0; e < d; ++e) src[size_t(r * d + e)] = 0;
  const std::vector<double> xq(rig.x.begin(), rig.x.end());
  const auto affine_rows = [&](const std::vector<double>& in, const std::string& name, int64_t out) {
    const std::vector<double> w = test::param_values(rig, name + ".weight"), b = test::param_values(rig, name + ".bias");
    const int64_t fan_in = int64_t(w.size()) / out;
    std::vector<double> y;
    for (int64_t r = 0; r < int64_t(in.size()) / fan_in; ++r) {
      const auto row = test::affine(w, b, in.data() + r * fan_in, fan_in, out);
      y.insert(y.end(), row.begin(), row.end());
    }
    return y;
  };
  const auto q = affine_rows(xq, "to_q", d), k = affine_rows(src, "to_k", hk * d_h), v = affine_rows(src, "to_v", hk * d_h);
  SdpaShape s;
  s.B = B;
  s.n = n;
  s.mk = m;
  s.h = h;
  s.hk = hk;
  s.d_h = d_h;
  s.scale = 1 / std::sqrt(double(d_h));
  s.causal = c.dims.causal;
  s.key_mask = c.mask.empty() ? nullptr : c.mask.data();
  s.score_mask = mc.mask.empty() ? nullptr : mc.mask.data();
  s.score_bias = mc.bias.empty() ? nullptr : mc.bias.data();
  s.score_B = mc.mask_batch;
  s.score_h = mc.mask_heads;
  std::vector<double> o(size_t(B * n * d));
  sdpa_forward_ref(s, q.data(), k.data(), v.data(), o.data());
  return affine_rows(o, "to_out", d);
}

std::vector<MaskCase> reference_cases(const std::string& kind) {
  std::vector<MaskCase> cases;
  for (const bool causal : {false, true})
    for (const auto& [mb, mh] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 1}, {1, 2}, {2, 2}}) {
      cases.push_back(mask_case(base_case(kind, causal), mb, mh, true, false, 2));
      cases.push_back(mask_case(base_case(kind, causal), mb, mh, false, true));
      cases.push_back(mask_case(test::with_mask(base_case(kind, causal), 4), mb, mh, true, true));
    }
  cases.push_back(mask_case(test::cross(base_case(kind, false, 5), 9), 2, 2, true, true, 1));
  cases.push_back(mask_case(base_case(kind, true, 9, 4, 16, {{"kv_heads", 2}}), 1, 4, true, true));
  cases.push_back(mask_case(test::with_mask(base_case(kind, true, 130, 2, 16), 100), 2, 1, true, true, 70));  // tiles
  return cases;
}

template <class T>
void expect_matches_reference(const MaskCase& mc, double tol) {
  SCOPED_TRACE(describe(mc.c) + " mask " + std::to_string(mc.mask_batch) + "×" + std::to_string(mc.mask_heads) +
               (mc.mask.empty() ? "" : " bool") + (mc.bias.empty() ? "" : " bias"));
  AttentionRig<T> rig(mc.c, 3);
  MaskedRun<T> run;
  run.forward(mc, rig);
  const std::vector<double> ref = reference(mc, rig);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), tol);
  for (T e : rig.out) ASSERT_TRUE(std::isfinite(double(e)));
}

TEST(AttentionMask, MatchesPlainReference) {
  for (const std::string kind : {"full", "flash"})
    for (const MaskCase& mc : reference_cases(kind)) {
      expect_matches_reference<double>(mc, 1e-12);
      expect_matches_reference<float>(mc, 2e-5);
    }
}

// A boolean mask and the bias that is −inf where it hides and 0 elsewhere: the same bits.
TEST(AttentionMask, BooleanMaskEqualsItsMinusInfinityBias) {
  for (const std::string kind : {"full", "flash"}) {
    MaskCase as_mask = mask_case(base_case(kind, true, 70, 2, 16), 2, 2, true, false, 5);
    MaskCase as_bias = as_mask;
    as_bias.bias.resize(as_mask.mask.size());
    for (size_t e = 0; e < as_mask.mask.size(); ++e)
      as_bias.bias[e] = as_mask.mask[e] ? 0.0 : -std::numeric_limits<double>::infinity();
    as_bias.mask.clear();
    AttentionRig<float> a(as_mask.c), b(as_bias.c);
    MaskedRun<float> ra, rb;
    ra.forward(as_mask, a);
    rb.forward(as_bias, b);
    EXPECT_EQ(a.out, b.out) << kind;
  }
}

// A query that may attend no key (its mask row all false, or its bias row all −inf) outputs zero
// before the output map (so the layer gives to_out.bias there), not NaN as PyTorch's SDPA, and sends
// no gradient to the keys and values.
TEST(AttentionMask, QueryThatMayAttendNothingOutputsZero) {
  for (const std::string kind : {"full", "flash"})
    for (const bool as_bias : {false, true}) {
      const MaskCase mc = mask_case(base_case(kind, false, 6), 1, 1, !as_bias, as_bias, 2);
      AttentionRig<double> rig(mc.c);
      MaskedRun<double> run;
      run.forward(mc, rig);
      const std::vector<double> bo = test::param_values(rig, "to_out.bias");
      for (int64_t b = 0; b < mc.c.B; ++b)
        for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(rig.out[size_t((b * 6 + 2) * 8 + e)], bo[size_t(e)]) << kind;
      std::vector<double> w(rig.out.size(), 0.0), dx(rig.x.size());
      for (int64_t b = 0; b < mc.c.B; ++b)
        for (int64_t e = 0; e < 8; ++e) w[size_t((b * 6 + 2) * 8 + e)] = 1.0;  // only the blind rows' outputs
      rig.arena.zero_grad();
      rig.layer->backward(w.data(), dx.data());
      for (double g : dx) EXPECT_EQ(g, 0.0) << kind;
    }
}

void check_gradients(const MaskCase& mc) {
  SCOPED_TRACE(describe(mc.c));
  AttentionRig<double> rig(mc.c);
  MaskedRun<double> run;
  const std::vector<double> w = test::random_vector<double>(int64_t(rig.out.size()), 99);
  auto loss = [&] {
    run.forward(mc, rig);
    return test::weighted_sum(rig.out.data(), w.data(), int64_t(w.size()));
  };
  loss();
  std::vector<double> dx(rig.x.size()), dctx(rig.ctx.size());
  rig.arena.zero_grad();
  rig.layer->backward(w.data(), dx.data(), mc.c.m > 0 ? dctx.data() : nullptr);
  test::expect_gradient_matches(loss, rig.x.data(), int64_t(rig.x.size()), dx.data(), "input", 1e-6);
  if (mc.c.m > 0) test::expect_gradient_matches(loss, rig.ctx.data(), int64_t(rig.ctx.size()), dctx.data(), "context", 1e-6);
  for (const ParamInfo& p : rig.arena.params()) {
    const std::vector<double> analytic(rig.arena.grads() + p.offset, rig.arena.grads() + p.offset + p.numel);
    test::expect_gradient_matches(loss, rig.arena.values() + p.offset, p.numel, analytic.data(), p.name, 1e-6);
  }
}

TEST(AttentionMask, GradientsMatchFiniteDifferences) {
  for (const std::string kind : {"full", "flash"}) {
    check_gradients(mask_case(base_case(kind, false), 2, 2, true, true, 3));
    check_gradients(mask_case(test::with_mask(base_case(kind, true), 4), 1, 2, true, true));
    check_gradients(mask_case(base_case(kind, false, 6, 4, 8, {{"kv_heads", 1}, {"qkv_bias", true}}), 2, 1, false, true));
    check_gradients(mask_case(test::cross(base_case(kind, false, 4), 6), 1, 1, true, false, 0));
    check_gradients(mask_case(test::with_dropout(base_case(kind, true)), 2, 2, true, true));
  }
  check_gradients(mask_case(test::with_mask(base_case("flash", true, 66, 2, 8), 60), 2, 1, true, true, 65));
}

TEST(AttentionMask, FlashResultsIndependentOfThreads) {
  const MaskCase mc = mask_case(test::with_mask(base_case("flash", true, 200, 2, 64), 150), 2, 2, true, true, 7);
  std::vector<float> ref_out, ref_dx, ref_grads;
  for (int threads : {1, 3, 2}) {
    const RuntimeScope scope(RuntimeOptions{threads});
    AttentionRig<float> rig(mc.c);
    MaskedRun<float> run;
    run.forward(mc, rig);
    const auto w = test::random_vector<float>(int64_t(rig.out.size()), 7);
    std::vector<float> dx(rig.x.size());
    rig.arena.zero_grad();
    rig.layer->backward(w.data(), dx.data());
    const std::vector<float> grads(rig.arena.grads(), rig.arena.grads() + rig.arena.numel());
    if (ref_out.empty()) {
      ref_out = rig.out, ref_dx = dx, ref_grads = grads;
      continue;
    }
    EXPECT_EQ(rig.out, ref_out) << threads;
    EXPECT_EQ(dx, ref_dx) << threads;
    EXPECT_EQ(grads, ref_grads) << threads;
  }
}

// Every kind that does not declare AttentionSupport::attention_mask refuses a mask and a bias.
TEST(AttentionMask, EveryOtherKindRefusesIt) {
  int refused = 0;
  for (const AttentionFactory& f : AttentionRegistry::instance().entries()) {
    if (f.info.support.attention_mask) continue;
    SCOPED_TRACE(f.info.name);
    AttentionCase c = base_case(f.info.name, false, 8);
    AttentionRig<float> rig(c);
    for (const bool bias : {false, true}) {
      MaskCase mc = mask_case(c, 1, 1, !bias, bias);
      MaskedRun<float> run;
      try {
        run.forward(mc, rig);
        ADD_FAILURE() << "accepted an attention " << (bias ? "bias" : "mask");
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("does not support an attention mask or bias"), std::string::npos) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 10);
  EXPECT_TRUE(AttentionRegistry::instance().get("full").info.support.attention_mask);
  EXPECT_TRUE(AttentionRegistry::instance().get("flash").info.support.attention_mask);
}

TEST(AttentionMask, RefusesBadLayoutsAndValues) {
  for (const std::string kind : {"full", "flash"}) {
    SCOPED_TRACE(kind);
    const AttentionCase c = base_case(kind, false, 5);
    AttentionRig<float> rig(c);
    MaskedRun<float> run;
    auto call = [&](MaskCase mc, int64_t mb, int64_t mh) {
      AttentionInput<float> in = run.input(mc, rig);
      in.mask_batch = mb;
      in.mask_heads = mh;
      rig.layer->forward(in, rig.out.data(), false, 0);
    };
    const MaskCase big = mask_case(c, 3, 3, true, true);  // large enough for every layout tried
    EXPECT_NO_THROW(call(big, 2, 2));
    EXPECT_THROW(call(big, 3, 1), InvalidArgument);  // batch neither 1 nor B = 2
    EXPECT_THROW(call(big, 1, 3), InvalidArgument);  // heads neither 1 nor 2
    EXPECT_THROW(call(big, 0, 1), InvalidArgument);
    for (const double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
      MaskCase mc = mask_case(c, 1, 1, false, true);
      mc.bias[4] = bad;
      EXPECT_THROW(call(mc, 1, 1), InvalidArgument) << bad;
    }
  }
}

}  // namespace
}  // namespace lf
