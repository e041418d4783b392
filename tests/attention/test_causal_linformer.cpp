// `causal_linformer` (blockwise compression): against a plain double reference of the documented
// definition for every option combination (learned / mean compression, windows of 0, 1 and 2 blocks,
// a cap on the compressed blocks, padding, a short sequence, block-causal without `causal`), equal to
// exact causal attention when the window covers the sequence, finite-difference gradients for each
// combination, no leakage (bitwise, float and double; a zero Jacobian above the diagonal), a decoding
// state whose size stops growing with a cap, linear cost and memory with a cap (the estimate checked
// against the peak RSS), and refusal of bad options.
#include <cmath>
#include <limits>

#include "attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

constexpr int64_t kD = 8, kH = 2;

// B = 2 sequences of n positions, block 3 and 2 slots unless `options` says otherwise.
AttentionCase clin_case(json options, int64_t n = 13, bool causal = true, int64_t max_len = 0) {
  AttentionCase c;
  c.kind = "causal_linformer";
  c.dims = AttentionDims{kD, kH, max_len ? max_len : n, causal, 0};
  c.options = test::with({{"block", 3}, {"slots", 2}}, options);
  c.B = 2;
  c.n = n;
  return c;
}

// The option combinations every check runs: compression × window × cap, biases on some.
std::vector<json> option_grid() {
  std::vector<json> grid;
  for (const char* compression : {"learned", "mean"})
    for (int64_t window : {0, 1, 2})
      for (int64_t cap : {0, 2})
        grid.push_back({{"compression", compression}, {"window_blocks", window}, {"max_blocks", cap},
                        {"qkv_bias", window == 1}});
  return grid;
}

// The definition, from the rig's parameters and input: per sample and head, query t in block
// β = ⌊t/c⌋ scores (scale 1/√d_h) the slots s of each block b in [lo, hi), hi = max(0, β − w),
// lo = max(0, hi − max_blocks) when capped, K̂_b[s] = Σ_j E[s][j] k_{b·c+j}, and exactly the
// positions j in [hi·c, t] (causal) or [hi·c, end of block β) (block-causal), unpadded; one
// softmax; out = W_o o + b_o. Padded positions' keys and values are zero.
template <class T>
std::vector<double> reference(const AttentionRig<T>& rig, const AttentionCase& c) {
  const int64_t d = c.dims.d_model, h = c.dims.n_heads, dh = d / h, n = c.n;
  const int64_t blk = c.options["block"], r = c.options["slots"];
  const int64_t w = c.options.value("window_blocks", 1), cap = c.options.value("max_blocks", 0);
  const bool mean = c.options.value("compression", "learned") == "mean";
  const auto wq = test::param_values(rig, "to_q.weight"), wk = test::param_values(rig, "to_k.weight"),
             wv = test::param_values(rig, "to_v.weight"), wo = test::param_values(rig, "to_out.weight");
  const auto bq = test::param_values(rig, "to_q.bias"), bk = test::param_values(rig, "to_k.bias"),
             bv = test::param_values(rig, "to_v.bias"), bo = test::param_values(rig, "to_out.bias");
  std::vector<double> E[2] = {test::param_values(rig, "proj_k"), test::param_values(rig, "proj_v")};
  if (mean)
    for (auto& e : E) {
      e.assign(size_t(r * blk), 0.0);
      for (int64_t s = 0; s < r; ++s)
        for (int64_t j = s * blk / r; j < (s + 1) * blk / r; ++j) e[size_t(s * blk + j)] = 1.0 / double((s + 1) * blk / r - s * blk / r);
    }
  std::vector<double> out;
  for (int64_t b = 0; b < c.B; ++b) {
    auto padded = [&](int64_t j) { return !c.mask.empty() && c.mask[size_t(b * n + j)]; };
    std::vector<std::vector<double>> q, k, v;
    for (int64_t t = 0; t < n; ++t) {
      const T* x = rig.x.data() + (b * n + t) * d;
      q.push_back(test::affine(wq, bq, x, d, d));
      k.push_back(padded(t) ? std::vector<double>(size_t(d), 0.0) : test::affine(wk, bk, x, d, d));
      v.push_back(padded(t) ? std::vector<double>(size_t(d), 0.0) : test::affine(wv, bv, x, d, d));
    }
    auto slot = [&](const std::vector<std::vector<double>>& src, int p, int64_t block, int64_t s) {
      std::vector<double> y(size_t(d), 0.0);
      for (int64_t j = 0; j < blk; ++j)
        for (int64_t e = 0; e < d; ++e) y[size_t(e)] += E[p][size_t(s * blk + j)] * src[size_t(block * blk + j)][size_t(e)];
      return y;
    };
    for (int64_t t = 0; t < n; ++t) {
      const int64_t beta = t / blk, hi = std::max<int64_t>(0, beta - w), lo = cap > 0 ? std::max<int64_t>(0, hi - cap) : 0;
      const int64_t last = c.dims.causal ? t : std::min(n, (beta + 1) * blk) - 1;
      std::vector<std::vector<double>> keys, values;
      for (int64_t bb = lo; bb < hi; ++bb)
        for (int64_t s = 0; s < r; ++s) {
          keys.push_back(slot(k, 0, bb, s));
          values.push_back(slot(v, 1, bb, s));
        }
      for (int64_t j = hi * blk; j <= last; ++j)
        if (!padded(j)) {
          keys.push_back(k[size_t(j)]);
          values.push_back(v[size_t(j)]);
        }
      std::vector<double> o(size_t(d), 0.0);
      for (int64_t i = 0; i < h; ++i) {
        std::vector<double> sc;
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (const auto& key : keys) {
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e) dot += q[size_t(t)][size_t(i * dh + e)] * key[size_t(i * dh + e)];
          sc.push_back(dot / std::sqrt(double(dh)));
          mx = std::max(mx, sc.back());
        }
        for (double& s : sc) sum += (s = std::exp(s - mx));
        for (size_t j = 0; j < keys.size(); ++j)
          for (int64_t e = 0; e < dh; ++e) o[size_t(i * dh + e)] += sc[j] / sum * values[j][size_t(i * dh + e)];
      }
      const auto y = test::affine(wo, bo, o.data(), d, d);
      out.insert(out.end(), y.begin(), y.end());
    }
  }
  return out;
}

template <class T>
auto reference_of(const AttentionCase& c) {
  return [c](const AttentionRig<T>& rig) { return reference(rig, c); };
}

void expect_matches_reference(const AttentionCase& c) {
  test::expect_matches_reference<double>(c, 1e-12, reference_of<double>(c));
  test::expect_matches_reference<float>(c, 2e-5, reference_of<float>(c));
}

// Sample 0 pads positions 1 and 7 (inside a compressed block and inside a window), sample 1 its last 3.
AttentionCase padded(AttentionCase c) {
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[1] = c.mask[7] = 1;
  for (int64_t j = c.n - 3; j < c.n; ++j) c.mask[size_t(c.n + j)] = 1;
  return c;
}

TEST(CausalLinformer, MatchesTheReferenceForEveryOption) {
  for (const json& o : option_grid()) {
    expect_matches_reference(clin_case(o));
    expect_matches_reference(padded(clin_case(o)));
    expect_matches_reference(clin_case(o, 8, true, 13));  // n < max_len, a partial last block
  }
  // Slots that do not divide the block (mean: sub-blocks of 1 and 2 positions); a block of 1; r = c.
  expect_matches_reference(clin_case({{"block", 3}, {"slots", 2}, {"compression", "mean"}}, 14));
  expect_matches_reference(clin_case({{"block", 1}, {"slots", 1}, {"max_blocks", 3}}, 9));
  expect_matches_reference(clin_case({{"block", 4}, {"slots", 4}, {"window_blocks", 0}}, 14));
  // Block-causal without `causal`, plain and padded.
  expect_matches_reference(clin_case({{"window_blocks", 1}}, 13, false));
  expect_matches_reference(padded(clin_case({{"max_blocks", 1}, {"window_blocks", 0}}, 13, false)));
}

// With a window of every block nothing is compressed: exact causal attention (`full`, whose maps
// draw the same parameters from the same names and seed).
TEST(CausalLinformer, EqualsFullAttentionWhenTheWindowCoversTheSequence) {
  for (const bool mask : {false, true}) {
    AttentionCase c = clin_case({{"window_blocks", 5}, {"qkv_bias", true}}, 13);
    if (mask) c = padded(c);
    AttentionCase f = c;
    f.kind = "full";
    f.options = {{"qkv_bias", true}};
    AttentionRig<double> a(c, 3), b(f, 3);
    a.forward(c);
    b.forward(f);
    LF_EXPECT_CLOSE(a.out.data(), b.out.data(), int64_t(a.out.size()), 1e-12);
  }
}

TEST(CausalLinformer, GradientsMatchFiniteDifferences) {
  for (const json& o : option_grid()) {
    SCOPED_TRACE(o.dump());
    test::check_attention_gradients(clin_case(o, 11));
  }
  test::check_attention_gradients(padded(clin_case({{"window_blocks", 1}, {"qkv_bias", true}}, 11)));
  test::check_attention_gradients(padded(clin_case({{"compression", "mean"}, {"max_blocks", 1}, {"window_blocks", 0}}, 11)));
  test::check_attention_gradients(test::with_dropout(clin_case({{"window_blocks", 1}}, 11)));
  test::check_attention_gradients(clin_case({{"window_blocks", 0}}, 11, false));  // block-causal
  test::check_attention_gradients(clin_case({{"max_blocks", 1}}, 7, true, 11));    // n < max_len
}

TEST(CausalLinformer, NeverReadsTheFuture) {
  for (const json& o : option_grid()) {
    test::expect_outputs_ignore_the_future<float>(clin_case(o, 13));
    test::expect_outputs_ignore_the_future<double>(clin_case(o, 13));
    test::expect_causal_jacobian_is_zero_above_the_diagonal(clin_case(o, 13));
  }
  const AttentionCase p = padded(clin_case({{"max_blocks", 2}}, 13));
  test::expect_outputs_ignore_the_future<float>(p, {}, test::LaterOutputs::kChangeUnlessPadded);
  test::expect_outputs_ignore_the_future<double>(test::with_dropout(clin_case({}, 13)));
}

// NaN and huge values at padded positions (inside compressed blocks and windows) change no real
// position's output: padded keys and values are selected away before compression.
TEST(CausalLinformer, PaddingGarbageDoesNotLeak) {
  for (const char* compression : {"learned", "mean"})
    for (const bool causal : {true, false}) {
      const AttentionCase c = padded(clin_case({{"compression", compression}, {"window_blocks", 0}, {"max_blocks", 2},
                                                {"qkv_bias", true}}, 13, causal));
      test::expect_padded_positions_have_no_influence<float>(c, test::nan_or(1e30));
      test::expect_padded_positions_have_no_influence<double>(c, test::nan_or(1e300));
    }
}

// Block-causal (no `causal`): a query sees the rest of its own block, never a later block.
TEST(CausalLinformer, WithoutCausalAQuerySeesItsOwnBlockButNoLaterOne) {
  const AttentionCase c = clin_case({{"window_blocks", 1}}, 12, false);
  AttentionRig<double> a(c), b(c);
  for (int64_t s = 0; s < c.B; ++s)
    for (int64_t e = 0; e < kD; ++e) b.x[size_t((s * c.n + 4) * kD + e)] += 0.5;  // position 4, block 1
  a.forward(c);
  b.forward(c);
  for (int64_t t = 0; t < c.n; ++t) {
    const bool same = a.out[size_t(t * kD)] == b.out[size_t(t * kD)];
    EXPECT_EQ(same, t < 3) << "position " << t;  // block 0 unchanged; blocks 1.. see position 4
  }
}

// The decoding state: with max_blocks its bytes stop growing once the context passes
// (max_blocks + window_blocks + 1)·c; without, the compressed slots keep growing (amortised).
TEST(CausalLinformer, DecodeStateIsBoundedWithACap) {
  for (const int64_t cap : {0, 3}) {
    SCOPED_TRACE(str_cat("max_blocks ", cap));
    const int64_t c = 4, n = 96;
    const AttentionCase ac = clin_case({{"block", c}, {"slots", 2}, {"window_blocks", 1}, {"max_blocks", cap}}, n);
    AttentionRig<float> rig(ac);
    rig.forward(ac);
    auto state = rig.layer->begin_decode(ac.B, kD);
    std::vector<double> bytes;
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> x(size_t(ac.B * kD)), out(x.size()), want(x.size());
      for (int64_t b = 0; b < ac.B; ++b)
        for (int64_t e = 0; e < kD; ++e) {
          x[size_t(b * kD + e)] = rig.x[size_t((b * n + t) * kD + e)];
          want[size_t(b * kD + e)] = rig.out[size_t((b * n + t) * kD + e)];
        }
      rig.layer->decode(*state, x.data(), 1, out.data());
      LF_EXPECT_CLOSE(out.data(), want.data(), int64_t(out.size()), 1e-4);
      bytes.push_back(state->bytes());
    }
    const int64_t settled = (3 + 1 + 1) * c;
    if (cap > 0) {
      for (int64_t t = settled; t < n; ++t) EXPECT_EQ(bytes[size_t(t)], bytes[size_t(settled)]) << "length " << t + 1;
    } else {
      EXPECT_GT(bytes.back(), bytes[size_t(settled)]);
      // Geometric growth: the slots' storage is re-laid out a logarithmic number of times.
      int64_t changes = 0;
      for (size_t t = 1; t < bytes.size(); ++t) changes += bytes[t] != bytes[t - 1];
      EXPECT_LE(changes, 8);
    }
  }
}

TEST(CausalLinformer, DecodeRefusesAForeignStateAndAnEmptyStep) {
  const AttentionCase c = clin_case({}, 6);
  AttentionRig<float> a(c), other(clin_case({}, 6));
  std::vector<float> x(2 * kD), out(x.size());
  auto state = a.layer->begin_decode(2, kD);
  EXPECT_THROW(a.layer->decode(*state, x.data(), 0, out.data()), InvalidArgument);
  EXPECT_THROW(a.layer->begin_decode(2, kD + 1), InvalidArgument);
  AttentionCase f = c;
  f.kind = "full";
  f.options = json::object();
  AttentionRig<float> full(f);
  auto foreign = full.layer->begin_decode(2, kD);
  EXPECT_THROW(a.layer->decode(*foreign, x.data(), 1, out.data()), InvalidArgument);
}

// With max_blocks every query reads at most M·r + (w+1)·c keys: FLOPs and memory grow linearly in n
// (uncapped, the compressed part grows as n²·r/c), and the memory estimate covers what a
// forward+backward really takes.
TEST(CausalLinformer, CostIsLinearWithACapAndItsMemoryEstimateHolds) {
  const int64_t d = 64, L = 16384;
  const json capped = {{"block", 64}, {"slots", 8}, {"window_blocks", 1}, {"max_blocks", 4}};
  ParamArena<float> arena, other;
  auto layer = make_attention<float>({"causal_linformer", {d, 4, L, true, 0}, capped, ""}, arena);
  auto uncapped = make_attention<float>({"causal_linformer", {d, 4, L, true, 0}, test::with(capped, {{"max_blocks", 0}}), ""}, other);
  const double f = layer->forward_flops(1, 8192, 8192) / layer->forward_flops(1, 4096, 4096);
  const double m = layer->activation_bytes(1, 8192, 8192, true) / layer->activation_bytes(1, 4096, 4096, true);
  EXPECT_NEAR(f, 2.0, 0.05);
  EXPECT_NEAR(m, 2.0, 0.05);
  EXPECT_GT(uncapped->forward_flops(1, 8192, 8192) / uncapped->forward_flops(1, 4096, 4096), 2.5);
  EXPECT_GT(uncapped->activation_bytes(1, 8192, 8192, true) / uncapped->activation_bytes(1, 4096, 4096, true), 2.5);
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  const double estimate = layer->activation_bytes(1, L, L, true);
  test::expect_peak_rss_growth_below(arena, *layer, L, d, int64_t(1.25 * estimate));
}

TEST(CausalLinformer, RefusesBadOptions) {
  const AttentionDims ok{8, 2, 16, true, 0};
  const std::vector<std::pair<json, std::string>> table = {
      {{{"block", 0}}, "option 'block' of attention kind 'causal_linformer' must be in 1 … max_len (16)"},
      {{{"block", 17}}, "must be in 1 … max_len"},
      {{{"block", 4}, {"slots", 5}}, "option 'slots' of attention kind 'causal_linformer' must be in 1 … block (4)"},
      {{{"slots", 0}}, "must be in 1 … block"},
      {{{"block", 4}, {"window_blocks", -1}}, "option 'window_blocks' of attention kind 'causal_linformer' must be in 0 … 4"},
      {{{"block", 4}, {"max_blocks", 5}}, "option 'max_blocks' of attention kind 'causal_linformer' must be in 0 … 4"},
      {{{"compression", "dynamic"}}, "must be one of learned | mean"},
      {{{"slot", 2}}, "unknown option 'slot'"},
  };
  for (const auto& [options, expect] : table) {
    ParamArena<float> arena;
    try {
      make_attention<float>({"causal_linformer", ok, options, ""}, arena);
      ADD_FAILURE() << "accepted " << options.dump();
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  }
  // The defaults: blocks of 64 (at most max_len), 8 slots (at most the block), one window block, no cap.
  const json resolved = validate_attention({"causal_linformer", AttentionDims{8, 2, 32, true, 0}, json::object(), ""});
  EXPECT_EQ(resolved, json({{"block", 32}, {"slots", 8}, {"window_blocks", 1}, {"max_blocks", 0},
                            {"compression", "learned"}, {"qkv_bias", false}}));
}

// `linformer` compresses along the whole sequence, so it refuses causal and names this kind.
TEST(CausalLinformer, LinformerRefusesCausalAndNamesIt) {
  ParamArena<float> arena;
  try {
    make_attention<float>({"linformer", AttentionDims{8, 2, 16, true, 0}, {{"k", 4}}, ""}, arena);
    ADD_FAILURE() << "linformer accepted causal";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("use 'causal_linformer'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lf
