// transpose_sum (src/cpu/vec.h), the dot-product reduction of the decoding kernel: lane j of its result
// is the sum of vector j's lanes, for float (16 lanes) and double (8), against a plain loop in double,
// with lanes whose sums differ in sign and magnitude (a lane sent to the wrong place shows).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/vec.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
void expect_transpose_sum_sums_each_vector() {
  constexpr int L = kLanes<T>;
  const std::vector<T> values = test::random_vector<T>(L * L, 7);
  Vec64<T> x[L];
  std::vector<double> want(L, 0.0);
  for (int j = 0; j < L; ++j) {
    T lanes[L];
    for (int u = 0; u < L; ++u) {
      lanes[u] = values[size_t(j * L + u)] * T(j + 1) * (j % 2 ? T(-1) : T(1));  // sums of different sizes and signs
      want[size_t(j)] += double(lanes[u]);
    }
    x[j] = load64(lanes);
  }
  T got[L];
  store64(got, transpose_sum<T>(x));
  for (int j = 0; j < L; ++j) EXPECT_NEAR(double(got[j]), want[size_t(j)], 1e-5 * (j + 1)) << "lane " << j;
}

TEST(CpuVec, TransposeSumSumsEachVectorFloat) { expect_transpose_sum_sums_each_vector<float>(); }
TEST(CpuVec, TransposeSumSumsEachVectorDouble) { expect_transpose_sum_sums_each_vector<double>(); }

// One nonzero lane per vector, each at another position: the result is a permutation test.
TEST(CpuVec, TransposeSumPutsVectorJInLaneJ) {
  constexpr int L = kLanes<float>;
  Vec64<float> x[L];
  for (int j = 0; j < L; ++j) {
    float lanes[L] = {};
    lanes[(j * 5 + 3) % L] = float(100 + j);
    x[j] = load64(lanes);
  }
  float got[L];
  store64(got, transpose_sum<float>(x));
  for (int j = 0; j < L; ++j) EXPECT_EQ(got[j], float(100 + j)) << "lane " << j;
}

}  // namespace
}  // namespace lf
