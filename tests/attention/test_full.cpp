// Full softmax attention: against a plain reference, finite-difference gradients with masks,
// causality, cross-attention and dropout; and the registry.
#include <cmath>

#include "attention/sdpa.h"
#include "attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

AttentionCase full_case(bool causal, bool mask, bool bias, int64_t n = 6, int64_t m = 0) {
  AttentionCase c;
  c.kind = "full";
  c.dims = AttentionDims{8, 2, 8, causal, 0};
  c.options = {{"qkv_bias", bias}};
  c.n = n;
  c.m = m;
  if (mask) {
    const int64_t kv = m > 0 ? m : n;
    c.mask.assign(size_t(c.B * kv), 0);
    c.mask[size_t(kv - 1)] = 1;
    c.mask[size_t(kv)] = c.mask[size_t(2 * kv - 1)] = 1;
  }
  return c;
}

// Linear maps with plain loops, then the reference scaled dot-product attention.
std::vector<double> reference_full(const AttentionCase& c, const ParamArena<double>& a, const std::vector<double>& x,
                                   const std::vector<double>& ctx) {
  const int64_t d = c.dims.d_model, B = c.B, n = c.n, m = c.m > 0 ? c.m : c.n;
  const std::vector<double>& src = c.m > 0 ? ctx : x;
  auto P = [&](const char* name) { const int id = a.find(name); return id < 0 ? nullptr : a.value(id); };
  auto lin = [&](const std::vector<double>& in, int64_t rows, const double* W, const double* b) {
    std::vector<double> y(size_t(rows * d));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < d; ++o) {
        double s = b ? b[o] : 0;
        for (int64_t e = 0; e < d; ++e) s += in[size_t(r * d + e)] * W[o * d + e];
        y[size_t(r * d + o)] = s;
      }
    return y;
  };
  const auto q = lin(x, B * n, P("to_q.weight"), P("to_q.bias"));
  const auto k = lin(src, B * m, P("to_k.weight"), P("to_k.bias"));
  const auto v = lin(src, B * m, P("to_v.weight"), P("to_v.bias"));
  SdpaShape s{B, n, m, c.dims.n_heads, c.dims.n_heads, d / c.dims.n_heads,
              1 / std::sqrt(double(d / c.dims.n_heads)), c.dims.causal, c.mask.empty() ? nullptr : c.mask.data(), 0, 0};
  std::vector<double> o(q.size());
  sdpa_forward_ref(s, q.data(), k.data(), v.data(), o.data());
  return lin(o, B * n, P("to_out.weight"), P("to_out.bias"));
}

TEST(FullAttention, MatchesPlainReference) {
  for (const AttentionCase& c : {full_case(false, false, false), full_case(true, false, true), full_case(false, true, true),
                                 full_case(true, true, false), full_case(false, true, false, 5, 7)}) {
    AttentionRig<double> rig(c);
    rig.forward(c);
    const auto ref = reference_full(c, rig.arena, rig.x, rig.ctx);
    LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
    AttentionRig<float> rigf(c);
    rigf.forward(c);
    LF_EXPECT_CLOSE(rigf.out.data(), ref.data(), int64_t(ref.size()), 1e-5);
  }
}

TEST(FullAttention, GradientsMatchFiniteDifferences) {
  for (const AttentionCase& c : {full_case(false, false, false), full_case(true, false, true), full_case(false, true, true),
                                 full_case(true, true, true, 7), full_case(false, true, true, 5, 7)}) {
    SCOPED_TRACE(c.options.dump());
    test::check_attention_gradients(c);
  }
  AttentionCase drop = full_case(true, true, true);
  drop.dims.dropout = 0.3;
  drop.training = true;
  test::check_attention_gradients(drop);
}

TEST(FullAttention, CausalOutputIgnoresTheFuture) {
  AttentionCase c = full_case(true, false, true);
  AttentionRig<double> a(c), b(c);
  for (int64_t e = 0; e < 8; ++e) b.x[size_t((c.n - 1) * 8 + e)] += 3.0;  // change the last position of sample 0
  a.forward(c);
  b.forward(c);
  for (int64_t t = 0; t + 1 < c.n; ++t)
    for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(a.out[size_t(t * 8 + e)], b.out[size_t(t * 8 + e)]) << t;
}

TEST(FullAttention, RefusesBadInput) {
  ParamArena<float> arena;
  EXPECT_THROW(make_attention<float>({"full", {8, 3, 8, false, 0}, json::object(), ""}, arena), InvalidArgument);
  EXPECT_THROW(make_attention<float>({"full", {8, 2, 8, false, 0}, {{"k", 4}}, ""}, arena), InvalidArgument);
  AttentionCase c = full_case(false, false, false, 9);
  c.dims.max_len = 9;
  AttentionRig<float> rig(c);
  AttentionCase small = full_case(false, false, false);
  AttentionRig<float> layer(small);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(c), out.data(), false, 0), InvalidArgument);
}

TEST(AttentionRegistry, DeclaresWhatFullAndLinformerSupport) {
  EXPECT_TRUE(AttentionRegistry::instance().get("full").info.support.causal);
  EXPECT_FALSE(AttentionRegistry::instance().get("linformer").info.support.causal);
  EXPECT_TRUE(AttentionRegistry::instance().get("linformer").info.support.key_padding_mask);
}

}  // namespace
}  // namespace lf
