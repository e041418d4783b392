// Row softmax: fast path vs reference, masking by -inf, overflow safety, and the backward against
// finite differences.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/softmax.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
void check_forward_backward(int64_t rows, int64_t cols, double tol) {
  const std::vector<T> x = test::random_vector<T>(rows * cols, uint64_t(rows * 1000 + cols), -8, 8);
  const std::vector<T> dy = test::random_vector<T>(rows * cols, uint64_t(rows + cols));
  std::vector<T> y(x.size()), yr(x.size()), dx(x.size()), dxr(x.size());
  softmax_forward(x.data(), y.data(), rows, cols);
  softmax_forward_ref(x.data(), yr.data(), rows, cols);
  LF_EXPECT_CLOSE(y.data(), yr.data(), rows * cols, tol);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += double(y[size_t(r * cols + j)]);
    EXPECT_NEAR(s, 1.0, 10 * tol) << "row " << r;
  }
  softmax_backward(yr.data(), dy.data(), dx.data(), rows, cols);
  softmax_backward_ref(yr.data(), dy.data(), dxr.data(), rows, cols);
  LF_EXPECT_CLOSE(dx.data(), dxr.data(), rows * cols, tol);
}

TEST(Softmax, FastMatchesReferenceFloat) {
  for (auto [r, c] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 33}, {64, 257}})
    check_forward_backward<float>(r, c, 1e-6);
}

TEST(Softmax, FastMatchesReferenceDouble) {
  for (auto [r, c] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 33}, {64, 257}})
    check_forward_backward<double>(r, c, 1e-14);
}

TEST(Softmax, MinusInfinityEntriesGetZero) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {0.5f, -inf, 1.5f, -inf, -1.f};
  std::vector<float> y(5), yr(5);
  softmax_forward(x.data(), y.data(), 1, 5);
  softmax_forward_ref(x.data(), yr.data(), 1, 5);
  const double z = std::exp(0.5) + std::exp(1.5) + std::exp(-1.0);
  const double want[] = {std::exp(0.5) / z, 0, std::exp(1.5) / z, 0, std::exp(-1.0) / z};
  for (int j = 0; j < 5; ++j) {
    EXPECT_NEAR(y[size_t(j)], want[j], 1e-7) << j;
    EXPECT_NEAR(yr[size_t(j)], want[j], 1e-7) << j;
  }
  EXPECT_EQ(y[1], 0.f);
  EXPECT_EQ(y[3], 0.f);
}

TEST(Softmax, AllMinusInfinityRowGivesZeros) {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> x = {-inf, -inf, -inf, 1.0, 2.0, 3.0};  // row 0 fully masked
  std::vector<double> y(6, 42.0), yr(6, 42.0);
  softmax_forward(x.data(), y.data(), 2, 3);
  softmax_forward_ref(x.data(), yr.data(), 2, 3);
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(y[size_t(j)], 0.0);
    EXPECT_EQ(yr[size_t(j)], 0.0);
  }
  EXPECT_NEAR(y[3] + y[4] + y[5], 1.0, 1e-15);  // the other row is untouched by the masked one
  EXPECT_NEAR(y[5], std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-15);
}

TEST(Softmax, LargeInputsDoNotOverflow) {
  const std::vector<float> x = {1e4f, 1e4f - 1, -1e4f, 0.f, 3e4f, 3e4f, 3e4f, 3e4f};
  std::vector<float> y(8);
  softmax_forward(x.data(), y.data(), 2, 4);
  for (float v : y) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[0], 1 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(y[1], std::exp(-1.0) / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(y[2], 0.f);
  for (int j = 4; j < 8; ++j) EXPECT_NEAR(y[size_t(j)], 0.25, 1e-7);
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 5;
  std::vector<double> x = test::random_vector(rows * cols, 11, -2, 2);
  const std::vector<double> w = test::random_vector(rows * cols, 12);
  std::vector<double> y(x.size()), dx(x.size());
  auto loss = [&] {
    std::vector<double> t(x.size());
    softmax_forward(x.data(), t.data(), rows, cols);
    return test::weighted_sum(t.data(), w.data(), rows * cols);
  };
  softmax_forward(x.data(), y.data(), rows, cols);
  softmax_backward(y.data(), w.data(), dx.data(), rows, cols);
  test::expect_gradient_matches(loss, x.data(), rows * cols, dx.data(), "softmax dx");
}

}  // namespace
}  // namespace lf
