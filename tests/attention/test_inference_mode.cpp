// keep_for_backward = false (inference), for every registered kind: the output equals the training
// forward's bit for bit, nothing is left for a backward (backward() refuses), and a backward
// releases what its forward kept (a second backward refuses too).
#include <gtest/gtest.h>

#include "attention/attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

class InferenceMode : public testing::TestWithParam<std::string> {};

AttentionCase case_for(const std::string& kind, bool causal) {
  AttentionCase c;
  c.kind = kind;
  c.dims = AttentionDims{8, 2, 6, causal, 0.0};
  c.B = 2;
  c.n = 6;
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[size_t(c.n - 1)] = 1;  // one padded key in the first sequence
  return c;
}

TEST_P(InferenceMode, SameOutputNothingKept) {
  const std::string kind = GetParam();
  const AttentionKindInfo& info = AttentionRegistry::instance().get(kind).info;
  for (bool causal : {false, true}) {
    if (causal && !info.support.causal) continue;
    SCOPED_TRACE(kind + (causal ? " causal" : ""));
    AttentionCase c = case_for(kind, causal);
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

INSTANTIATE_TEST_SUITE_P(AllKinds, InferenceMode, testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace lf
