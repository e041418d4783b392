// LayerNorm: fast path vs reference, gradients of x, weight and bias against finite differences, the
// accumulate/overwrite contract, aliasing, and bad sizes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/layernorm.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
void check_vs_reference(int64_t rows, int64_t C, double tol) {
  SCOPED_TRACE(testing::Message() << "rows=" << rows << " C=" << C);
  const int64_t n = rows * C;
  const std::vector<T> x = test::random_vector<T>(n, uint64_t(n), -3, 5);  // mean away from 0
  const std::vector<T> w = test::random_vector<T>(C, 2, 0.5, 1.5), b = test::random_vector<T>(C, 3);
  const std::vector<T> dy = test::random_vector<T>(n, 4);
  std::vector<T> y(n), yr(n), mean(rows), rstd(rows), meanr(rows), rstdr(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
  layernorm_forward_ref(x.data(), w.data(), b.data(), yr.data(), meanr.data(), rstdr.data(), rows, C);
  LF_EXPECT_CLOSE(y.data(), yr.data(), n, tol);
  LF_EXPECT_CLOSE(mean.data(), meanr.data(), rows, tol);
  LF_EXPECT_CLOSE(rstd.data(), rstdr.data(), rows, tol);

  // Both start from the same non-zero parameter gradients: they must accumulate.
  std::vector<T> dx(n), dxr(n), dw(C, T(0.5)), dwr = dw, db(C, T(-1)), dbr = db;
  layernorm_backward(x.data(), w.data(), meanr.data(), rstdr.data(), dy.data(), dx.data(), dw.data(), db.data(), rows,
                     C);
  layernorm_backward_ref(x.data(), w.data(), meanr.data(), rstdr.data(), dy.data(), dxr.data(), dwr.data(), dbr.data(),
                         rows, C);
  // dx is a difference of terms of size rstd·|dy·w| (exactly 0 when C = 1): measure its error on that
  // scale, not relative to |dx|.
  double scale = 0, err = 0;
  for (int64_t i = 0; i < n; ++i) {
    scale = std::max(scale, std::abs(double(rstdr[size_t(i / C)]) * double(dy[size_t(i)]) * double(w[size_t(i % C)])));
    err = std::max(err, std::abs(double(dx[size_t(i)]) - double(dxr[size_t(i)])));
  }
  EXPECT_LE(err, tol * scale);
  LF_EXPECT_CLOSE(dw.data(), dwr.data(), C, tol);
  LF_EXPECT_CLOSE(db.data(), dbr.data(), C, tol);
}

const std::pair<int64_t, int64_t> kSizes[] = {{1, 1}, {1, 5}, {7, 3}, {33, 67}, {129, 130}, {601, 131}};

TEST(LayerNorm, FastMatchesReferenceFloat) {
  for (auto [r, c] : kSizes) check_vs_reference<float>(r, c, 2e-6);
}

TEST(LayerNorm, FastMatchesReferenceDouble) {
  for (auto [r, c] : kSizes) check_vs_reference<double>(r, c, 1e-13);
}

TEST(LayerNorm, NormalisesRows) {
  // With unit weight and zero bias every row of y has mean 0 and biased variance 1/(1 + eps/var).
  const int64_t rows = 3, C = 8;
  const std::vector<double> x = test::random_vector(rows * C, 5, -4, 4);
  const std::vector<double> w(C, 1.0), b(C, 0.0);
  std::vector<double> y(size_t(rows * C)), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, q = 0;
    for (int64_t j = 0; j < C; ++j) s += y[size_t(r * C + j)], q += y[size_t(r * C + j)] * y[size_t(r * C + j)];
    EXPECT_NEAR(s / C, 0.0, 1e-14);
    EXPECT_NEAR(q / C, 1.0, 1e-14);  // biased variance: divided by C, not C − 1
  }
}

TEST(LayerNorm, ApplyRecomputesTheForwardBitForBit) {
  const int64_t rows = 300, C = 96;  // large enough for the parallel path
  const std::vector<float> x = test::random_vector<float>(rows * C, 6, -3, 3), w = test::random_vector<float>(C, 7),
                           b = test::random_vector<float>(C, 8);
  std::vector<float> y(size_t(rows * C)), again(size_t(rows * C)), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
  layernorm_apply(x.data(), w.data(), b.data(), mean.data(), rstd.data(), again.data(), rows, C);
  EXPECT_EQ(y, again);
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  const int64_t rows = 4, C = 6;
  std::vector<double> x = test::random_vector(rows * C, 6, -2, 2);
  std::vector<double> w = test::random_vector(C, 7, 0.5, 1.5), b = test::random_vector(C, 8);
  const std::vector<double> gy = test::random_vector(rows * C, 9);
  auto loss = [&] {
    std::vector<double> y(x.size()), mean(rows), rstd(rows);
    layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
    return test::weighted_sum(y.data(), gy.data(), rows * C);
  };
  std::vector<double> y(x.size()), mean(rows), rstd(rows), dx(x.size()), dw(C, 0.0), db(C, 0.0);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
  layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), gy.data(), dx.data(), dw.data(), db.data(), rows, C);
  test::expect_gradient_matches(loss, x.data(), rows * C, dx.data(), "layernorm dx");
  test::expect_gradient_matches(loss, w.data(), C, dw.data(), "layernorm dweight");
  test::expect_gradient_matches(loss, b.data(), C, db.data(), "layernorm dbias");
}

TEST(LayerNorm, BackwardOverwritesDxAndAccumulatesParameters) {
  const int64_t rows = 5, C = 9;
  const std::vector<double> x = test::random_vector(rows * C, 10), w = test::random_vector(C, 11),
                            b = test::random_vector(C, 12), dy = test::random_vector(rows * C, 13);
  std::vector<double> y(x.size()), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
  std::vector<double> dx0(x.size()), dw0(C, 0.0), db0(C, 0.0);
  layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx0.data(), dw0.data(), db0.data(), rows,
                     C);
  std::vector<double> dx(x.size(), std::numeric_limits<double>::quiet_NaN()), dw(C, 1.0), db(C, 2.0);
  layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(), rows, C);
  EXPECT_EQ(dx, dx0);
  for (int64_t j = 0; j < C; ++j) {
    EXPECT_DOUBLE_EQ(dw[size_t(j)], 1.0 + dw0[size_t(j)]);
    EXPECT_DOUBLE_EQ(db[size_t(j)], 2.0 + db0[size_t(j)]);
  }
  // dx may alias dy, and null parameter gradients are skipped.
  std::vector<double> inplace = dy;
  layernorm_backward<double>(x.data(), w.data(), mean.data(), rstd.data(), inplace.data(), inplace.data(), nullptr,
                             nullptr, rows, C);
  EXPECT_EQ(inplace, dx0);
}

TEST(LayerNorm, BadSizesThrow) {
  std::vector<float> v(4, 1.f);
  float* p = v.data();
  EXPECT_THROW(layernorm_forward(p, p, p, p, p, p, 1, 0), InvalidArgument);
  EXPECT_THROW(layernorm_forward(p, p, p, p, p, p, -1, 2), InvalidArgument);
  EXPECT_THROW(layernorm_forward(p, p, p, p, p, p, 1, 2, -1e-5), InvalidArgument);
  EXPECT_THROW(layernorm_backward(p, p, p, p, p, p, p, p, 2, 0), InvalidArgument);
  EXPECT_THROW(layernorm_forward_ref(p, p, p, p, p, p, 1, 0), InvalidArgument);
}

}  // namespace
}  // namespace lf
