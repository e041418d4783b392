// The finiteness check's fast path (exponent bits, vectorised, threaded) against std::isfinite: one NaN
// or ±Inf anywhere — first, last, middle, either side of a thread chunk's edge — is found for 1, 2 and
// 3 threads, on the serial path and above the threading threshold; the largest finite value, the
// smallest subnormal and −0 are finite. The strided copy, threaded when its target is a dense
// permutation, against a plain loop for 1, 2 and 3 threads, and a broadcast target (stride 0) that it
// accumulates into on one thread.
#include <gtest/gtest.h>
#include <omp.h>

#include <limits>
#include <vector>

#include "cpu/elementwise.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
void check_all_finite() {
  using Lim = std::numeric_limits<T>;
  const int saved = omp_get_max_threads();
  for (int64_t n : {int64_t(1), int64_t(37), int64_t(200003)}) {
    auto x = test::random_vector<T>(n, 21, -1e3, 1e3);
    x[0] = Lim::max();
    if (n > 2) {
      x[1] = Lim::denorm_min();
      x[2] = -T(0);
    }
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      SCOPED_TRACE(testing::Message() << "n " << n << ", " << threads << " threads");
      ASSERT_TRUE(all_finite_ref(x.data(), n));
      EXPECT_TRUE(all_finite(x.data(), n));
      // 16384: the fast path's chunk, the unit of its thread split.
      for (int64_t at : {int64_t(0), n / 2, n - 1, int64_t(16383), int64_t(16384)}) {
        if (at >= n) continue;
        for (T bad : {Lim::quiet_NaN(), -Lim::quiet_NaN(), Lim::infinity(), -Lim::infinity()}) {
          const T keep = x[size_t(at)];
          x[size_t(at)] = bad;
          EXPECT_FALSE(all_finite_ref(x.data(), n));
          EXPECT_FALSE(all_finite(x.data(), n)) << bad << " at " << at;
          if (at > 0) {
            EXPECT_TRUE(all_finite(x.data(), at)) << "the prefix before " << at;
          }
          x[size_t(at)] = keep;
        }
      }
    }
  }
  omp_set_num_threads(saved);
  EXPECT_TRUE(all_finite(static_cast<const T*>(nullptr), 0));
}

TEST(ElementwiseKernels, AllFiniteFindsNaNAndInfAnywhereFloat) { check_all_finite<float>(); }
TEST(ElementwiseKernels, AllFiniteFindsNaNAndInfAnywhereDouble) { check_all_finite<double>(); }

// conv_full's weight (G·D, D, W) seen by tap as (G, W, D, D), gathered into a contiguous block, then
// scattered back with accumulate; 3·5·70·70 elements take the threaded path.
TEST(ElementwiseKernels, CopyStridedPermutesAndScattersForAnyThreadCount) {
  constexpr int64_t G = 3, W = 5, D = 70, N = G * W * D * D;
  const int64_t sizes[4] = {G, W, D, D}, by_tap[4] = {D * D * W, 1, D * W, W}, packed[4] = {W * D * D, D * D, D, 1};
  const auto w = test::random_vector<float>(N, 22), t = test::random_vector<float>(N, 23);
  std::vector<float> want_packed(static_cast<size_t>(N)), want_w = w;
  for (int64_t a = 0; a < G; ++a)
    for (int64_t b = 0; b < W; ++b)
      for (int64_t c = 0; c < D; ++c)
        for (int64_t e = 0; e < D; ++e) {
          const size_t src = size_t(a * by_tap[0] + b * by_tap[1] + c * by_tap[2] + e * by_tap[3]);
          const size_t dst = size_t(a * packed[0] + b * packed[1] + c * packed[2] + e);
          want_packed[dst] = w[src];
          want_w[src] += t[dst];
        }
  // A broadcast target: every (a, b, c) row accumulated into one row of D, in order.
  const int64_t broadcast[4] = {0, 0, 0, 1};
  std::vector<float> want_row(size_t(D), 0.5f);
  for (int64_t i = 0; i < N; ++i) want_row[size_t(i % D)] += t[size_t(i)];
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    SCOPED_TRACE(testing::Message() << threads << " threads");
    std::vector<float> got_packed(size_t(N), -1.0f), got_w = w, got_row(size_t(D), 0.5f);
    copy_strided(w.data(), by_tap, got_packed.data(), packed, sizes, false);
    EXPECT_EQ(got_packed, want_packed);
    copy_strided(t.data(), packed, got_w.data(), by_tap, sizes, true);
    EXPECT_EQ(got_w, want_w);
    copy_strided(t.data(), packed, got_row.data(), broadcast, sizes, true);
    EXPECT_EQ(got_row, want_row);
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace lf
