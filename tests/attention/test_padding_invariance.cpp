// Every registered kind, with its default options: a sample padded to the batch's length (a ragged
// batch under a key padding mask) gives at its real positions the outputs of the same sample run alone,
// unpadded, at its own length, to rounding. A kind whose structure follows n (block counts, bucket
// counts, random layouts) must take n from the sample's real length (the last unpadded position + 1).
// This is what AttentionSupport::padding_invariant declares; the predictor batches on it. No kind is
// excused by construction: learned per-position parameters (linformer's E and F over max_len,
// synthesizer's scores, mixer's mixings, the AFT biases) are sliced to n, and a padded sample's keys
// beyond its length are selected away, so the padded run reads the same slices as the short one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;

// Sample 0 of n_full positions unpadded, sample 1 of n_short real positions padded to n_full (its padded
// rows hold large garbage); sample 1's real rows against the same rows run alone at n_short.
void expect_padded_equals_alone(const std::string& kind, bool causal, int64_t max_len, int64_t n_short) {
  SCOPED_TRACE(kind + (causal ? " causal" : " bidirectional") + " n' = " + std::to_string(n_short));
  const AttentionDims dims{16, 2, max_len, causal, 0.0};
  AttentionCase padded;
  padded.kind = kind;
  padded.dims = dims;
  padded.B = 2;
  padded.n = max_len;
  padded.mask.assign(size_t(2 * max_len), 0);
  for (int64_t t = n_short; t < max_len; ++t) padded.mask[size_t(max_len + t)] = 1;
  AttentionCase alone = padded;
  alone.B = 1;
  alone.n = n_short;
  alone.mask.clear();

  const int64_t d = dims.d_model;
  AttentionRig<double> a(padded), b(alone);  // the same seed: the same parameters
  for (int64_t t = n_short; t < max_len; ++t)
    for (int64_t c = 0; c < d; ++c) a.x[size_t((max_len + t) * d + c)] = 50.0 * std::sin(double(t * d + c));
  std::copy(a.x.begin() + max_len * d, a.x.begin() + (max_len + n_short) * d, b.x.begin());
  a.forward(padded);
  b.forward(alone);
  for (int64_t i = 0; i < n_short * d; ++i) {
    const double want = b.out[size_t(i)], got = a.out[size_t(max_len * d + i)];
    ASSERT_NEAR(got, want, 1e-10 * (1 + std::abs(want))) << "position " << i / d << ", channel " << i % d;
  }
}

class PaddedEqualsAlone : public testing::TestWithParam<std::string> {};

TEST_P(PaddedEqualsAlone, RealPositionsMatchTheUnpaddedRun) {
  const std::string& kind = GetParam();
  const AttentionKindInfo& info = AttentionRegistry::instance().get(kind).info;
  if (!info.support.key_padding_mask) GTEST_SKIP() << kind << " takes no key padding mask: nothing is padded";
  if (!info.support.variable_length) GTEST_SKIP() << kind << " runs at max_len only: there is no unpadded short run";
  EXPECT_TRUE(info.support.padding_invariant) << "the test passes: declare the kind padding_invariant";
  // Lengths across blocks, windows, buckets and chunks (the defaults at max_len 160: sinkhorn's blocks of
  // 40, bigbird's of 20, reformer's chunks of 64): partial last blocks, one short of the whole, a single row.
  for (const bool causal : {false, true}) {
    if (causal && !info.support.causal) continue;
    for (const int64_t n_short : {97, 159, 29, 1}) expect_padded_equals_alone(kind, causal, 160, n_short);
  }
}

INSTANTIATE_TEST_SUITE_P(AllKinds, PaddedEqualsAlone, testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace lf
