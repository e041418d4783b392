// The pooling of a sequence to one vector (the classifier head's, src/ops/sequence.h) against its
// definition: the mean over the unpadded positions or the first position, forward and backward; bad
// views refused.
#include <gtest/gtest.h>

#include <vector>

#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/sequence.h"
#include "test_util.h"

namespace lf {
namespace {
using test::random_vector;

// B = 3 sequences of n = 4 positions, d = 5; sequence 1 has positions 0 and 2 padded, sequence 2 its last.
constexpr int64_t B = 3, n = 4, d = 5;
const std::vector<uint8_t> kPadding = {0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1};

template <class T>
void check_pooling(ops::SequencePooling pooling, bool padded) {
  const auto h = random_vector<T>(B * n * d, 1), dpooled = random_vector<T>(B * d, 2);
  const auto mask = padded ? vector_view(kPadding.data(), B * n) : TensorView<const uint8_t>();
  const bool first = pooling == ops::SequencePooling::kFirst;
  std::vector<T> pooled(B * d, T(7)), dh(B * n * d, T(7));
  ops::sequence_pool_forward<T>(TensorView<const T>(h.data(), {B, n, d}), mask, pooling,
                                TensorView<T>(pooled.data(), {B, d}));
  ops::sequence_pool_backward<T>(TensorView<const T>(dpooled.data(), {B, d}), mask, pooling,
                                 TensorView<T>(dh.data(), {B, n, d}));
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-15;
  for (int64_t b = 0; b < B; ++b) {
    auto pooled_here = [&](int64_t t) { return first ? t == 0 : !(padded && kPadding[size_t(b * n + t)]); };
    int64_t count = 0;
    for (int64_t t = 0; t < n; ++t) count += pooled_here(t);
    for (int64_t e = 0; e < d; ++e) {
      double want = 0;
      for (int64_t t = 0; t < n; ++t)
        if (pooled_here(t)) want += double(h[size_t((b * n + t) * d + e)]) / double(count);
      EXPECT_NEAR(double(pooled[size_t(b * d + e)]), want, tol) << b << "," << e;
      for (int64_t t = 0; t < n; ++t)
        EXPECT_NEAR(double(dh[size_t((b * n + t) * d + e)]),
                    pooled_here(t) ? double(dpooled[size_t(b * d + e)]) / double(count) : 0.0, tol)
            << b << "," << t << "," << e;
    }
  }
}

TEST(OpsSequencePool, MeanAndFirstMatchTheirDefinition) {
  for (auto pooling : {ops::SequencePooling::kMean, ops::SequencePooling::kFirst})
    for (bool padded : {false, true}) {
      check_pooling<double>(pooling, padded);
      check_pooling<float>(pooling, padded);
    }
}

TEST(OpsSequencePool, RefusesBadViews) {
  std::vector<float> h(B * n * d), pooled(B * d);
  const TensorView<const float> hv(h.data(), {B, n, d});
  EXPECT_THROW(ops::sequence_pool_forward<float>(hv, {}, ops::SequencePooling::kMean,
                                                 TensorView<float>(pooled.data(), {B, d - 1})),
               InvalidArgument);
  EXPECT_THROW(ops::sequence_pool_forward<float>(TensorView<const float>(h.data(), {B * n, d}), {},
                                                 ops::SequencePooling::kMean, TensorView<float>(pooled.data(), {B, d})),
               InvalidArgument);  // h must be (B, n, d)
  EXPECT_THROW(ops::sequence_pool_forward<float>(hv, vector_view(kPadding.data(), n), ops::SequencePooling::kMean,
                                                 TensorView<float>(pooled.data(), {B, d})),
               InvalidArgument);  // a mask of n, not B·n
}

}  // namespace
}  // namespace lf
