// `strided` (Sparse Transformer): pattern and output against the definition, equal to `full` with
// stride 1, finite-difference gradients for every option, causality, defaults and bad options.
#include "sparse_kind_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::sparse_case;

// The documented definition: (t − j) mod s = 0, or within `local`'s window of l; causal: j ≤ t.
test::Allowed strided_allowed(int64_t s, int64_t l, bool causal) {
  return [=](int64_t t, int64_t j, int64_t) {
    if (causal && j > t) return false;
    const bool band = l > 0 && (causal ? t - j <= l : std::abs(t - j) <= l / 2);
    return std::abs(t - j) % s == 0 || band;
  };
}

AttentionCase strided_case(int64_t s, int64_t l, int64_t n, bool causal, int64_t max_len = 0, bool bias = false) {
  return sparse_case("strided", {{"stride", s}, {"local_window", l}, {"qkv_bias", bias}}, n, causal, max_len);
}

TEST(StridedAttention, PatternFollowsTheDefinition) {
  for (bool causal : {false, true})
    for (int64_t s : {1, 2, 3, 5})
      for (int64_t l : {0, 1, 2, 3, 6}) test::expect_pattern_is(strided_case(s, l, 13, causal), strided_allowed(s, l, causal));
}

TEST(StridedAttention, MatchesDenseMaskedReference) {
  for (bool causal : {false, true}) {
    test::expect_matches_dense_reference(strided_case(3, 0, 10, causal, 0, true), strided_allowed(3, 0, causal));
    test::expect_matches_dense_reference(strided_case(3, 3, 10, causal), strided_allowed(3, 3, causal));
    test::expect_matches_dense_reference(test::with_padding(strided_case(4, 2, 10, causal), 5), strided_allowed(4, 2, causal));
    test::expect_matches_dense_reference(test::with_dropout(strided_case(2, 2, 9, causal)), strided_allowed(2, 2, causal));
  }
  test::expect_matches_dense_reference(strided_case(3, 2, 7, false, 16), strided_allowed(3, 2, false));  // n < max_len
}

TEST(StridedAttention, EqualsFullWithStrideOne) {
  for (bool causal : {false, true}) {
    test::expect_equals_full_both(strided_case(1, 0, 9, causal, 0, true));
    test::expect_equals_full_both(test::with_padding(strided_case(1, 3, 9, causal), 2));
  }
}

TEST(StridedAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    test::check_attention_gradients(strided_case(2, 0, 7, causal, 0, true));
    test::check_attention_gradients(strided_case(3, 2, 7, causal));
    test::check_attention_gradients(test::with_padding(strided_case(2, 2, 7, causal), 4));
    test::check_attention_gradients(test::with_dropout(strided_case(2, 1, 7, causal)));
    test::check_attention_gradients(strided_case(2, 2, 5, causal, 9));
  }
}

TEST(StridedAttention, CausalOutputIgnoresTheFuture) {
  test::expect_causal(strided_case(3, 2, 8, true, 0, true));
  test::expect_causal(test::with_padding(strided_case(2, 0, 8, true), 3));
  test::expect_causal(test::with_dropout(strided_case(3, 3, 8, true)));
}

TEST(StridedAttention, OptionsAndDefaults) {
  // stride ⌈√max_len⌉ and local_window = stride: the Sparse Transformer's strided pattern.
  EXPECT_EQ(validate_attention({"strided", {512, 8, 4096, true, 0}, json::object(), ""}),
            json({{"stride", 64}, {"local_window", 64}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"strided", {8, 2, 10, false, 0}, json::object(), ""}),
            json({{"stride", 4}, {"local_window", 4}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"strided", {8, 2, 10, false, 0}, {{"stride", 2}}, ""})["local_window"], 2);
  const AttentionDims dims{8, 2, 8, false, 0};
  test::expect_refused("strided", dims, {{"stride", 0}}, "stride");
  test::expect_refused("strided", dims, {{"local_window", -2}}, "local_window");
  test::expect_refused("strided", dims, {{"stride", "4"}}, "stride");
  test::expect_refused("strided", dims, {{"window", 4}}, "window");
}

}  // namespace
}  // namespace lf
