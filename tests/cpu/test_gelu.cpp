// GELU: fast path vs reference, exact (erf) values rather than the tanh approximation, the derivative
// against finite differences, and bad sizes.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/gelu.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
void check_vs_reference(int64_t n, double tol) {
  SCOPED_TRACE(testing::Message() << "n=" << n);
  const std::vector<T> x = test::random_vector<T>(n, uint64_t(n), -6, 6), dy = test::random_vector<T>(n, 2);
  std::vector<T> y(n), yr(n), dx(n), dxr(n, T(7));
  gelu_forward(x.data(), y.data(), n);
  gelu_forward_ref(x.data(), yr.data(), n);
  LF_EXPECT_CLOSE(y.data(), yr.data(), n, tol);
  gelu_backward(x.data(), dy.data(), dx.data(), n);
  gelu_backward_ref(x.data(), dy.data(), dxr.data(), n);
  LF_EXPECT_CLOSE(dx.data(), dxr.data(), n, tol);
}

TEST(Gelu, FastMatchesReferenceFloat) {
  for (int64_t n : {1, 7, 1001, 40001}) check_vs_reference<float>(n, 1e-6);
}

TEST(Gelu, FastMatchesReferenceDouble) {
  for (int64_t n : {1, 7, 1001, 40001}) check_vs_reference<double>(n, 1e-14);
}

TEST(Gelu, ExactErfValues) {
  // x·Φ(x) with Φ the normal CDF; the tanh approximation gives 0.841192 at x = 1 and would fail.
  const std::vector<double> x = {-3.0, -1.0, 0.0, 0.5, 1.0, 2.0};
  const double want[] = {-0.00404969409489031, -0.15865525393145707, 0.0,
                         0.34573123063700656,  0.8413447460685429,   1.9544997361036416};
  std::vector<double> y(x.size());
  gelu_forward(x.data(), y.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-15) << "x=" << x[i];
  // gelu'(0) = Φ(0) = 1/2.
  const double zero = 0, one = 1;
  double d = 0;
  gelu_backward(&zero, &one, &d, 1);
  EXPECT_DOUBLE_EQ(d, 0.5);
}

TEST(Gelu, FloatKeepsTheNegativeTail) {
  // gelu(−5) = −5·Φ(−5) ≈ −1.43e-6; through 1 + erf(x/√2) float would cancel it to 0. The float path
  // must hold its relative accuracy over the whole tail down to x = −12 (gelu ≈ −2e-32), forward and
  // backward; the tolerance allows for rounding x² to float (relative error ~x²·2⁻²⁵).
  int bad = 0;
  for (int i = 0; i <= 240; ++i) {
    const float x = -0.05f * float(i), one = 1.f;
    float y, d;
    gelu_forward(&x, &y, 1);
    gelu_backward(&x, &one, &d, 1);
    double yr, dr;
    const double xd = x, oned = 1;
    gelu_forward_ref(&xd, &yr, 1);
    gelu_backward_ref(&xd, &oned, &dr, 1);
    if (std::abs(y - yr) > 1e-5 * std::abs(yr) && bad++ < 5)
      ADD_FAILURE() << "gelu(" << x << ") = " << y << ", want " << yr;
    if (std::abs(d - dr) > 2e-5 * std::abs(dr) + 1e-7 && bad++ < 5)
      ADD_FAILURE() << "gelu'(" << x << ") = " << d << ", want " << dr;
  }
  EXPECT_EQ(bad, 0);
}

TEST(Gelu, FloatExtremes) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float x[4] = {-30.f, 30.f, 100.f, nan}, ones[4] = {1, 1, 1, 1};
  float y[4], d[4];
  gelu_forward(x, y, 4);
  gelu_backward(x, ones, d, 4);
  EXPECT_EQ(y[0], 0.f);
  EXPECT_EQ(y[1], 30.f);
  EXPECT_EQ(y[2], 100.f);
  EXPECT_TRUE(std::isnan(y[3]));
  EXPECT_EQ(d[0], 0.f);
  EXPECT_EQ(d[1], 1.f);
  EXPECT_EQ(d[2], 1.f);
  EXPECT_TRUE(std::isnan(d[3]));
}

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  const int64_t n = 13;
  std::vector<double> x = test::random_vector(n, 3, -4, 4);
  const std::vector<double> w = test::random_vector(n, 4);
  auto loss = [&] {
    std::vector<double> y(n);
    gelu_forward(x.data(), y.data(), n);
    return test::weighted_sum(y.data(), w.data(), n);
  };
  std::vector<double> dx(n, std::numeric_limits<double>::quiet_NaN());  // must be overwritten
  gelu_backward(x.data(), w.data(), dx.data(), n);
  test::expect_gradient_matches(loss, x.data(), n, dx.data(), "gelu dx");
}

TEST(Gelu, InPlace) {
  const std::vector<float> x = test::random_vector<float>(33, 5, -3, 3), dy = test::random_vector<float>(33, 6);
  std::vector<float> y(x.size()), z = x, dx(x.size()), g = dy;
  gelu_forward(x.data(), y.data(), 33);
  gelu_forward(z.data(), z.data(), 33);
  EXPECT_EQ(z, y);
  gelu_backward(x.data(), dy.data(), dx.data(), 33);
  gelu_backward(x.data(), g.data(), g.data(), 33);
  EXPECT_EQ(g, dx);
}

TEST(Gelu, NegativeSizeThrows) {
  float v = 0;
  EXPECT_THROW(gelu_forward(&v, &v, -1), InvalidArgument);
  EXPECT_THROW(gelu_backward(&v, &v, &v, -1), InvalidArgument);
}

}  // namespace
}  // namespace lf
