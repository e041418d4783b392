// The finite-difference gradient check of tests/test_util.h checks itself: a correct gradient passes
// at every scale, a 1 % error is caught even when every entry is small, and an entry far below the
// gradient's largest is held only to what a difference of losses can resolve.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <vector>

#include "test_util.h"

namespace lf::test {
namespace {

// loss(x) = Σ c_i · x_i² / 2 + Σ x_i: gradient c_i · x_i + 1 − 1 = c_i · x_i after subtracting the
// linear part's constant, kept so the loss is not small when the gradient is.
struct Quadratic {
  std::vector<double> c, x;
  double loss() const {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += c[i] * x[i] * x[i] / 2 + 1.0;
    return s;
  }
  std::vector<double> gradient() const {
    std::vector<double> g(x.size());
    for (size_t i = 0; i < x.size(); ++i) g[i] = c[i] * x[i];
    return g;
  }
};

TEST(GradientCheck, CorrectGradientsPassAtEveryScale) {
  for (double scale : {1e2, 1.0, 1e-4}) {
    SCOPED_TRACE(testing::Message() << "scale " << scale);
    Quadratic q{std::vector<double>(16, scale), random_vector(16, 3)};
    const std::vector<double> g = q.gradient();
    expect_gradient_matches([&] { return q.loss(); }, q.x.data(), 16, g.data(), "quadratic");
  }
}

TEST(GradientCheck, OnePercentErrorInASmallGradientIsCaught) {
  // Every entry about 1e-4: an absolute floor of 1e-6 (the old check) let this error through.
  Quadratic q{std::vector<double>(16, 1e-4), random_vector(16, 4, 0.5, 1.0)};
  std::vector<double> g = q.gradient();
  g[5] *= 1.01;
  EXPECT_NONFATAL_FAILURE(expect_gradient_matches([&] { return q.loss(); }, q.x.data(), 16, g.data(), "quadratic"),
                          "quadratic[5]");
}

TEST(GradientCheck, EntriesFarBelowTheLargestAreHeldToItsScale) {
  // One entry is 1e-9 of the largest: an analytic 0 there is within the floor (1e-3 of the largest,
  // times tol), while the same absolute slip on the largest entry's scale would not be.
  Quadratic q{{1.0, 1e-9, 1.0}, {1.0, 1.0, 0.5}};
  std::vector<double> g = q.gradient();
  g[1] = 0;
  expect_gradient_matches([&] { return q.loss(); }, q.x.data(), 3, g.data(), "tiny entry");
  g[1] = 1e-6;  // 1000 × the entry, and above tol · 1e-3 · largest
  EXPECT_NONFATAL_FAILURE(expect_gradient_matches([&] { return q.loss(); }, q.x.data(), 3, g.data(), "tiny entry"),
                          "tiny entry[1]");
}

}  // namespace
}  // namespace lf::test
