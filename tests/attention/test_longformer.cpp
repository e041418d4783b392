// `longformer`: pattern and output against the definition (dilated window + global positions), the key
// padding mask (garbage in padded positions changes nothing), equal to `full` when the window covers
// the sequence, finite-difference gradients for every option, causality, bad options.
#include <set>

#include "sparse_kind_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::sparse_case;

// The documented definition: t ∈ G, j ∈ G, or j = t + k·δ with |k| ≤ ⌊w/2⌋ (causal: j = t − k·δ, 0 ≤ k ≤ w).
test::Allowed longformer_allowed(int64_t w, int64_t dil, std::set<int64_t> G, bool causal) {
  return [=](int64_t t, int64_t j, int64_t) {
    const int64_t dist = std::abs(t - j);
    const bool window = dist % dil == 0 && (causal ? (j <= t && dist / dil <= w) : dist / dil <= w / 2);
    return G.count(t) > 0 || G.count(j) > 0 || window;
  };
}

AttentionCase lf_case(int64_t w, int64_t dil, json globals, int64_t n, bool causal, int64_t max_len = 0, bool bias = false) {
  json o = {{"window", w}, {"dilation", dil}, {"qkv_bias", bias}};
  o.update(globals);
  return sparse_case("longformer", o, n, causal, max_len);
}

const json kNoGlobals = {{"global_tokens", 0}};

TEST(LongformerAttention, PatternFollowsTheDefinition) {
  for (bool causal : {false, true})
    for (int64_t w : {0, 2, 3, 4})
      for (int64_t dil : {1, 2, 3}) {
        test::expect_pattern_is(lf_case(w, dil, kNoGlobals, 13, causal), longformer_allowed(w, dil, {}, causal));
        test::expect_pattern_is(lf_case(w, dil, json::object(), 13, causal), longformer_allowed(w, dil, {0}, causal));
        test::expect_pattern_is(lf_case(w, dil, {{"global_indices", json::array({4, 11})}}, 13, causal),
                                longformer_allowed(w, dil, {4, 11}, causal));
      }
}

TEST(LongformerAttention, MatchesDenseMaskedReference) {
  for (bool causal : {false, true}) {
    test::expect_matches_dense_reference(lf_case(2, 1, json::object(), 10, causal, 0, true), longformer_allowed(2, 1, {0}, causal));
    test::expect_matches_dense_reference(lf_case(2, 2, {{"global_indices", json::array({5})}}, 10, causal),
                                         longformer_allowed(2, 2, {5}, causal));
    test::expect_matches_dense_reference(test::with_padding(lf_case(4, 2, {{"global_tokens", 2}}, 10, causal), 6),
                                         longformer_allowed(4, 2, {0, 1}, causal));
    test::expect_matches_dense_reference(test::with_dropout(lf_case(2, 1, json::object(), 9, causal)),
                                         longformer_allowed(2, 1, {0}, causal));
  }
  test::expect_matches_dense_reference(lf_case(2, 2, json::object(), 7, false, 20), longformer_allowed(2, 2, {0}, false));
}

TEST(LongformerAttention, PaddedPositionsChangeNothing) {
  // Sample 0's last three positions (one of them global) are padding: other values there leave the
  // outputs of the real positions, their input gradients and every parameter gradient unchanged.
  for (bool causal : {false, true}) {
    AttentionCase c = lf_case(4, 1, {{"global_indices", json::array({0, 7})}}, 8, causal);
    c.mask.assign(size_t(c.B * c.n), 0);
    for (int64_t j = 5; j < 8; ++j) c.mask[size_t(j)] = 1;
    test::AttentionRig<double> a(c), b(c);
    for (int64_t j = 5 * 8; j < 8 * 8; ++j) b.x[size_t(j)] = j % 2 ? -3.0 : 5.0;
    a.forward(c);
    b.forward(c);
    for (int64_t r = 0; r < 2 * 8; ++r)
      if (r < 5 || r >= 8) {
        for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(a.out[size_t(r * 8 + e)], b.out[size_t(r * 8 + e)]) << r;
      }
    std::vector<double> dout(a.out.size(), 0.0), dxa(a.x.size()), dxb(a.x.size());
    for (int64_t r = 0; r < 2 * 8; ++r)
      if (r < 5 || r >= 8)
        for (int64_t e = 0; e < 8; ++e) dout[size_t(r * 8 + e)] = 0.1 * double(e + 1);
    a.arena.zero_grad();
    b.arena.zero_grad();
    a.layer->backward(dout.data(), dxa.data());
    b.layer->backward(dout.data(), dxb.data());
    for (int64_t r = 0; r < 2 * 8; ++r)
      if (r < 5 || r >= 8) {
        for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(dxa[size_t(r * 8 + e)], dxb[size_t(r * 8 + e)]) << r;
      }
    for (const ParamInfo& p : a.arena.params())
      for (int64_t e = 0; e < p.numel; ++e)
        EXPECT_EQ(a.arena.grads()[p.offset + e], b.arena.grads()[p.offset + e]) << p.name;
  }
}

TEST(LongformerAttention, EqualsFullWhenTheWindowCoversTheSequence) {
  for (bool causal : {false, true}) {
    test::expect_equals_full_both(lf_case(20, 1, kNoGlobals, 9, causal, 0, true));
    test::expect_equals_full_both(test::with_padding(lf_case(20, 1, json::object(), 9, causal), 3));
    test::expect_equals_full_both(test::with_dropout(lf_case(20, 1, json::object(), 9, causal)));
  }
}

TEST(LongformerAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    test::check_attention_gradients(lf_case(2, 1, json::object(), 7, causal, 0, true));
    test::check_attention_gradients(lf_case(2, 2, {{"global_indices", json::array({3})}}, 7, causal));
    test::check_attention_gradients(lf_case(1, 3, kNoGlobals, 7, causal));
    test::check_attention_gradients(test::with_padding(lf_case(2, 2, json::object(), 7, causal), 4));
    test::check_attention_gradients(test::with_dropout(lf_case(2, 1, {{"global_tokens", 2}}, 7, causal)));
    test::check_attention_gradients(lf_case(2, 2, json::object(), 5, causal, 10));
  }
}

TEST(LongformerAttention, CausalOutputIgnoresTheFuture) {
  test::expect_causal(lf_case(2, 2, {{"global_indices", json::array({3})}}, 8, true, 0, true));
  test::expect_causal(test::with_padding(lf_case(3, 1, json::object(), 8, true), 2));
  test::expect_causal(test::with_dropout(lf_case(2, 1, {{"global_tokens", 2}}, 8, true)));
}

TEST(LongformerAttention, OptionsAndDefaults) {
  EXPECT_EQ(validate_attention({"longformer", {512, 8, 4096, false, 0}, json::object(), ""}),
            json({{"window", 256}, {"dilation", 1}, {"global_tokens", 1}, {"global_indices", json::array()},
                  {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"longformer", {8, 2, 8, false, 0}, json::object(), ""})["window"], 8);
  const AttentionDims dims{8, 2, 8, false, 0};
  test::expect_refused("longformer", dims, {{"dilation", 0}}, "dilation");
  test::expect_refused("longformer", dims, {{"window", -4}}, "window");
  test::expect_refused("longformer", dims, {{"global_tokens", 9}}, "global_tokens");
  test::expect_refused("longformer", dims, {{"global_indices", json::array({10})}}, "global_indices");
  test::expect_refused("longformer", dims, {{"attention_window", 4}}, "attention_window");
}

}  // namespace
}  // namespace lf
