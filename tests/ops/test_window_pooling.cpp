// Linformer's window poolings as ops (src/ops/window_pooling.h): each against its definition written
// out here, with padding, windows past the end of the sequence and strided rows; bad views refused.
#include <gtest/gtest.h>

#include <vector>

#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/window_pooling.h"
#include "test_util.h"

namespace lf {
namespace {
using test::random_vector;

// m = 10 positions (3 and 4 padded), windows of w = 3, k = 5 slots (the last one past m), width 4
// inside rows of 6.
constexpr int64_t m = 10, w = 3, k = 5, width = 4, ld = 6;
const std::vector<uint8_t> kPadded = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0};

bool real(int64_t t) { return t < m && !kPadded[size_t(t)]; }

template <class T>
void check_compress(bool conv) {
  const auto src = random_vector<T>(m * ld, 1), ddst = random_vector<T>(k * ld, 2), tap = random_vector<T>(w, 3);
  std::vector<int32_t> count(k, 0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t t = j * w; t < (j + 1) * w; ++t) count[size_t(j)] += real(t);
  auto weight = [&](int64_t j, int64_t tau) { return conv ? double(tap[size_t(tau)]) : 1.0 / count[size_t(j)]; };
  const auto tap_view = conv ? vector_view(tap.data(), w) : TensorView<const T>();
  const auto count_view = conv ? TensorView<const int32_t>() : vector_view(count.data(), k);

  std::vector<T> dst(k * ld, T(7));
  ops::window_compress<T>(matrix(src.data(), m, width, ld), tap_view, count_view, vector_view(kPadded.data(), m), w,
                          matrix(dst.data(), k, width, ld));
  std::vector<T> dsrc(m * ld, T(0.5)), dtap(w, T(0.25));
  ops::window_compress_backward<T>(matrix(src.data(), m, width, ld), tap_view, count_view,
                                   vector_view(kPadded.data(), m), w, matrix(ddst.data(), k, width, ld),
                                   matrix(dsrc.data(), m, width, ld),
                                   conv ? vector_view(dtap.data(), w) : TensorView<T>());
  const double tol = test::tolerance<T>();
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < width; ++c) {
      double want = 0;
      for (int64_t tau = 0; tau < w; ++tau)
        if (real(j * w + tau)) want += weight(j, tau) * double(src[size_t((j * w + tau) * ld + c)]);
      EXPECT_NEAR(double(dst[size_t(j * ld + c)]), want, tol) << j << "," << c;
    }
  for (int64_t t = 0; t < m; ++t)
    for (int64_t c = 0; c < width; ++c) {
      const double want = 0.5 + (real(t) ? weight(t / w, t % w) * double(ddst[size_t((t / w) * ld + c)]) : 0.0);
      EXPECT_NEAR(double(dsrc[size_t(t * ld + c)]), want, tol) << t << "," << c;
    }
  EXPECT_EQ(dsrc[size_t(width)], T(0.5));  // columns outside the view are untouched
  if (conv)
    for (int64_t tau = 0; tau < w; ++tau) {
      double want = 0.25;
      for (int64_t j = 0; j < k; ++j)
        if (real(j * w + tau))
          for (int64_t c = 0; c < width; ++c)
            want += double(ddst[size_t(j * ld + c)]) * double(src[size_t((j * w + tau) * ld + c)]);
      EXPECT_NEAR(double(dtap[size_t(tau)]), want, tol) << tau;
    }
}

TEST(OpsWindowPooling, CompressMatchesItsDefinition) {
  for (bool conv : {false, true}) {
    check_compress<double>(conv);
    check_compress<float>(conv);
  }
}

TEST(OpsWindowPooling, MaxPoolMatchesItsDefinitionAndRoutesTheGradientToTheWinner) {
  const auto src = random_vector<double>(m * ld, 4), ddst = random_vector<double>(k * ld, 5);
  std::vector<double> dst(k * ld), dsrc(m * ld, 0.0);
  std::vector<int32_t> amax(k * ld);
  ops::window_max_pool<double>(matrix(src.data(), m, width, ld), vector_view(kPadded.data(), m), w,
                               matrix(dst.data(), k, width, ld), matrix(amax.data(), k, width, ld));
  ops::window_max_pool_backward<double>(matrix<const int32_t>(amax.data(), k, width, ld),
                                        matrix(ddst.data(), k, width, ld), matrix(dsrc.data(), m, width, ld));
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < width; ++c) {
      int64_t best = -1;
      for (int64_t t = j * w; t < (j + 1) * w; ++t)
        if (real(t) && (best < 0 || src[size_t(t * ld + c)] > src[size_t(best * ld + c)])) best = t;
      EXPECT_EQ(amax[size_t(j * ld + c)], best);
      EXPECT_EQ(dst[size_t(j * ld + c)], best < 0 ? 0.0 : src[size_t(best * ld + c)]);
      if (best >= 0) {
        EXPECT_EQ(dsrc[size_t(best * ld + c)], ddst[size_t(j * ld + c)]);
      }
    }
}

// The pooling of ones: each slot's total weight over its window's real positions (the weight of the
// bias under compress-first), and the conv kernel's gradient from it.
TEST(OpsWindowPooling, WeightSumsMatchTheirDefinition) {
  const auto tap = random_vector<double>(w, 6), dsums = random_vector<double>(k, 7);
  std::vector<int32_t> count(k, 0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t t = j * w; t < (j + 1) * w; ++t) count[size_t(j)] += real(t);
  for (bool conv : {false, true}) {
    std::vector<double> sums(k, 9.0);
    ops::window_weight_sums<double>(conv ? vector_view(tap.data(), w) : TensorView<const double>(),
                                    conv ? TensorView<const int32_t>() : vector_view(count.data(), k),
                                    vector_view(kPadded.data(), m), w, m, vector_view(sums.data(), k));
    for (int64_t j = 0; j < k; ++j) {
      double want = 0;
      for (int64_t tau = 0; tau < w; ++tau)
        if (real(j * w + tau)) want += conv ? tap[size_t(tau)] : 1.0 / count[size_t(j)];
      EXPECT_NEAR(sums[size_t(j)], want, 1e-15) << conv << " " << j;
    }
  }
  EXPECT_EQ(count[size_t(k - 1)], 0);  // the last window is past the end: its slot weighs nothing

  std::vector<double> dtap(w, 0.5);
  ops::window_weight_sums_backward<double>(vector_view(dsums.data(), k), vector_view(kPadded.data(), m), w, m,
                                           vector_view(dtap.data(), w));
  for (int64_t tau = 0; tau < w; ++tau) {
    double want = 0.5;
    for (int64_t j = 0; j < k; ++j)
      if (real(j * w + tau)) want += dsums[size_t(j)];
    EXPECT_NEAR(dtap[size_t(tau)], want, 1e-15) << tau;
  }
  // float: the same sums to rounding.
  const auto tapf = test::cast_vector<float>(tap);
  std::vector<float> sumsf(k);
  ops::window_weight_sums<float>(vector_view(tapf.data(), w), {}, {}, w, m, vector_view(sumsf.data(), k));
  for (int64_t j = 0; j < k; ++j) {
    double want = 0;
    for (int64_t tau = 0; tau < w && j * w + tau < m; ++tau) want += tap[size_t(tau)];
    EXPECT_NEAR(sumsf[size_t(j)], want, 1e-6) << j;
  }
}

TEST(OpsWindowPooling, RefusesBadViews) {
  std::vector<float> src(m * width), dst(k * width), tap(w);
  std::vector<int32_t> count(k, 1);
  const auto s = matrix<const float>(src.data(), m, width);
  // Both, or neither, of tap and count.
  EXPECT_THROW(ops::window_compress<float>(s, vector_view<const float>(tap.data(), w), vector_view(count.data(), k), {},
                                           w, matrix(dst.data(), k, width)),
               InvalidArgument);
  EXPECT_THROW(ops::window_compress<float>(s, {}, {}, {}, w, matrix(dst.data(), k, width)), InvalidArgument);
  // A tap of the wrong length, a width mismatch, a window of 0.
  EXPECT_THROW(ops::window_compress<float>(s, vector_view<const float>(tap.data(), 2), {}, {}, w,
                                           matrix(dst.data(), k, width)),
               InvalidArgument);
  EXPECT_THROW(ops::window_compress<float>(s, {}, vector_view(count.data(), k), {}, w, matrix(dst.data(), k, 3)),
               InvalidArgument);
  EXPECT_THROW(ops::window_compress<float>(s, {}, vector_view(count.data(), k), {}, 0, matrix(dst.data(), k, width)),
               InvalidArgument);
  // Weight sums: neither tap nor count, a count of the wrong length, no dtap.
  std::vector<float> sums(k);
  EXPECT_THROW(ops::window_weight_sums<float>({}, {}, {}, w, m, vector_view(sums.data(), k)), InvalidArgument);
  EXPECT_THROW(ops::window_weight_sums<float>({}, vector_view(count.data(), k - 1), {}, w, m,
                                              vector_view(sums.data(), k)),
               InvalidArgument);
  EXPECT_THROW(ops::window_weight_sums_backward<float>(vector_view<const float>(sums.data(), k), {}, w, m, {}),
               InvalidArgument);
}

}  // namespace
}  // namespace lf
