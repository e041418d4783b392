// `local` (sliding window): its pattern and output against the definition (dense masked attention in
// double), equal to `full` when the window covers the sequence, finite-difference gradients for every
// option (causal, padding, dropout, window sizes, variable length), causality, bad options.
#include "sparse_kind_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::sparse_case;

// The documented definition: |t − j| ≤ ⌊w/2⌋, or causal t − w ≤ j ≤ t.
test::Allowed local_allowed(int64_t w, bool causal) {
  return [=](int64_t t, int64_t j, int64_t) { return causal ? (j <= t && t - j <= w) : std::abs(t - j) <= w / 2; };
}

AttentionCase local_case(int64_t window, int64_t n, bool causal, int64_t max_len = 0, bool bias = false) {
  return sparse_case("local", {{"window", window}, {"qkv_bias", bias}}, n, causal, max_len);
}

TEST(LocalAttention, PatternFollowsTheDefinition) {
  for (bool causal : {false, true})
    for (int64_t w : {0, 1, 2, 3, 4, 7, 40}) test::expect_pattern_is(local_case(w, 11, causal), local_allowed(w, causal));
}

TEST(LocalAttention, MatchesDenseMaskedReference) {
  for (bool causal : {false, true})
    for (int64_t w : {0, 2, 3, 5}) {
      test::expect_matches_dense_reference(local_case(w, 9, causal, 0, w % 2 == 1), local_allowed(w, causal));
      test::expect_matches_dense_reference(test::with_padding(local_case(w, 9, causal), 6), local_allowed(w, causal));
    }
  // Variable length: n = 7 on a layer built for 12; dropout with the dense mask index.
  test::expect_matches_dense_reference(local_case(4, 7, false, 12), local_allowed(4, false));
  test::expect_matches_dense_reference(test::with_dropout(local_case(4, 8, true)), local_allowed(4, true));
}

TEST(LocalAttention, EqualsFullWhenTheWindowCoversTheSequence) {
  for (bool causal : {false, true}) {
    test::expect_equals_full_both(local_case(20, 9, causal, 0, true));
    test::expect_equals_full_both(test::with_padding(local_case(20, 9, causal), 4));
    test::expect_equals_full_both(test::with_dropout(local_case(20, 9, causal)));
  }
}

TEST(LocalAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    for (int64_t w : {0, 2, 3}) test::check_attention_gradients(local_case(w, 6, causal, 0, true));
    test::check_attention_gradients(test::with_padding(local_case(2, 6, causal), 3));
    test::check_attention_gradients(test::with_dropout(local_case(2, 6, causal)));
    test::check_attention_gradients(local_case(2, 5, causal, 9));  // n < max_len
  }
}

TEST(LocalAttention, CausalOutputIgnoresTheFuture) {
  test::expect_causal(local_case(2, 7, true, 0, true));
  test::expect_causal(test::with_padding(local_case(3, 7, true), 2));
  test::expect_causal(test::with_dropout(local_case(2, 7, true)));
}

TEST(LocalAttention, OptionsAndDefaults) {
  EXPECT_EQ(validate_attention({"local", {512, 8, 4096, false, 0}, json::object(), ""}),
            json({{"window", 256}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"local", {8, 2, 8, true, 0}, json::object(), ""}),
            json({{"window", 8}, {"qkv_bias", false}}));
  const AttentionDims dims{8, 2, 8, false, 0};
  test::expect_refused("local", dims, {{"window", -1}}, "window");
  test::expect_refused("local", dims, {{"window", 2.5}}, "window");
  test::expect_refused("local", dims, {{"widow", 2}}, "widow");
  ParamArena<float> arena;
  auto layer = make_attention<float>({"local", {8, 2, 8, false, 0}, json::object(), ""}, arena);
  std::vector<float> ctx(64), x(64), out(64);
  AttentionInput<float> in{x.data(), 1, 8, ctx.data(), 8};
  EXPECT_THROW(layer->forward(in, out.data(), false, 0), InvalidArgument);  // no cross-attention
}

}  // namespace
}  // namespace lf
