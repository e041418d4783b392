// `global`: pattern and output against the definition (global positions from global_tokens and/or
// global_indices, the others' window), equal to `full` when every position is global, finite-difference
// gradients for every option, causality, variable length (global indices beyond n), bad options.
#include <set>

#include "sparse_kind_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::sparse_case;

// The documented definition: t ∈ G or j ∈ G or j in t's window (|t − j| ≤ ⌊w/2⌋; causal t − w ≤ j ≤ t).
test::Allowed global_allowed(std::set<int64_t> G, int64_t w, bool causal) {
  return [=](int64_t t, int64_t j, int64_t) {
    const bool window = causal ? (j <= t && t - j <= w) : std::abs(t - j) <= w / 2;
    return G.count(t) > 0 || G.count(j) > 0 || window;
  };
}

AttentionCase global_case(json options, int64_t n, bool causal, int64_t max_len = 0) {
  return sparse_case("global", std::move(options), n, causal, max_len);
}

TEST(GlobalAttention, PatternFollowsTheDefinition) {
  for (bool causal : {false, true}) {
    test::expect_pattern_is(global_case({{"global_tokens", 2}}, 11, causal), global_allowed({0, 1}, 0, causal));
    test::expect_pattern_is(global_case({{"global_tokens", 1}, {"window", 4}}, 11, causal), global_allowed({0}, 4, causal));
    test::expect_pattern_is(global_case({{"global_indices", json::array({3, 9, 3})}}, 11, causal), global_allowed({3, 9}, 0, causal));
    test::expect_pattern_is(global_case({{"global_indices", json::array({5})}, {"global_tokens", 2}, {"window", 3}}, 11, causal),
                            global_allowed({0, 1, 5}, 3, causal));
    // Variable length: index 12 is beyond n = 9 and drops out.
    test::expect_pattern_is(global_case({{"global_indices", json::array({4, 12})}, {"window", 2}}, 9, causal, 16),
                            global_allowed({4}, 2, causal));
  }
}

TEST(GlobalAttention, MatchesDenseMaskedReference) {
  for (bool causal : {false, true}) {
    test::expect_matches_dense_reference(global_case({{"global_tokens", 2}, {"qkv_bias", true}}, 9, causal),
                                         global_allowed({0, 1}, 0, causal));
    test::expect_matches_dense_reference(global_case({{"global_indices", json::array({2, 7})}, {"window", 2}}, 9, causal),
                                         global_allowed({2, 7}, 2, causal));
    // Padding, including a padded global position (index 8 in sample 0).
    test::expect_matches_dense_reference(test::with_padding(global_case({{"global_indices", json::array({8})}, {"window", 2}}, 9, causal), 3),
                                         global_allowed({8}, 2, causal));
    test::expect_matches_dense_reference(test::with_dropout(global_case({{"global_tokens", 1}, {"window", 2}}, 9, causal)),
                                         global_allowed({0}, 2, causal));
  }
  test::expect_matches_dense_reference(global_case({{"global_indices", json::array({1, 11})}, {"window", 2}}, 8, false, 12),
                                       global_allowed({1}, 2, false));
}

TEST(GlobalAttention, EqualsFullWhenEveryPositionIsGlobal) {
  for (bool causal : {false, true}) {
    test::expect_equals_full_both(global_case({{"global_tokens", 8}, {"qkv_bias", true}}, 8, causal));
    test::expect_equals_full_both(test::with_padding(global_case({{"global_tokens", 8}}, 8, causal), 5));
  }
}

TEST(GlobalAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    test::check_attention_gradients(global_case({{"global_tokens", 1}, {"qkv_bias", true}}, 6, causal));
    test::check_attention_gradients(global_case({{"global_indices", json::array({2, 5})}, {"window", 2}}, 6, causal));
    test::check_attention_gradients(test::with_padding(global_case({{"global_tokens", 1}, {"window", 1}}, 6, causal), 3));
    test::check_attention_gradients(test::with_dropout(global_case({{"global_indices", json::array({3})}, {"window", 2}}, 6, causal)));
    test::check_attention_gradients(global_case({{"global_indices", json::array({1, 8})}}, 5, causal, 9));
  }
}

TEST(GlobalAttention, CausalOutputIgnoresTheFuture) {
  test::expect_causal(global_case({{"global_indices", json::array({2, 5})}, {"window", 2}, {"qkv_bias", true}}, 8, true));
  test::expect_causal(test::with_padding(global_case({{"global_tokens", 2}}, 8, true), 4));
  test::expect_causal(test::with_dropout(global_case({{"global_tokens", 1}, {"window", 1}}, 8, true)));
}

TEST(GlobalAttention, OptionsAndDefaults) {
  EXPECT_EQ(validate_attention({"global", {512, 8, 4096, false, 0}, json::object(), ""}),
            json({{"global_tokens", 16}, {"global_indices", json::array()}, {"window", 0}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"global", {8, 2, 8, false, 0}, json::object(), ""})["global_tokens"], 1);
  EXPECT_EQ(validate_attention({"global", {8, 2, 64, false, 0}, json::object(), ""})["global_tokens"], 4);
  // With indices the first-g default is 0: only the listed positions are global.
  EXPECT_EQ(validate_attention({"global", {8, 2, 64, false, 0}, {{"global_indices", json::array({7})}}, ""})["global_tokens"], 0);
  const AttentionDims dims{8, 2, 8, false, 0};
  test::expect_refused("global", dims, {{"global_tokens", 9}}, "global_tokens");
  test::expect_refused("global", dims, {{"global_tokens", -1}}, "global_tokens");
  test::expect_refused("global", dims, {{"global_indices", json::array({8})}}, "global_indices");
  test::expect_refused("global", dims, {{"global_indices", json::array({-1})}}, "global_indices");
  test::expect_refused("global", dims, {{"global_indices", 3}}, "global_indices");
  test::expect_refused("global", dims, {{"global_indices", json::array({1.5})}}, "global_indices");
  test::expect_refused("global", dims, {{"global_tokens", 0}}, "global position");
  test::expect_refused("global", dims, {{"window", -1}}, "window");
}

}  // namespace
}  // namespace lf
