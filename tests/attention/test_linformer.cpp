// Linformer attention: against a plain reference of the formula, finite-difference gradients for
// every sharing mode, projection (learned, fixed, mean, max, conv, conv_full), association order and
// head width, padding masks and empty pooling windows, short sequences against models of that
// length, layerwise sharing, Theorem 2's fixed projections, and refusal of bad configurations.
#include <cmath>
#include <limits>
#include <map>

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

int64_t head_width(const AttentionCase& c) { return c.options.value("dim_head", c.dims.d_model / c.dims.n_heads); }

// One compressed key or value tensor of query head i of sample b, (k × d_h), and its hidden slots,
// built from the formula of each projection independently of the layer's code. K (m × kv_dim): the
// projected keys or values of the sample with padded rows already zero.
struct Compressed {
  std::vector<double> c;
  std::vector<bool> hidden;
};

Compressed reference_compress(const AttentionCase& c, const ParamArena<double>& arena, const std::vector<double>& K,
                              int64_t m, const uint8_t* pad, int64_t i, int p) {
  const json& o = c.options;
  const std::string sharing = o.value("sharing", "headwise"), proj = o.value("projection", "learned");
  const int64_t k = o["k"], L = c.dims.max_len, h = c.dims.n_heads, dh = head_width(c);
  const bool one_kv = o.value("one_kv_head", false), e_is_f = sharing == "kv" || sharing == "layerwise";
  const int64_t kvd = one_kv ? dh : h * dh, g = one_kv ? 0 : i, e = sharing == "none" ? i : 0, w = L / k;
  const std::string name = sharing == "layerwise" ? "shared_proj" : (p == 0 || e_is_f) ? "proj_k" : "proj_v";
  auto param = [&](const std::string& n) {
    const int id = arena.find(n);
    EXPECT_GE(id, 0) << n;
    return arena.value(id);
  };
  auto real = [&](int64_t t) { return t < m && !(pad && pad[t]); };
  Compressed out{std::vector<double>(size_t(k * dh), 0.0), std::vector<bool>(size_t(k), false)};
  for (int64_t j = 0; j < k; ++j) {
    if (proj == "learned" || proj == "fixed") {  // every position through E (the first m columns)
      const double* E = param(name) + (e * k + j) * L;
      // Theorem 2 with one stored matrix (kv, layerwise): it is R; E = δR, F = e^{-δ}R.
      const double delta = o.value("delta", 1.0);
      const double scale = proj == "fixed" && e_is_f ? (p == 0 ? delta : std::exp(-delta)) : 1.0;
      for (int64_t t = 0; t < m; ++t)
        for (int64_t cc = 0; cc < dh; ++cc) out.c[size_t(j * dh + cc)] += scale * E[t] * K[size_t(t * kvd + g * dh + cc)];
      continue;
    }
    int64_t count = 0;
    for (int64_t t = j * w; t < (j + 1) * w; ++t) count += real(t);
    out.hidden[size_t(j)] = count == 0;
    if (count == 0) continue;
    for (int64_t cc = 0; cc < dh; ++cc) {
      double acc = proj == "max" ? -INFINITY : 0.0;
      if (proj == "conv_full") {
        // Group e's output channel: all kv channels in (headwise etc.), or the d_h of kv head g (none).
        const int64_t gw = sharing == "none" ? dh : kvd, ch = sharing == "none" ? cc : g * dh + cc;
        const double* W = param(name + "_conv.weight");
        acc = param(name + "_conv.bias")[e * gw + ch];
        for (int64_t tau = 0; tau < w; ++tau) {
          if (!real(j * w + tau)) continue;
          for (int64_t in = 0; in < gw; ++in) {
            const int64_t kc = sharing == "none" ? g * dh + in : in;
            acc += W[((e * gw + ch) * gw + in) * w + tau] * K[size_t((j * w + tau) * kvd + kc)];
          }
        }
      } else {
        for (int64_t tau = 0; tau < w; ++tau) {
          const int64_t t = j * w + tau;
          if (!real(t)) continue;
          const double v = K[size_t(t * kvd + g * dh + cc)];
          if (proj == "max")
            acc = std::max(acc, v);
          else
            acc += (proj == "mean" ? 1.0 / double(count) : param(name + "_kernel")[e * w + tau]) * v;
        }
      }
      out.c[size_t(j * dh + cc)] = acc;
    }
  }
  return out;
}

// The layer's formula with plain loops, from the parameters in the arena: keys and values from the
// context when the case has one, a query whose slots are all hidden gets a zero attention output.
std::vector<double> reference_linformer(const AttentionCase& c, const ParamArena<double>& arena, const std::vector<double>& x,
                                        const std::vector<double>& ctx = {}) {
  const json& o = c.options;
  const int64_t B = c.B, n = c.n, m = c.m > 0 ? c.m : c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = head_width(c);
  const int64_t k = o["k"], qd = h * dh;
  const bool one_kv = o.value("one_kv_head", false), share_lin = o.value("share_kv_linear", false);
  const int64_t kvd = one_kv ? dh : qd;
  auto param = [&](const std::string& name) -> const double* {
    const int id = arena.find(name);
    return id < 0 ? nullptr : arena.value(id);
  };
  const double *Wq = param("to_q.weight"), *Wk = param("to_k.weight"), *Wo = param("to_out.weight"), *bo = param("to_out.bias");
  const double* Wv = share_lin ? Wk : param("to_v.weight");
  const double *bq = param("to_q.bias"), *bk = param("to_k.bias"), *bv = share_lin ? bk : param("to_v.bias");
  // row (in) · W (out, in)ᵀ + b, entry r.
  auto lin = [](const double* row, const double* W, const double* b, int64_t in, int64_t r) {
    double s = b ? b[r] : 0.0;
    for (int64_t e = 0; e < in; ++e) s += row[e] * W[r * in + e];
    return s;
  };
  const std::vector<double>& src = c.m > 0 ? ctx : x;
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* pad = c.mask.empty() ? nullptr : &c.mask[size_t(b * m)];
    std::vector<double> Q(size_t(n * qd)), K(size_t(m * kvd)), V(size_t(m * kvd)), O(size_t(n * qd));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < qd; ++r) Q[size_t(t * qd + r)] = lin(&x[size_t((b * n + t) * d)], Wq, bq, d, r);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = 0; r < kvd; ++r) {
        const bool p = pad && pad[t];
        K[size_t(t * kvd + r)] = p ? 0.0 : lin(&src[size_t((b * m + t) * d)], Wk, bk, d, r);
        V[size_t(t * kvd + r)] = p ? 0.0 : lin(&src[size_t((b * m + t) * d)], Wv, bv, d, r);
      }
    for (int64_t i = 0; i < h; ++i) {
      const Compressed Kc = reference_compress(c, arena, K, m, pad, i, 0), Vc = reference_compress(c, arena, V, m, pad, i, 1);
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> s(static_cast<size_t>(k));
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < k; ++j) {
          for (int64_t cc = 0; cc < dh; ++cc) s[size_t(j)] += Q[size_t(t * qd + i * dh + cc)] * Kc.c[size_t(j * dh + cc)];
          s[size_t(j)] = Kc.hidden[size_t(j)] ? -INFINITY : s[size_t(j)] / std::sqrt(double(dh));
          mx = std::max(mx, s[size_t(j)]);
        }
        for (auto& v : s) sum += (v = mx == -INFINITY ? 0.0 : std::exp(v - mx));
        for (int64_t cc = 0; cc < dh; ++cc) {
          double acc = 0;
          for (int64_t j = 0; j < k; ++j) acc += sum > 0 ? s[size_t(j)] / sum * Vc.c[size_t(j * dh + cc)] : 0.0;
          O[size_t(t * qd + i * dh + cc)] = acc;
        }
      }
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < d; ++r) out[size_t((b * n + t) * d + r)] = lin(&O[size_t(t * qd)], Wo, bo, qd, r);
  }
  return out;
}

// The option matrix: every sharing mode × projection × association order (max and conv_full only
// project first), with one kv head, biases, head widths, masks (some emptying a window) and short
// sequences (some ending inside a window) spread over it.
std::vector<AttentionCase> option_matrix() {
  std::vector<AttentionCase> cases;
  int index = 0;
  for (const char* sharing : {"none", "headwise", "kv", "layerwise"})
    for (const char* projection : {"learned", "fixed", "mean", "max", "conv", "conv_full"})
      for (const char* order : {"project_first", "compress_first"}) {
        const bool pf_only = std::string(projection) == "max" || std::string(projection) == "conv_full";
        json o = {{"sharing", sharing}, {"projection", projection}, {"order", pf_only && index % 2 ? "auto" : order},
                  {"one_kv_head", index % 2 == 1}, {"qkv_bias", index % 3 != 2}};
        if (index % 5 == 2) o["dim_head"] = index % 2 ? 3 : 6;
        const int64_t n = index % 4 == 3 ? 6 : index % 7 == 5 ? 5 : kL;
        cases.push_back(linformer_case(o, n, index % 5 != 4));
        ++index;
      }
  cases.push_back(linformer_case({{"sharing", "kv"}, {"share_kv_linear", true}}));
  cases.push_back(linformer_case({{"sharing", "kv"}, {"share_kv_linear", true}, {"projection", "fixed"}, {"delta", 0.6}}, 7, true));
  cases.push_back(linformer_case({{"sharing", "headwise"}, {"share_kv_linear", true}, {"qkv_bias", true}, {"order", "compress_first"}}, 7, true));
  cases.push_back(linformer_case({{"sharing", "headwise"}, {"share_kv_linear", true}, {"projection", "max"}}, 7, true));
  cases.push_back(linformer_case({{"sharing", "none"}, {"one_kv_head", true}, {"share_kv_linear", true}, {"order", "project_first"}}, 5));
  cases.push_back(linformer_case({{"sharing", "layerwise"}, {"projection", "mean"}, {"share_kv_linear", true}, {"qkv_bias", true}}, 7, true));
  cases.push_back(linformer_case({{"init", "xavier"}, {"k", 8}}));
  cases.push_back(linformer_case({{"projection", "conv_full"}, {"k", 2}, {"dim_head", 5}, {"qkv_bias", true}}, 7, true));
  // Cross-attention: 5 queries over a context of 7 (the last window partly missing), one key padded.
  for (const char* projection : {"learned", "mean", "max", "conv_full"}) {
    AttentionCase x = linformer_case({{"sharing", "headwise"}, {"projection", projection}, {"qkv_bias", true}}, 5);
    x.m = 7;
    x.mask.assign(size_t(x.B * x.m), 0);
    x.mask[3] = 1;
    cases.push_back(x);
  }
  return cases;
}

std::string case_name(const AttentionCase& c) {
  return c.options.dump() + " n=" + std::to_string(c.n) + (c.m ? " m=" + std::to_string(c.m) : "") + (c.mask.empty() ? "" : " masked");
}

// The default k compresses: max_len/4 (the paper's 128 at n = 512), between 16 and 256, never above n.
TEST(Linformer, DefaultKCompressesTheSequence) {
  auto default_k = [](int64_t max_len) {
    const json resolved = validate_attention(AttentionSpec{"linformer", AttentionDims{32, 4, max_len, false, 0}, {}, ""});
    return resolved.at("k").get<int64_t>();
  };
  EXPECT_EQ(default_k(512), 128);
  EXPECT_EQ(default_k(1024), 256);
  EXPECT_EQ(default_k(4096), 256);
  EXPECT_EQ(default_k(256), 64);
  EXPECT_EQ(default_k(128), 32);
  EXPECT_EQ(default_k(64), 16);
  EXPECT_EQ(default_k(16), 16);
  EXPECT_EQ(default_k(8), 8);
  for (int64_t n = 32; n <= 8192; n *= 2) EXPECT_LT(default_k(n), n) << n;
}

TEST(Linformer, MatchesPlainReferenceInFloatAndDouble) {
  for (const AttentionCase& c : option_matrix()) {
    SCOPED_TRACE(case_name(c));
    AttentionRig<double> rig(c);
    rig.forward(c);
    const std::vector<double> ref = reference_linformer(c, rig.arena, rig.x, rig.ctx);
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
  c.options["projection"] = "max";  // dropout on a masked, pooled slot set
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[2] = c.mask[3] = 1;
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
  for (const char* projection : {"learned", "fixed", "mean", "conv"})
    for (const char* sharing : {"none", "headwise", "kv", "layerwise"})
      for (bool one_kv : {false, true}) {
        SCOPED_TRACE(std::string(projection) + " " + sharing + (one_kv ? " one_kv_head" : ""));
        AttentionCase pf = linformer_case(
            {{"sharing", sharing}, {"projection", projection}, {"one_kv_head", one_kv}, {"qkv_bias", true}, {"order", "project_first"}}, 7, true);
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
    for (const char* projection : {"learned", "mean", "max", "conv", "conv_full"})
      for (const char* order : {"project_first", "compress_first"})
        for (const char* sharing : {"none", "headwise"}) {
          const std::string proj = projection;
          if ((proj == "max" || proj == "conv_full") && std::string(order) == "compress_first") continue;
          SCOPED_TRACE(proj + " " + order + " " + sharing + (with_nan ? " NaN" : " finite"));
          AttentionCase c =
              linformer_case({{"sharing", sharing}, {"projection", projection}, {"qkv_bias", true}, {"order", order}}, kL, true);
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
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "max"}}), 0);
  // conv_full: nn.Conv1d weights (out, in, w) and biases; per head (groups of d_h) with sharing none.
  const int64_t w = kL / kK, dh = kD / kH;
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "conv_full"}}), 2 * (kD * kD * w + kD));
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "conv_full"}, {"sharing", "kv"}}), kD * kD * w + kD);
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "conv_full"}, {"sharing", "none"}}), 2 * (kH * dh * dh * w + kD));
  EXPECT_EQ(proj_numel({{"k", kK}, {"projection", "conv_full"}, {"one_kv_head", true}}), 2 * (dh * dh * w + dh));
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
      {ok, {{"projection", "median"}}, "must be one of learned | fixed | mean | max | conv | conv_full"},
      {ok, {{"k", 5}, {"projection", "mean"}}, "divisible by k"},
      {ok, {{"k", 3}, {"projection", "max"}}, "divisible by k"},
      {ok, {{"k", 5}, {"projection", "conv_full"}}, "divisible by k"},
      {ok, {{"projection", "max"}, {"order", "compress_first"}}, "cannot be compress_first with projection 'max'"},
      {ok, {{"projection", "conv_full"}, {"order", "compress_first"}}, "cannot be compress_first"},
      {ok, {{"dim_head", 0}}, "option 'dim_head' of attention kind 'linformer' must be in 1"},
      {ok, {{"dim_head", 100000}}, "must be in 1"},
      {ok, {{"dim_head", 2.5}}, "must be an integer"},
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

// Copies every parameter of `from` into the same-named, same-shaped one of `to`; returns how many of
// to's parameters have no such twin.
int copy_matching_params(const ParamArena<double>& from, ParamArena<double>& to) {
  int missing = 0;
  for (const ParamInfo& p : to.params()) {
    const int id = from.find(p.name);
    if (id < 0 || from.info(id).shape != p.shape) {
      ++missing;
      continue;
    }
    std::copy(from.value(id), from.value(id) + p.numel, to.values() + p.offset);
  }
  return missing;
}

bool project_first_only(const std::string& projection) { return projection == "max" || projection == "conv_full"; }

TEST(Linformer, PooledShortSequenceEqualsAModelOfThatLength) {
  // A layer built for max_len 8 (k = 4, windows of 2) run on 6 positions: its last window holds no
  // position and is hidden from the softmax, so outputs and gradients are those of a layer built for
  // max_len 6 with the same windows (k = 3) and the same parameters, with or without a padding mask
  // (which here empties one more window of sample 1 and half of one of sample 0).
  for (const char* projection : {"mean", "max", "conv", "conv_full"})
    for (const char* sharing : {"none", "headwise", "kv", "layerwise"})
      for (const char* order : {"project_first", "compress_first"})
        for (bool masked : {false, true}) {
          if (project_first_only(projection) && std::string(order) == "compress_first") continue;
          SCOPED_TRACE(std::string(projection) + " " + sharing + " " + order + (masked ? " masked" : ""));
          const AttentionCase big = linformer_case(
              {{"projection", projection}, {"sharing", sharing}, {"order", order}, {"qkv_bias", true}, {"k", 4}}, 6, masked);
          AttentionCase small = big;
          small.dims.max_len = 6;
          small.options["k"] = 3;
          AttentionRig<double> a(big), b(small);
          ASSERT_EQ(copy_matching_params(a.arena, b.arena), 0);
          b.x = a.x;
          a.forward(big);
          b.forward(small);
          LF_EXPECT_CLOSE(b.out.data(), a.out.data(), int64_t(a.out.size()), 1e-13);
          const auto w = test::random_vector<double>(int64_t(a.out.size()), 5);
          std::vector<double> dxa(a.x.size()), dxb(b.x.size());
          a.arena.zero_grad();
          b.arena.zero_grad();
          a.layer->backward(w.data(), dxa.data());
          b.layer->backward(w.data(), dxb.data());
          LF_EXPECT_CLOSE(dxb.data(), dxa.data(), int64_t(dxa.size()), 1e-12);
          // Relative to a floor: some gradients are zero up to rounding (with mean pooling every slot
          // holds b_k once, a shift of all scores that the softmax ignores, so to_k.bias gets none).
          for (const ParamInfo& p : b.arena.params())
            EXPECT_LE(test::max_rel_error(b.arena.grad(b.arena.find(p.name)), a.arena.grad(a.arena.find(p.name)), p.numel, 1e-3),
                      1e-12)
                << p.name;
        }
}

TEST(Linformer, PaddedBatchEqualsTheUnpaddedShorterSequence) {
  // One sequence padded from position `len` on equals the same `len` positions without padding:
  // outputs at the real positions, their input gradients and every parameter gradient (the padded
  // positions' outputs get no upstream gradient). len 5 and 3 end inside a window of 2.
  for (const char* projection : {"learned", "fixed", "mean", "max", "conv", "conv_full"})
    for (const char* sharing : {"none", "headwise", "kv"})
      for (const char* order : {"project_first", "compress_first"})
        for (int64_t len : {5, 6, 3}) {
          if (project_first_only(projection) && std::string(order) == "compress_first") continue;
          SCOPED_TRACE(std::string(projection) + " " + sharing + " " + order + " len=" + std::to_string(len));
          const json o = {{"projection", projection}, {"sharing", sharing}, {"order", order}, {"qkv_bias", true}};
          AttentionCase padded = linformer_case(o, kL);
          padded.B = 1;
          padded.mask.assign(size_t(kL), 0);
          for (int64_t t = len; t < kL; ++t) padded.mask[size_t(t)] = 1;
          AttentionCase shorter = linformer_case(o, len);
          shorter.B = 1;
          AttentionRig<double> a(padded), b(shorter);
          std::copy(a.x.begin(), a.x.begin() + len * kD, b.x.begin());
          a.forward(padded);
          b.forward(shorter);
          LF_EXPECT_CLOSE(a.out.data(), b.out.data(), len * kD, 1e-13);
          const auto wb = test::random_vector<double>(len * kD, 5);
          std::vector<double> wa(a.out.size(), 0.0), dxa(a.x.size()), dxb(b.x.size());
          std::copy(wb.begin(), wb.end(), wa.begin());
          a.arena.zero_grad();
          b.arena.zero_grad();
          a.layer->backward(wa.data(), dxa.data());
          b.layer->backward(wb.data(), dxb.data());
          LF_EXPECT_CLOSE(dxa.data(), dxb.data(), len * kD, 1e-12);
          for (int64_t i = len * kD; i < kL * kD; ++i) EXPECT_EQ(dxa[size_t(i)], 0.0) << "padded input " << i;
          LF_EXPECT_CLOSE(a.arena.grads(), b.arena.grads(), a.arena.numel(), 1e-12);
        }
}

TEST(Linformer, EveryKeyPaddedGivesTheOutputBias) {
  // Sample 0 has every key padded: no slot holds a real position (pooled projections hide them all;
  // learned and fixed ones compress zeros), so its attention output is 0 and the layer outputs
  // to_out.bias at every position, without NaN, in float and double; sample 1 is unaffected, and the
  // gradients are finite and match finite differences.
  for (const char* projection : {"learned", "fixed", "mean", "max", "conv", "conv_full"})
    for (const char* order : {"project_first", "compress_first"}) {
      if (project_first_only(projection) && std::string(order) == "compress_first") continue;
      SCOPED_TRACE(std::string(projection) + " " + order);
      AttentionCase c = linformer_case({{"projection", projection}, {"order", order}, {"qkv_bias", true}}, 6);
      c.mask.assign(size_t(c.B * c.n), 0);
      std::fill_n(c.mask.begin(), c.n, uint8_t(1));
      AttentionRig<double> rig(c);
      AttentionRig<float> rigf(c);
      rig.forward(c);
      rigf.forward(c);
      const double* bo = rig.arena.value(rig.arena.find("to_out.bias"));
      const float* bof = rigf.arena.value(rigf.arena.find("to_out.bias"));
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t e = 0; e < kD; ++e) {
          EXPECT_EQ(rig.out[size_t(t * kD + e)], bo[e]);
          EXPECT_EQ(rigf.out[size_t(t * kD + e)], bof[e]);
        }
      AttentionCase one = c;  // sample 1 alone
      one.B = 1;
      one.mask.clear();
      AttentionRig<double> alone(one);
      std::copy(rig.x.begin() + c.n * kD, rig.x.end(), alone.x.begin());
      alone.forward(one);
      LF_EXPECT_CLOSE(rig.out.data() + c.n * kD, alone.out.data(), c.n * kD, 1e-13);
      const auto w = test::random_vector<float>(int64_t(rigf.out.size()), 5);
      std::vector<float> dx(rigf.x.size());
      rigf.layer->backward(w.data(), dx.data());
      for (float v : dx) EXPECT_TRUE(std::isfinite(v));
      for (int64_t i = 0; i < rigf.arena.numel(); ++i) EXPECT_TRUE(std::isfinite(rigf.arena.grads()[i]));
      test::check_attention_gradients(c);
    }
}

TEST(Linformer, FixedWithOneStoredMatrixFollowsTheoremTwo) {
  // kv and layerwise sharing store one matrix for E and F: it holds R ~ N(0, 1/k) (not trainable), and
  // the layer uses E = δR and F = e^{-δ}R, so it equals a headwise layer whose proj_k, proj_v are δR
  // and e^{-δ}R of that R.
  const double delta = 0.7;
  for (const char* sharing : {"kv", "layerwise"}) {
    SCOPED_TRACE(sharing);
    AttentionCase one = linformer_case({{"projection", "fixed"}, {"delta", delta}, {"sharing", sharing}, {"qkv_bias", true}}, 7, true);
    AttentionCase two = one;
    two.options["sharing"] = "headwise";
    AttentionRig<double> a(one), b(two);
    const int r = a.arena.find(std::string(sharing) == "kv" ? "proj_k" : "shared_proj");
    ASSERT_GE(r, 0);
    EXPECT_LT(a.arena.find("proj_v"), 0);
    EXPECT_FALSE(a.arena.info(r).trainable);
    const double* R = a.arena.value(r);
    double sumsq = 0;
    for (int64_t i = 0; i < kK * kL; ++i) sumsq += R[i] * R[i];
    EXPECT_NEAR(sumsq / double(kK * kL), 1.0 / kK, 0.5 / kK);
    EXPECT_EQ(copy_matching_params(a.arena, b.arena), std::string(sharing) == "kv" ? 1 : 2);  // proj_v (and proj_k)
    double* E = b.arena.values() + b.arena.info(b.arena.find("proj_k")).offset;
    double* F = b.arena.values() + b.arena.info(b.arena.find("proj_v")).offset;
    for (int64_t i = 0; i < kK * kL; ++i) {
      E[i] = delta * R[i];
      F[i] = std::exp(-delta) * R[i];
    }
    b.x = a.x;
    a.forward(one);
    b.forward(two);
    LF_EXPECT_CLOSE(a.out.data(), b.out.data(), int64_t(a.out.size()), 1e-13);
  }
}

TEST(Linformer, DimHeadFollowsLucidrains) {
  // lucidrains' dim_head: Q maps d → h·dim_head, K and V d → (kv heads)·dim_head, the output
  // h·dim_head → d, scores scaled by 1/√dim_head (the reference checks the values); default d/h.
  auto shapes = [](const json& o) {
    ParamArena<float> arena;
    make_attention<float>({"linformer", {kD, kH, kL, false, 0}, o, ""}, arena);
    std::map<std::string, std::vector<int64_t>> out;
    for (const ParamInfo& p : arena.params()) out[p.name] = p.shape;
    return out;
  };
  auto s = shapes({{"k", kK}, {"dim_head", 5}, {"qkv_bias", true}});
  EXPECT_EQ(s["to_q.weight"], (std::vector<int64_t>{10, kD}));
  EXPECT_EQ(s["to_k.weight"], (std::vector<int64_t>{10, kD}));
  EXPECT_EQ(s["to_v.weight"], (std::vector<int64_t>{10, kD}));
  EXPECT_EQ(s["to_q.bias"], (std::vector<int64_t>{10}));
  EXPECT_EQ(s["to_out.weight"], (std::vector<int64_t>{kD, 10}));
  EXPECT_EQ(s["to_out.bias"], (std::vector<int64_t>{kD}));
  s = shapes({{"k", kK}, {"dim_head", 5}, {"one_kv_head", true}});
  EXPECT_EQ(s["to_k.weight"], (std::vector<int64_t>{5, kD}));
  EXPECT_EQ(s["to_q.weight"], (std::vector<int64_t>{10, kD}));
  // The default equals dim_head = d/h bit for bit.
  AttentionCase def = linformer_case({{"qkv_bias", true}}, 7, true), four = def;
  four.options["dim_head"] = kD / kH;
  AttentionRig<float> a(def), b(four);
  a.forward(def);
  b.forward(four);
  EXPECT_EQ(a.out, b.out);
  ParamArena<float> arena;
  json resolved = validate_attention({"linformer", {kD, kH, kL, false, 0}, {{"k", kK}}, ""});
  EXPECT_EQ(resolved["dim_head"], kD / kH);
}

TEST(Linformer, ConvFullWithDiagonalWeightsIsConv) {
  // conv_full whose weight mixes no channels (W[o, c, τ] = [o = c] kernel[τ]) and has zero bias is
  // the per-channel `conv` with that kernel.
  const int64_t w = kL / kK;
  for (const char* sharing : {"headwise", "none", "kv"})
    for (bool one_kv : {false, true}) {
      SCOPED_TRACE(std::string(sharing) + (one_kv ? " one_kv_head" : ""));
      AttentionCase full = linformer_case({{"projection", "conv_full"}, {"sharing", sharing}, {"one_kv_head", one_kv}, {"qkv_bias", true}}, 7, true);
      AttentionCase conv = full;
      conv.options["projection"] = "conv";
      AttentionRig<double> a(full), b(conv);
      const int64_t groups = std::string(sharing) == "none" ? kH : 1;
      const int64_t gw = groups > 1 ? kD / kH : one_kv ? kD / kH : kD;
      for (const char* name : {"proj_k", "proj_v"}) {
        if (std::string(sharing) == "kv" && std::string(name) == "proj_v") continue;
        const double* kernel = b.arena.value(b.arena.find(std::string(name) + "_kernel"));
        const ParamInfo& W = a.arena.info(a.arena.find(std::string(name) + "_conv.weight"));
        const ParamInfo& bias = a.arena.info(a.arena.find(std::string(name) + "_conv.bias"));
        std::fill_n(a.arena.values() + W.offset, W.numel, 0.0);
        std::fill_n(a.arena.values() + bias.offset, bias.numel, 0.0);
        for (int64_t e = 0; e < groups; ++e)
          for (int64_t o = 0; o < gw; ++o)
            for (int64_t tau = 0; tau < w; ++tau) a.arena.values()[W.offset + ((e * gw + o) * gw + o) * w + tau] = kernel[e * w + tau];
      }
      a.forward(full);
      b.forward(conv);
      LF_EXPECT_CLOSE(a.out.data(), b.out.data(), int64_t(a.out.size()), 1e-13);
    }
}

TEST(Linformer, PoolingResultsIndependentOfThreads) {
  for (const char* projection : {"mean", "max", "conv", "conv_full"}) {
    SCOPED_TRACE(projection);
    test::expect_results_independent_of_threads(linformer_case({{"projection", projection}, {"qkv_bias", true}}, 7, true));
  }
}

TEST(Linformer, FlopsCountThePoolingThatRuns) {
  // d = 64, h = 4, max_len = n = 256, k = 32 (windows of 8): the K/V maps 2·2·m·d², Q and out 2·2·n·d²,
  // scores and P·V 2·2·n·k·d; then the compression: conv_full 2·2·m·d² (a d×d product per position),
  // max m·d comparisons per tensor, mean (compressing first) 2·m·d once for both plus the maps of
  // the k compressed rows 2·2·k·d².
  const AttentionDims dims{64, 4, 256, false, 0};
  const double n = 256, d = 64, k = 32;
  auto flops = [&](const json& o) {
    ParamArena<float> arena;
    json opt = o;
    opt["k"] = 32;
    return make_attention<float>({"linformer", dims, opt, ""}, arena)->forward_flops(1, 256, 256);
  };
  const double rest = 4 * n * d * d + 4 * n * k * d;
  EXPECT_DOUBLE_EQ(flops({{"projection", "conv_full"}}), rest + 4 * n * d * d + 4 * n * d * d);
  EXPECT_DOUBLE_EQ(flops({{"projection", "max"}}), rest + 4 * n * d * d + 2 * n * d);
  EXPECT_DOUBLE_EQ(flops({{"projection", "mean"}}), rest + 2 * n * d + 4 * k * d * d);
  EXPECT_DOUBLE_EQ(flops({{"projection", "learned"}}), rest + 2 * 2 * k * n * d + 4 * k * d * d);
  // dim_head 32: Q and out are d → 128 and back, scores and the K/V maps 128 wide.
  EXPECT_DOUBLE_EQ(flops({{"projection", "max"}, {"dim_head", 32}}),
                   4 * n * d * 128 + 4 * n * k * 128 + 4 * n * d * 128 + 2 * n * 128);
}

}  // namespace
}  // namespace lf
