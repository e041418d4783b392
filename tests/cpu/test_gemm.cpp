// gemm: the float backend against the double-accumulating reference over odd sizes, every transpose
// combination, padded leading dimensions, the beta = 0 / beta = 1 / K = 0 edge cases and batching.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "linformer/error.h"
#include "linformer/runtime.h"
#include "test_util.h"

namespace lf {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A rows×cols matrix with row stride ld; the ld − cols padding columns hold NaN, so a kernel that
// reads them poisons its result and one that writes them is caught.
std::vector<float> padded(int64_t rows, int64_t cols, int64_t ld, uint64_t seed) {
  std::vector<float> m(size_t(rows * ld), kNaN);
  const std::vector<float> r = test::random_vector<float>(rows * cols, seed);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) m[size_t(i * ld + j)] = r[size_t(i * cols + j)];
  return m;
}

struct Case {
  bool ta, tb;
  int64_t M, N, K, pad;
  float alpha, beta;
  bool nan_c;  // C starts as NaN garbage (only meaningful with beta = 0)
};

// Runs gemm<float> and gemm_ref<float> on the same inputs and compares the interiors of C; the padding
// of C must still be NaN afterwards.
void check(const Case& c, uint64_t seed) {
  const int64_t lda = (c.ta ? c.M : c.K) + c.pad, ldb = (c.tb ? c.K : c.N) + c.pad, ldc = c.N + c.pad;
  const std::vector<float> A = padded(c.ta ? c.K : c.M, c.ta ? c.M : c.K, lda, seed);
  const std::vector<float> B = padded(c.tb ? c.N : c.K, c.tb ? c.K : c.N, ldb, seed + 1);
  std::vector<float> C = padded(c.M, c.N, ldc, seed + 2);
  if (c.nan_c) std::fill(C.begin(), C.end(), kNaN);
  std::vector<float> R = C;
  gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  gemm_ref<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, R.data(), ldc);
  std::vector<float> got, want;
  int bad_pad = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const float v = C[size_t(i * ldc + j)];
      if (j >= c.N) {
        bad_pad += !std::isnan(v);
      } else {
        got.push_back(v);
        want.push_back(R[size_t(i * ldc + j)]);
      }
    }
  SCOPED_TRACE(testing::Message() << "ta=" << c.ta << " tb=" << c.tb << " M=" << c.M << " N=" << c.N << " K=" << c.K
                                  << " pad=" << c.pad << " beta=" << c.beta);
  EXPECT_EQ(bad_pad, 0) << "gemm wrote into the padding of C";
  for (float v : got) ASSERT_TRUE(std::isfinite(v));
  // Inputs lie in [-1, 1], so rounding errors scale with K, not with |C| (which cancellation can make
  // arbitrarily small); a wrong index or transpose gives errors of order 1.
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(double(got[i]) - double(want[i])));
  EXPECT_LE(err, 1e-6 * double(c.K + 1));
}

TEST(GemmRef, HandComputedProduct) {
  const std::vector<double> A = {1, 2, 3, 4, 5, 6}, B = {7, 8, 9, 10, 11, 12};  // (2×3), (3×2)
  std::vector<double> C = {1, 1, 1, 1};
  gemm_ref<double>(false, false, 2, 2, 3, 2.0, A.data(), 3, B.data(), 2, 0.5, C.data(), 2);
  EXPECT_EQ(C, (std::vector<double>{116.5, 128.5, 278.5, 308.5}));  // 2·AB + 0.5·C
  gemm_ref<double>(true, true, 2, 2, 3, 1.0, B.data(), 2, A.data(), 3, 0.0, C.data(), 2);
  EXPECT_EQ(C, (std::vector<double>{58, 139, 64, 154}));  // Bᵀ Aᵀ = (AB)ᵀ
}

TEST(Gemm, OddSizesAllTransposes) {
  const int64_t sizes[] = {1, 2, 3, 7, 16, 31, 33, 64, 67};
  uint64_t seed = 1;
  for (int t = 0; t < 4; ++t)
    for (int64_t M : sizes)
      for (int64_t N : sizes)
        for (int64_t K : sizes) {
          check({bool(t & 1), bool(t & 2), M, N, K, seed % 3 ? 0 : 5, 0.75f, 0.5f, false}, seed);
          ++seed;
        }
}

TEST(Gemm, LargeLeadingDimensions) {
  for (int t = 0; t < 4; ++t) check({bool(t & 1), bool(t & 2), 37, 29, 41, 13, 1.0f, 0.0f, false}, 100 + t);
}

TEST(Gemm, BetaZeroOverwritesNaN) {
  for (int t = 0; t < 4; ++t)
    for (int64_t s : {1, 5, 67}) check({bool(t & 1), bool(t & 2), s, s + 2, s + 1, 3, 1.0f, 0.0f, true}, 200 + s);
}

TEST(Gemm, BetaOneAccumulates) {
  const int64_t M = 9, N = 11, K = 5;
  const std::vector<float> A = test::random_vector<float>(M * K, 1), B = test::random_vector<float>(K * N, 2);
  const std::vector<float> C0 = test::random_vector<float>(M * N, 3);
  std::vector<float> C = C0;
  gemm<float>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 1.f, C.data(), N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double want = C0[size_t(i * N + j)];
      for (int64_t p = 0; p < K; ++p) want += double(A[size_t(i * K + p)]) * B[size_t(p * N + j)];
      EXPECT_NEAR(C[size_t(i * N + j)], want, 1e-5) << i << "," << j;
    }
}

TEST(Gemm, KZeroScalesC) {
  std::vector<float> C(12, kNaN);
  gemm<float>(false, false, 3, 4, 0, 1.f, nullptr, 1, nullptr, 4, 0.f, C.data(), 4);
  for (float v : C) EXPECT_EQ(v, 0.f);
  std::vector<float> D = test::random_vector<float>(12, 4), D0 = D;
  gemm<float>(true, true, 3, 4, 0, 1.f, nullptr, 3, nullptr, 1, 2.f, D.data(), 4);
  for (size_t i = 0; i < D.size(); ++i) EXPECT_EQ(D[i], 2.f * D0[i]);
}

TEST(Gemm, NegativeSizeThrows) {
  float c = 0;
  EXPECT_THROW(gemm<float>(false, false, -1, 1, 1, 1.f, &c, 1, &c, 1, 0.f, &c, 1), InvalidArgument);
  EXPECT_THROW(gemm<double>(false, false, 1, 1, -2, 1.0, nullptr, 1, nullptr, 1, 0.0, nullptr, 1), InvalidArgument);
}

TEST(Gemm, DoubleParallelPathEqualsReference) {
  // Above the threading threshold gemm<double> splits rows over threads; every element must still be
  // computed exactly as the reference computes it.
  const int64_t M = 40, N = 50, K = 30;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const std::vector<double> A = test::random_vector(M * K, 10 + t), B = test::random_vector(K * N, 20 + t);
    std::vector<double> C = test::random_vector(M * N, 30 + t), R = C;
    gemm<double>(ta, tb, M, N, K, 1.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.5, C.data(), N);
    gemm_ref<double>(ta, tb, M, N, K, 1.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.5, R.data(), N);
    EXPECT_EQ(C, R) << "ta=" << ta << " tb=" << tb;
  }
}

TEST(Gemm, BatchedStrideZeroBroadcasts) {
  const int64_t M = 7, N = 5, K = 3, batch = 4;
  const std::vector<float> A = test::random_vector<float>(M * K, 5);          // one A for every item
  const std::vector<float> B = test::random_vector<float>(batch * K * N, 6);  // one B per item
  std::vector<float> C(size_t(batch * M * N), kNaN);
  gemm_batched<float>(false, false, M, N, K, 1.f, A.data(), K, 0, B.data(), N, K * N, 0.f, C.data(), N, M * N, batch);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<float> R(size_t(M * N));
    gemm_ref<float>(false, false, M, N, K, 1.f, A.data(), K, B.data() + b * K * N, N, 0.f, R.data(), N);
    LF_EXPECT_CLOSE(C.data() + b * M * N, R.data(), M * N, 2e-6);
  }
  // And a broadcast B (stride 0) against per-item A.
  const std::vector<float> As = test::random_vector<float>(batch * M * K, 7), Bs = test::random_vector<float>(K * N, 8);
  gemm_batched<float>(false, false, M, N, K, 1.f, As.data(), K, M * K, Bs.data(), N, 0, 0.f, C.data(), N, M * N, batch);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<float> R(size_t(M * N));
    gemm_ref<float>(false, false, M, N, K, 1.f, As.data() + b * M * K, K, Bs.data(), N, 0.f, R.data(), N);
    LF_EXPECT_CLOSE(C.data() + b * M * N, R.data(), M * N, 2e-6);
  }
}

// Every backend's float products are bitwise the same with 1, 2 and 3 threads, at shapes where MKL's
// own threading differs (N = 20, 8×16×64 with beta = 1, a K-heavy 256×64×4096) and at model shapes,
// every transpose, beta 0 and 1 (the mkl backend tiles C itself for this; see gemm.cpp), alpha 1 and
// not (oneDNN's own alpha ≠ 1 differed between thread counts at 128×128×32, the scores of `full` at
// n = 128, d_h = 32, and at 32×128×64: gemm.cpp folds alpha into an operand).
TEST(Gemm, FloatResultsIndependentOfThreads) {
  struct Shape {
    int64_t M, N, K;
  };
  static const std::vector<Shape> shapes = {{128, 20, 160}, {8, 16, 64},   {4, 4, 640},  {256, 64, 4096},
                                            {512, 260, 512}, {300, 36, 100}, {128, 128, 32}, {32, 128, 64}};
  static const std::vector<float> alphas = {1.f, 0.17677669f};
  for (const Shape s : shapes)
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const float beta : {0.f, 1.f})
          for (const float alpha : alphas) {
          SCOPED_TRACE(testing::Message() << s.M << "x" << s.N << "x" << s.K << " ta=" << ta << " tb=" << tb
                                          << " beta=" << beta << " alpha=" << alpha);
          const std::vector<float> A = test::random_vector<float>(s.M * s.K, 11), B = test::random_vector<float>(s.K * s.N, 12);
          const std::vector<float> C0 = test::random_vector<float>(s.M * s.N, 13);
          std::vector<float> first;
          for (const int threads : {1, 2, 3}) {
            const RuntimeScope scope(RuntimeOptions{threads});
            std::vector<float> C = C0;
            gemm<float>(ta, tb, s.M, s.N, s.K, alpha, A.data(), ta ? s.M : s.K, B.data(), tb ? s.K : s.N, beta, C.data(), s.N);
            if (first.empty())
              first = C;
            else
              EXPECT_EQ(C, first) << "threads=" << threads;
          }
          std::vector<float> want = C0;  // and the product itself, alpha included
          gemm_ref<float>(ta, tb, s.M, s.N, s.K, alpha, A.data(), ta ? s.M : s.K, B.data(), tb ? s.K : s.N, beta, want.data(), s.N);
          EXPECT_LE(test::max_rel_error(first.data(), want.data(), s.M * s.N), 1e-4);
        }
}

}  // namespace
}  // namespace lf
