// Depthwise conv1d along the sequence: fast path vs reference (centred and causal, odd sizes), the
// values of a known kernel, causality, gradients against finite differences, accumulation, bad sizes.
#include <vector>

#include "cpu/conv1d.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

struct Case {
  int64_t B, n, d, K;
};
const Case kCases[] = {{1, 1, 1, 1}, {2, 5, 3, 3}, {1, 7, 17, 5}, {3, 2, 8, 7}, {2, 64, 40, 4}, {2, 300, 64, 3}};

template <class T>
void check_vs_reference(const Case& c, bool causal, double tol) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " n=" << c.n << " d=" << c.d << " K=" << c.K << " causal=" << causal);
  const int64_t N = c.B * c.n * c.d;
  const std::vector<T> x = test::random_vector<T>(N, 1), w = test::random_vector<T>(c.d * c.K, 2),
                       b = test::random_vector<T>(c.d, 3), dy = test::random_vector<T>(N, 4);
  std::vector<T> y(N), yr(N), dx(N), dxr(N);
  depthwise_conv1d_forward(x.data(), w.data(), b.data(), y.data(), c.B, c.n, c.d, c.K, causal);
  depthwise_conv1d_forward_ref(x.data(), w.data(), b.data(), yr.data(), c.B, c.n, c.d, c.K, causal);
  LF_EXPECT_CLOSE(y.data(), yr.data(), N, tol);
  std::vector<T> dw(size_t(c.d * c.K), T(0.5)), dwr = dw, db(size_t(c.d), T(-1)), dbr = db;
  depthwise_conv1d_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), c.B, c.n, c.d, c.K, causal);
  depthwise_conv1d_backward_ref(x.data(), w.data(), dy.data(), dxr.data(), dwr.data(), dbr.data(), c.B, c.n, c.d, c.K,
                                causal);
  LF_EXPECT_CLOSE(dx.data(), dxr.data(), N, tol);
  LF_EXPECT_CLOSE(dw.data(), dwr.data(), c.d * c.K, tol);
  LF_EXPECT_CLOSE(db.data(), dbr.data(), c.d, tol);
}

TEST(DepthwiseConv1d, FastMatchesReference) {
  for (const Case& c : kCases)
    for (bool causal : {false, true}) {
      check_vs_reference<float>(c, causal, 2e-6);
      check_vs_reference<double>(c, causal, 1e-13);
    }
}

TEST(DepthwiseConv1d, KnownKernel) {
  // One channel, K = 3 taps (1, 2, 3) over x = (1, 10, 100, 1000), zero padded. Centred: y_t =
  // 1·x_{t−1} + 2·x_t + 3·x_{t+1}; causal: y_t = 1·x_{t−2} + 2·x_{t−1} + 3·x_t. Bias 0.5.
  const std::vector<double> x = {1, 10, 100, 1000}, w = {1, 2, 3}, b = {0.5};
  std::vector<double> y(4);
  depthwise_conv1d_forward(x.data(), w.data(), b.data(), y.data(), 1, 4, 1, 3, false);
  EXPECT_EQ(y, (std::vector<double>{32.5, 321.5, 3210.5, 2100.5}));
  depthwise_conv1d_forward(x.data(), w.data(), b.data(), y.data(), 1, 4, 1, 3, true);
  EXPECT_EQ(y, (std::vector<double>{3.5, 32.5, 321.5, 3210.5}));
  // Channels do not mix: two channels with different kernels give their own results.
  const std::vector<double> x2 = {1, 0, 0, 1, 0, 0}, w2 = {0, 1, 0, 5, 0, 0};  // (n = 3, d = 2); (d, 1, K = 3)
  std::vector<double> y2(6);
  depthwise_conv1d_forward(x2.data(), w2.data(), static_cast<const double*>(nullptr), y2.data(), 1, 3, 2, 3, false);
  EXPECT_EQ(y2, (std::vector<double>{1, 0, 0, 0, 0, 5}));
}

TEST(DepthwiseConv1d, CausalNeverSeesTheFuture) {
  const int64_t B = 2, n = 9, d = 4, K = 5;
  std::vector<double> x = test::random_vector(B * n * d, 5);
  const std::vector<double> w = test::random_vector(d * K, 6);
  std::vector<double> y0(x.size()), y1(x.size());
  depthwise_conv1d_forward(x.data(), w.data(), static_cast<const double*>(nullptr), y0.data(), B, n, d, K, true);
  for (int64_t t = 6; t < n; ++t)
    for (int64_t c = 0; c < d; ++c) x[size_t((1 * n + t) * d + c)] += 3.0;  // change the future of t = 5
  depthwise_conv1d_forward(x.data(), w.data(), static_cast<const double*>(nullptr), y1.data(), B, n, d, K, true);
  for (int64_t i = 0; i < B * n * d; ++i) {
    const int64_t b = i / (n * d), t = (i / d) % n;
    if (b == 0 || t <= 5) {
      EXPECT_EQ(y0[size_t(i)], y1[size_t(i)]) << "b=" << b << " t=" << t;
    }
  }
}

TEST(DepthwiseConv1d, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true})
    for (int64_t K : {1, 3, 4}) {
      SCOPED_TRACE(testing::Message() << "causal=" << causal << " K=" << K);
      const int64_t B = 2, n = 5, d = 3, N = B * n * d;
      std::vector<double> x = test::random_vector(N, 7), w = test::random_vector(d * K, 8),
                          b = test::random_vector(d, 9);
      const std::vector<double> gy = test::random_vector(N, 10);
      auto loss = [&] {
        std::vector<double> y(N);
        depthwise_conv1d_forward(x.data(), w.data(), b.data(), y.data(), B, n, d, K, causal);
        return test::weighted_sum(y.data(), gy.data(), N);
      };
      std::vector<double> dx(N), dw(size_t(d * K), 0.0), db(size_t(d), 0.0);
      depthwise_conv1d_backward(x.data(), w.data(), gy.data(), dx.data(), dw.data(), db.data(), B, n, d, K, causal);
      test::expect_gradient_matches(loss, x.data(), N, dx.data(), "conv dx");
      test::expect_gradient_matches(loss, w.data(), d * K, dw.data(), "conv dw");
      test::expect_gradient_matches(loss, b.data(), d, db.data(), "conv dbias");
    }
}

TEST(DepthwiseConv1d, BackwardOverwritesDxAndAccumulatesParameters) {
  const int64_t B = 1, n = 6, d = 2, K = 3, N = B * n * d;
  const std::vector<double> x = test::random_vector(N, 11), w = test::random_vector(d * K, 12),
                            dy = test::random_vector(N, 13);
  std::vector<double> dx0(N), dw0(size_t(d * K), 0.0), db0(size_t(d), 0.0);
  depthwise_conv1d_backward(x.data(), w.data(), dy.data(), dx0.data(), dw0.data(), db0.data(), B, n, d, K, false);
  std::vector<double> dx(N, 123.0), dw(size_t(d * K), 1.0), db(size_t(d), 2.0);
  depthwise_conv1d_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), B, n, d, K, false);
  EXPECT_EQ(dx, dx0);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_DOUBLE_EQ(dw[i], 1.0 + dw0[i]);
  for (size_t i = 0; i < db.size(); ++i) EXPECT_DOUBLE_EQ(db[i], 2.0 + db0[i]);
}

TEST(DepthwiseConv1d, RefusesBadSizes) {
  std::vector<double> v(8);
  EXPECT_THROW(depthwise_conv1d_forward(v.data(), v.data(), v.data(), v.data(), 1, 2, 2, 0, false), InvalidArgument);
  EXPECT_THROW(depthwise_conv1d_forward(v.data(), v.data(), v.data(), v.data(), 1, -2, 2, 3, false), InvalidArgument);
}

}  // namespace
}  // namespace lf
