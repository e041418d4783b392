// linear: forward against gemm_ref, backward against finite differences in double, and the bias
// gradient's column sums against a plain loop (odd widths, sizes that take the parallel path), the
// same for any thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <tuple>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/linear.h"
#include "test_util.h"

namespace lf {
namespace {

TEST(Linear, ForwardIsXWTransposedPlusBias) {
  // Sizes large enough for gemm's packed-Bᵀ path (M >= 256, M >= N) and small ones that skip it.
  for (auto [N, in, out] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 7}, {300, 70, 90}, {513, 64, 257}}) {
    SCOPED_TRACE(testing::Message() << N << "×" << in << " → " << out);
    const auto x = test::random_vector<float>(N * in, 1), W = test::random_vector<float>(out * in, 2),
               b = test::random_vector<float>(out, 3);
    std::vector<float> y(size_t(N * out)), want(size_t(N * out));
    linear_forward(x.data(), W.data(), b.data(), y.data(), N, in, out);
    gemm_ref<float>(false, true, N, out, in, 1.f, x.data(), in, W.data(), in, 0.f, want.data(), out);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t j = 0; j < out; ++j) want[size_t(r * out + j)] += b[size_t(j)];
    LF_EXPECT_CLOSE(y.data(), want.data(), N * out, 1e-5);
  }
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t N = 6, in = 5, out = 4;
  auto x = test::random_vector<double>(N * in, 4), W = test::random_vector<double>(out * in, 5),
       b = test::random_vector<double>(out, 6);
  const auto w = test::random_vector<double>(N * out, 7);
  std::vector<double> y(size_t(N * out));
  auto loss = [&] {
    linear_forward(x.data(), W.data(), b.data(), y.data(), N, in, out);
    return test::weighted_sum(y.data(), w.data(), N * out);
  };
  std::vector<double> dx(x.size()), dW(W.size(), 0.0), db(b.size(), 0.0);
  linear_backward(x.data(), W.data(), w.data(), dx.data(), dW.data(), db.data(), N, in, out);
  test::expect_gradient_matches(loss, x.data(), N * in, dx.data(), "x", 1e-8);
  test::expect_gradient_matches(loss, W.data(), out * in, dW.data(), "W", 1e-8);
  test::expect_gradient_matches(loss, b.data(), out, db.data(), "b", 1e-8);
}

TEST(Linear, ColumnSumsMatchAPlainLoopForAnyThreadCount) {
  const int64_t N = 1000, out = 131, ldy = 140;  // 131 = two 64-column blocks and a ragged one
  const auto dy = test::random_vector<float>(N * ldy, 8);
  std::vector<double> want(size_t(out), 0.0);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < out; ++j) want[size_t(j)] += dy[size_t(r * ldy + j)];
  std::vector<float> first;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> db(size_t(out), 1.0f);  // accumulates onto what is there
    add_column_sums(dy.data(), db.data(), N, out, ldy);
    for (int64_t j = 0; j < out; ++j) EXPECT_NEAR(db[size_t(j)], want[size_t(j)] + 1.0, 1e-3) << "column " << j;
    if (first.empty()) first = db;
    EXPECT_EQ(db, first) << "threads " << threads;
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace lf
