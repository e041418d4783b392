// keep_for_backward = false (inference), for every registered kind with its default options and for
// the options that change what a kind keeps (kOptionCases): the output equals the training forward's
// bit for bit, nothing is left for a backward (backward() refuses), and a backward releases what its
// forward kept (a second backward refuses too).
#include <gtest/gtest.h>

#include <cmath>

#include "attention/attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

class InferenceMode : public testing::TestWithParam<std::string> {};

AttentionCase case_for(const std::string& kind, bool causal, const json& options = json::object()) {
  AttentionCase c;
  c.kind = kind;
  c.options = options;
  c.dims = AttentionDims{8, 2, 6, causal, 0.0};
  c.B = 2;
  c.n = 6;
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[size_t(c.n - 1)] = 1;  // one padded key in the first sequence
  return c;
}

// Inference keeps nothing and gives the training forward's output; backward refuses after it.
void check_same_output_nothing_kept(const std::string& kind, const json& options) {
  const AttentionKindInfo& info = AttentionRegistry::instance().get(kind).info;
  for (bool causal : {false, true}) {
    if (causal && !info.support.causal) continue;
    SCOPED_TRACE(kind + " " + options.dump() + (causal ? " causal" : ""));
    AttentionCase c = case_for(kind, causal, options);
    if (!info.support.key_padding_mask) c.mask.clear();
    AttentionRig<float> rig(c);
    std::vector<float> kept(rig.out.size()), inferred(rig.out.size()), dout(rig.out.size(), 0.5f), dx(rig.x.size());
    AttentionInput<float> in = rig.input(c);
    rig.layer->forward(in, kept.data(), false, 0);
    in.keep_for_backward = false;
    rig.layer->forward(in, inferred.data(), false, 0);
    EXPECT_EQ(kept, inferred);
    EXPECT_THROW(rig.layer->backward(dout.data(), dx.data()), InvalidArgument);

    in.keep_for_backward = true;
    rig.layer->forward(in, kept.data(), false, 0);
    rig.layer->backward(dout.data(), dx.data());
    EXPECT_THROW(rig.layer->backward(dout.data(), dx.data()), InvalidArgument) << "a second backward must refuse";
  }
}

// Whatever the padded positions hold (here NaN and huge values), the outputs at the real positions
// are those of a clean input: padded keys and values must be selected away, not multiplied by zero.
void check_padding_garbage_does_not_leak(const std::string& kind, const json& options) {
  if (!AttentionRegistry::instance().get(kind).info.support.key_padding_mask) GTEST_SKIP();
  SCOPED_TRACE(kind + " " + options.dump());
  AttentionCase c = case_for(kind, false, options);
  AttentionRig<float> clean(c), dirty(c);
  const int64_t d = c.dims.d_model, t = c.n - 1;  // the padded position of sequence 0
  for (int64_t e = 0; e < d; ++e) dirty.x[size_t(t * d + e)] = e % 2 ? std::nanf("") : 1e30f;
  clean.forward(c);
  dirty.forward(c);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t p = 0; p < c.n; ++p) {
      if (b == 0 && p == t) continue;
      for (int64_t e = 0; e < d; ++e) {
        const size_t i = size_t((b * c.n + p) * d + e);
        ASSERT_EQ(clean.out[i], dirty.out[i]) << kind << ": sequence " << b << " position " << p;
      }
    }
}

TEST_P(InferenceMode, SameOutputNothingKept) { check_same_output_nothing_kept(GetParam(), json::object()); }

TEST_P(InferenceMode, PaddingGarbageDoesNotLeak) { check_padding_garbage_does_not_leak(GetParam(), json::object()); }

// Options that change what a kind computes and keeps (max_len 6 here: k = 3 gives windows of 2).
struct OptionCase {
  std::string name, kind;
  json options;
};
const std::vector<OptionCase>& option_cases() {
  static const std::vector<OptionCase> cases = {
      {"linformer_mean", "linformer", {{"k", 3}, {"projection", "mean"}, {"qkv_bias", true}}},
      {"linformer_max", "linformer", {{"k", 3}, {"projection", "max"}, {"qkv_bias", true}}},
      {"linformer_conv", "linformer", {{"k", 3}, {"projection", "conv"}, {"sharing", "none"}}},
      {"linformer_conv_full", "linformer", {{"k", 3}, {"projection", "conv_full"}, {"qkv_bias", true}}},
      {"linformer_conv_full_none", "linformer", {{"k", 3}, {"projection", "conv_full"}, {"sharing", "none"}, {"one_kv_head", true}}},
      {"linformer_fixed_kv", "linformer", {{"k", 3}, {"projection", "fixed"}, {"sharing", "kv"}, {"share_kv_linear", true}}},
      {"linformer_fixed_layerwise", "linformer", {{"k", 3}, {"projection", "fixed"}, {"sharing", "layerwise"}}},
      {"linformer_dim_head", "linformer", {{"k", 3}, {"dim_head", 3}, {"qkv_bias", true}}},
      {"linformer_max_dim_head", "linformer", {{"k", 2}, {"projection", "max"}, {"dim_head", 5}, {"share_kv_linear", true}}},
      {"causal_linformer_blocks", "causal_linformer", {{"block", 2}, {"slots", 1}, {"window_blocks", 0}, {"qkv_bias", true}}},
      {"causal_linformer_mean_capped", "causal_linformer", {{"block", 2}, {"slots", 2}, {"max_blocks", 1}, {"compression", "mean"}}},
  };
  return cases;
}

class InferenceModeOptions : public testing::TestWithParam<OptionCase> {};

TEST_P(InferenceModeOptions, SameOutputNothingKept) { check_same_output_nothing_kept(GetParam().kind, GetParam().options); }

TEST_P(InferenceModeOptions, PaddingGarbageDoesNotLeak) {
  check_padding_garbage_does_not_leak(GetParam().kind, GetParam().options);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, InferenceMode, testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });
INSTANTIATE_TEST_SUITE_P(KindOptions, InferenceModeOptions, testing::ValuesIn(option_cases()),
                         [](const testing::TestParamInfo<OptionCase>& p) { return p.param.name; });

}  // namespace
}  // namespace lf
