// Cross-entropy: fast path vs reference, hand-computed losses, ignore_index, stability at large
// logits, the gradient against finite differences, and out-of-range targets.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cross_entropy.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

// Targets in [0, V), every fifth row ignored.
std::vector<int32_t> make_targets(int64_t N, int64_t V, uint64_t seed) {
  std::vector<int32_t> t(N);
  for (int64_t r = 0; r < N; ++r)
    t[size_t(r)] = r % 5 == 3 ? kIgnoreIndex : int32_t(uniform01_f64(seed, 5, uint64_t(r)) * double(V));
  return t;
}

template <class T>
void check_vs_reference(int64_t N, int64_t V, double tol) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " V=" << V);
  const std::vector<T> logits = test::random_vector<T>(N * V, uint64_t(N * V), -10, 10);
  const std::vector<int32_t> targets = make_targets(N, V, uint64_t(N));
  const CrossEntropyResult a = cross_entropy_forward(logits.data(), targets.data(), N, V);
  const CrossEntropyResult b = cross_entropy_forward_ref(logits.data(), targets.data(), N, V);
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.count, N - (N + 1) / 5);
  EXPECT_NEAR(a.loss, b.loss, tol * std::abs(b.loss));
  std::vector<T> d(size_t(N * V), std::numeric_limits<T>::quiet_NaN()), dr(size_t(N * V));
  cross_entropy_backward(logits.data(), targets.data(), d.data(), N, V, 0.5);
  cross_entropy_backward_ref(logits.data(), targets.data(), dr.data(), N, V, 0.5);
  LF_EXPECT_CLOSE(d.data(), dr.data(), N * V, tol);
}

TEST(CrossEntropy, FastMatchesReferenceFloat) {
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 1}, {4, 3}, {37, 67}, {301, 261}})
    check_vs_reference<float>(n, v, 1e-6);
}

TEST(CrossEntropy, FastMatchesReferenceDouble) {
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 1}, {4, 3}, {37, 67}, {301, 261}})
    check_vs_reference<double>(n, v, 1e-13);
}

TEST(CrossEntropy, HandComputedMeanSkipsIgnoredRows) {
  const std::vector<double> logits = {0, 0, 0, 1, 2, 3, 50, -50, 7};
  const std::vector<int32_t> targets = {2, 0, kIgnoreIndex};
  const double want = (std::log(3.0) + std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 1) / 2;
  for (auto r : {cross_entropy_forward(logits.data(), targets.data(), 3, 3),
                 cross_entropy_forward_ref(logits.data(), targets.data(), 3, 3)}) {
    EXPECT_EQ(r.count, 2);
    EXPECT_NEAR(r.loss, want, 1e-15);
  }
  std::vector<double> d(9, std::numeric_limits<double>::quiet_NaN());
  cross_entropy_backward(logits.data(), targets.data(), d.data(), 3, 3, 1.0);
  EXPECT_NEAR(d[0], (1.0 / 3) / 2, 1e-16);
  EXPECT_NEAR(d[2], (1.0 / 3 - 1) / 2, 1e-16);
  for (int r = 0; r < 2; ++r) EXPECT_NEAR(d[size_t(3 * r)] + d[size_t(3 * r + 1)] + d[size_t(3 * r + 2)], 0, 1e-15);
  for (int j = 6; j < 9; ++j) EXPECT_EQ(d[size_t(j)], 0.0) << "ignored row";
}

TEST(CrossEntropy, CustomIgnoreIndex) {
  const std::vector<float> logits = {1, 2, 3, 4};
  const std::vector<int32_t> targets = {1, 0};
  const CrossEntropyResult r = cross_entropy_forward(logits.data(), targets.data(), 2, 2, 0);  // ignore class 0
  EXPECT_EQ(r.count, 1);
  EXPECT_NEAR(r.loss, std::log(1 + std::exp(-1.0)), 1e-7);
}

TEST(CrossEntropy, AllIgnoredGivesZero) {
  const std::vector<float> logits = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> targets = {kIgnoreIndex, kIgnoreIndex};
  const CrossEntropyResult r = cross_entropy_forward(logits.data(), targets.data(), 2, 3);
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss, 0.0);
  std::vector<float> d(6, std::numeric_limits<float>::quiet_NaN()), dr = d;
  cross_entropy_backward(logits.data(), targets.data(), d.data(), 2, 3);
  cross_entropy_backward_ref(logits.data(), targets.data(), dr.data(), 2, 3);
  EXPECT_EQ(d, std::vector<float>(6, 0.f));
  EXPECT_EQ(dr, std::vector<float>(6, 0.f));
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  const std::vector<float> logits = {1e4f, 0.f, -1e4f, 3e4f, 3e4f, 3e4f};
  const std::vector<int32_t> targets = {1, 2};
  const CrossEntropyResult r = cross_entropy_forward(logits.data(), targets.data(), 2, 3);
  EXPECT_NEAR(r.loss, (1e4 + std::log(3.0)) / 2, 1e-3);
  std::vector<float> d(6);
  cross_entropy_backward(logits.data(), targets.data(), d.data(), 2, 3);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(d[1], -0.5, 1e-7);
  EXPECT_NEAR(d[5], (1.0 / 3 - 1) / 2, 1e-7);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t N = 4, V = 5;
  const double grad = 0.7;
  std::vector<double> logits = test::random_vector(N * V, 21, -3, 3);
  const std::vector<int32_t> targets = {4, kIgnoreIndex, 0, 2};
  auto loss = [&] { return grad * cross_entropy_forward(logits.data(), targets.data(), N, V).loss; };
  std::vector<double> d(size_t(N * V));
  cross_entropy_backward(logits.data(), targets.data(), d.data(), N, V, grad);
  test::expect_gradient_matches(loss, logits.data(), N * V, d.data(), "cross_entropy dlogits");
  // dlogits may alias logits.
  std::vector<double> inplace = logits;
  cross_entropy_backward(inplace.data(), targets.data(), inplace.data(), N, V, grad);
  EXPECT_EQ(inplace, d);
}

TEST(CrossEntropy, OutOfRangeTargetThrows) {
  const std::vector<float> logits(2 * 3, 0.f);
  std::vector<float> d(6);
  for (int32_t bad : {3, -1, 77}) {
    const std::vector<int32_t> targets = {0, bad};
    try {
      cross_entropy_forward(logits.data(), targets.data(), 2, 3);
      ADD_FAILURE() << "target " << bad << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("target " + std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_THROW(cross_entropy_backward(logits.data(), targets.data(), d.data(), 2, 3), InvalidArgument);
    EXPECT_THROW(cross_entropy_forward_ref(logits.data(), targets.data(), 2, 3), InvalidArgument);
  }
  const std::vector<int32_t> targets = {kIgnoreIndex, 0};  // -100 is a bad target once ignore_index is -1
  EXPECT_THROW(cross_entropy_forward(logits.data(), targets.data(), 2, 3, -1), InvalidArgument);
  EXPECT_THROW(cross_entropy_forward(logits.data(), targets.data(), 2, 0), InvalidArgument);
}

}  // namespace
}  // namespace lf
