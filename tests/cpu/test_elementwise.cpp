// The finiteness check's fast path (exponent bits, vectorised, threaded) against std::isfinite: one NaN
// or ±Inf anywhere — first, last, middle, either side of a thread chunk's edge — is found for 1, 2 and
// 3 threads, on the serial path and above the threading threshold; the largest finite value, the
// smallest subnormal and −0 are finite.
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

}  // namespace
}  // namespace lf
