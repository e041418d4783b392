// Dropout: fast path vs reference, independence from the thread count, the kept fraction, identity at
// p = 0, the backward's mask, and rejection of invalid p.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/dropout.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

constexpr uint64_t kSeed = 1234, kStream = 99;

// The fast path multiplies by T(1/(1−p)), the reference divides by (1−p) in double: the two agree
// bitwise when 1/(1−p) is exact in T (p = 0.5, 0.75, ...) and otherwise differ by at most one rounding.
// The mask itself must agree exactly for every p.
template <class T>
void check_fast_vs_reference() {
  const int64_t n = 100003;  // above the threading threshold
  const std::vector<T> x = test::random_vector<T>(n, 3);
  for (double p : {0.0, 0.1, 0.5, 0.75, 0.9}) {
    std::vector<T> y(n), yr(n);
    dropout_forward(x.data(), y.data(), n, p, kSeed, kStream, 17);
    dropout_forward_ref(x.data(), yr.data(), n, p, kSeed, kStream, 17);
    if (p == 0.0 || p == 0.5 || p == 0.75) {
      EXPECT_EQ(0, std::memcmp(y.data(), yr.data(), size_t(n) * sizeof(T))) << "p=" << p;
      continue;
    }
    int64_t mask_diff = 0, value_diff = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T a = y[size_t(i)], b = yr[size_t(i)];
      mask_diff += (a == 0) != (b == 0);
      value_diff += std::abs(a - b) > std::numeric_limits<T>::epsilon() * std::abs(b);
    }
    EXPECT_EQ(mask_diff, 0) << "p=" << p;
    EXPECT_EQ(value_diff, 0) << "p=" << p << ": more than one rounding apart";
  }
}

TEST(Dropout, FastMatchesReferenceFloat) { check_fast_vs_reference<float>(); }
TEST(Dropout, FastMatchesReferenceDouble) { check_fast_vs_reference<double>(); }

TEST(Dropout, SameMaskForOneAndTwoThreads) {
  const int64_t n = 200001;
  const std::vector<float> x = test::random_vector<float>(n, 4);
  std::vector<float> y1(n), y2(n);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  dropout_forward(x.data(), y1.data(), n, 0.3, kSeed, kStream);
  omp_set_num_threads(2);
  dropout_forward(x.data(), y2.data(), n, 0.3, kSeed, kStream);
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), size_t(n) * sizeof(float)));
}

TEST(Dropout, KeptFractionAndScale) {
  const int64_t n = 1000000;
  const std::vector<double> x(n, 1.0);
  std::vector<double> y(n);
  for (double p : {0.1, 0.3, 0.9}) {
    dropout_forward(x.data(), y.data(), n, p, kSeed, kStream);
    int64_t kept = 0, wrong = 0;
    for (double v : y) {
      kept += v != 0;
      wrong += v != 0 && std::abs(v - 1 / (1 - p)) > 1e-15;
    }
    EXPECT_NEAR(double(kept) / double(n), 1 - p, 0.01 * (1 - p)) << "p=" << p;
    EXPECT_EQ(wrong, 0) << "kept values must be x / (1 - p)";
  }
}

TEST(Dropout, ZeroProbabilityIsIdentity) {
  const std::vector<float> x = test::random_vector<float>(70001, 5);
  std::vector<float> y(x.size()), z = x;
  dropout_forward(x.data(), y.data(), int64_t(x.size()), 0.0, kSeed, kStream);
  EXPECT_EQ(y, x);
  dropout_forward(z.data(), z.data(), int64_t(z.size()), 0.0, kSeed, kStream);  // in place
  EXPECT_EQ(z, x);
}

TEST(Dropout, BackwardUsesTheForwardMask) {
  const int64_t n = 50000;
  const double p = 0.4;
  const std::vector<double> x = test::random_vector(n, 6), dy = test::random_vector(n, 7);
  std::vector<double> y(n), dx(n), other(n);
  dropout_forward(x.data(), y.data(), n, p, kSeed, kStream, 500);
  dropout_backward(dy.data(), dx.data(), n, p, kSeed, kStream, 500);
  int64_t mismatched = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool kept = y[size_t(i)] != 0;
    mismatched += kept ? std::abs(dx[size_t(i)] - dy[size_t(i)] / (1 - p)) > 1e-15 : dx[size_t(i)] != 0;
  }
  EXPECT_EQ(mismatched, 0);
  // Another offset selects another mask: the offset really is part of the counter.
  dropout_backward(dy.data(), other.data(), n, p, kSeed, kStream, 501);
  EXPECT_NE(other, dx);
}

TEST(Dropout, InvalidProbabilityThrows) {
  std::vector<float> x(8, 1.f);
  for (double p : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THROW(dropout_forward(x.data(), x.data(), 8, p, kSeed, kStream), InvalidArgument) << p;
    EXPECT_THROW(dropout_backward(x.data(), x.data(), 8, p, kSeed, kStream), InvalidArgument) << p;
  }
}

}  // namespace
}  // namespace lf
