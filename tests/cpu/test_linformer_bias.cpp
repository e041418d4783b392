// Linformer's bias kernels: each fast path against its plain `_ref` loop (the sums within rounding, the
// updates bit for bit), at sizes with ragged lane tails on the serial path and above the threading
// threshold, with NaN and ±Inf at padded positions (skipped, never multiplied by zero), and the same
// bits for 1, 2 and 3 threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu/linformer_bias.h"
#include "test_util.h"

namespace lf {
namespace {

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-14;
}

// Runs f(threads) for 1, 2 and 3 threads, then restores the count.
template <class F>
void for_thread_counts(F&& f) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    f(threads);
  }
  omp_set_num_threads(saved);
}

// (k, m, lde): a few rows shorter than one lane block, ragged tails, and above the parallel threshold.
const std::vector<std::tuple<int64_t, int64_t, int64_t>> kShapes = {{3, 5, 8}, {7, 130, 133}, {67, 4099, 4104}};

std::vector<uint8_t> padding_of(int64_t m, uint64_t seed) {
  const auto u = test::random_vector<double>(m, seed, 0, 1);
  std::vector<uint8_t> p(static_cast<size_t>(m));
  for (int64_t t = 0; t < m; ++t) p[size_t(t)] = u[size_t(t)] < 0.3;
  return p;
}

template <class T>
void check_masked_row_sums() {
  for (auto [k, m, lde] : kShapes) {
    SCOPED_TRACE(testing::Message() << "k " << k << " m " << m);
    const std::vector<uint8_t> pad = padding_of(m, 11);
    auto E = test::random_vector<T>(k * lde, 12);
    // Non-finite values where the padding hides them, and past m in each row.
    for (int64_t j = 0; j < k; ++j)
      for (int64_t t = 0; t < lde; ++t)
        if (t >= m || pad[size_t(t)])
          E[size_t(j * lde + t)] = (t % 3 == 0)   ? std::numeric_limits<T>::quiet_NaN()
                                   : (t % 3 == 1) ? std::numeric_limits<T>::infinity()
                                                  : -std::numeric_limits<T>::infinity();
    std::vector<T> want(static_cast<size_t>(k)), first;
    masked_row_sums_ref(E.data(), lde, k, m, pad.data(), want.data());
    for_thread_counts([&](int threads) {
      std::vector<T> got(static_cast<size_t>(k), T(7));
      masked_row_sums(E.data(), lde, k, m, pad.data(), got.data());
      for (int64_t j = 0; j < k; ++j) {
        double scale = 0;
        for (int64_t t = 0; t < m; ++t)
          if (!pad[size_t(t)]) scale += std::abs(double(E[size_t(j * lde + t)]));
        ASSERT_TRUE(std::isfinite(got[size_t(j)])) << "row " << j;
        EXPECT_NEAR(double(got[size_t(j)]), double(want[size_t(j)]), tol<T>() * scale) << "row " << j;
      }
      if (first.empty()) first = got;
      EXPECT_EQ(got, first) << threads << " threads";
    });
    // Without a mask every one of the m columns counts (finite E this time).
    const auto F = test::random_vector<T>(k * lde, 13);
    std::vector<T> all_want(static_cast<size_t>(k)), all_got(static_cast<size_t>(k));
    masked_row_sums_ref(F.data(), lde, k, m, nullptr, all_want.data());
    masked_row_sums(F.data(), lde, k, m, nullptr, all_got.data());
    for (int64_t j = 0; j < k; ++j)
      EXPECT_NEAR(double(all_got[size_t(j)]), double(all_want[size_t(j)]), tol<T>() * double(m)) << "row " << j;
  }
}

TEST(LinformerBiasKernels, MaskedRowSumsMatchReferenceFloat) { check_masked_row_sums<float>(); }
TEST(LinformerBiasKernels, MaskedRowSumsMatchReferenceDouble) { check_masked_row_sums<double>(); }

template <class T>
void check_masked_row_sums_backward() {
  for (auto [k, m, lde] : kShapes) {
    SCOPED_TRACE(testing::Message() << "k " << k << " m " << m);
    const std::vector<uint8_t> pad = padding_of(m, 14);
    const auto dsums = test::random_vector<T>(k, 15), dE0 = test::random_vector<T>(k * lde, 16);
    for (const uint8_t* p : {pad.data(), static_cast<const uint8_t*>(nullptr)}) {
      auto want = dE0;
      masked_row_sums_backward_ref(dsums.data(), k, m, p, want.data(), lde);
      for_thread_counts([&](int threads) {
        auto got = dE0;
        masked_row_sums_backward(dsums.data(), k, m, p, got.data(), lde);
        EXPECT_EQ(got, want) << threads << " threads, " << (p ? "padded" : "no mask");
      });
    }
  }
}

TEST(LinformerBiasKernels, MaskedRowSumsBackwardIsTheReferenceFloat) { check_masked_row_sums_backward<float>(); }
TEST(LinformerBiasKernels, MaskedRowSumsBackwardIsTheReferenceDouble) { check_masked_row_sums_backward<double>(); }

// (k, width, ldc): one head's (k, d_h), all heads' (k, d), and ragged sizes.
const std::vector<std::tuple<int64_t, int64_t, int64_t>> kBiasShapes = {{3, 5, 9}, {256, 64, 512}, {513, 515, 520}};

template <class T>
void check_row_weighted_bias() {
  for (auto [k, width, ldc] : kBiasShapes) {
    SCOPED_TRACE(testing::Message() << "k " << k << " width " << width);
    const auto r = test::random_vector<T>(k, 17), b = test::random_vector<T>(width, 18);
    const auto C0 = test::random_vector<T>(k * ldc, 19), dC = test::random_vector<T>(k * ldc, 20);
    auto C_want = C0;
    add_row_weighted_bias_ref(r.data(), b.data(), k, width, C_want.data(), ldc);
    std::vector<T> db_want(static_cast<size_t>(width), T(0.25)), dr_want(static_cast<size_t>(k));
    add_row_weighted_bias_backward_ref(dC.data(), ldc, r.data(), b.data(), k, width, db_want.data(), dr_want.data());
    std::vector<T> dr_first;
    for_thread_counts([&](int threads) {
      SCOPED_TRACE(testing::Message() << threads << " threads");
      auto C = C0;
      add_row_weighted_bias(r.data(), b.data(), k, width, C.data(), ldc);
      EXPECT_EQ(C, C_want);
      std::vector<T> db(static_cast<size_t>(width), T(0.25)), dr(static_cast<size_t>(k), T(9));
      add_row_weighted_bias_backward(dC.data(), ldc, r.data(), b.data(), k, width, db.data(), dr.data());
      EXPECT_EQ(db, db_want);  // each column adds its rows in order, as the reference
      for (int64_t j = 0; j < k; ++j) {
        double scale = 0;
        for (int64_t c = 0; c < width; ++c) scale += std::abs(double(dC[size_t(j * ldc + c)]) * double(b[size_t(c)]));
        EXPECT_NEAR(double(dr[size_t(j)]), double(dr_want[size_t(j)]), tol<T>() * scale) << "row " << j;
      }
      if (dr_first.empty()) dr_first = dr;
      EXPECT_EQ(dr, dr_first);
      std::vector<T> db2(static_cast<size_t>(width), T(0.25));  // dr is optional
      add_row_weighted_bias_backward(dC.data(), ldc, r.data(), b.data(), k, width, db2.data(), static_cast<T*>(nullptr));
      EXPECT_EQ(db2, db_want);
    });
  }
}

TEST(LinformerBiasKernels, RowWeightedBiasMatchesReferenceFloat) { check_row_weighted_bias<float>(); }
TEST(LinformerBiasKernels, RowWeightedBiasMatchesReferenceDouble) { check_row_weighted_bias<double>(); }

}  // namespace
}  // namespace lf
