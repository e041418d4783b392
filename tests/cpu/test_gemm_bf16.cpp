// bf16 mixed-precision products: the rounding to bfloat16 against its definition, and gemm<float>
// under Precision::bf16 against two references: the double product of the operands rounded to bf16
// (which it must match up to fp32 accumulation, a bound that grows with K), and the fp32 product of
// the unrounded operands (which it may miss by bf16's rounding of the operands, also bounded by K).
// The products' tests skip on a CPU or build without bf16 (the refusal is tested in the CLI's tests).
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "linformer/error.h"
#include "linformer/runtime.h"
#include "test_util.h"

namespace lf {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(to_bf16(-2.0f), 0xc000);
  // 1 + 2⁻⁸ lies half-way between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1); 1 + 3·2⁻⁸ lies
  // half-way between 1 + 2⁻⁷ and 1 + 2⁻⁶: to the even one (1 + 2⁻⁶).
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  // Just above half-way rounds up, just below rounds down.
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f - 0x1p-20f), 0x3f80);
  // Overflow rounds to infinity; infinities, zeros and NaN keep what they are.
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(to_bf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::signaling_NaN()))));
  // from_bf16 is exact: the upper half of the float's bits.
  for (float x : {0.1f, -3.7e-20f, 6.5e30f}) EXPECT_EQ(bits(from_bf16(to_bf16(x))) & 0xffffu, 0u);
}

TEST(Bf16, RoundingErrorAtMostHalfAnUlp) {
  const std::vector<float> x = test::random_vector<float>(4096, 3);
  for (float v : x) {
    const float r = from_bf16(to_bf16(v * 1e3f));
    EXPECT_LE(std::abs(double(r) - double(v * 1e3f)), std::abs(double(v * 1e3f)) * 0x1p-8);
  }
}

// The vectorised conversion gives the scalar one's bits for every class of input (ties, NaN with and
// without payload, denormals, infinities, overflow) and every length's tail.
TEST(Bf16, VectorConversionMatchesScalar) {
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x3f808000u, 0x3f818000u,
                                    0x3f808001u, 0x3f807fffu, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u,
                                    0x7f800001u, 0x7fc00000u, 0xffbfffffu, 0x7fffffffu, 0x0000ffffu, 0x00008000u};
  uint64_t state = 12345;
  for (int i = 0; i < 4000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    patterns.push_back(uint32_t(state >> 32));
  }
  std::vector<float> src(patterns.size());
  std::memcpy(src.data(), patterns.data(), 4 * patterns.size());
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(15), int64_t(16), int64_t(17), int64_t(33), int64_t(src.size())}) {
    std::vector<uint16_t> got(size_t(n) + 1, 0xabcd);
    to_bf16_n(src.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], to_bf16(src[size_t(i)])) << "bits " << std::hex << patterns[size_t(i)];
    EXPECT_EQ(got[size_t(n)], 0xabcd) << "wrote past n = " << n;
  }
}

// Every shape in bf16 (below the size bound gemm<float> would stay fp32; GemmBf16Policy tests that).
class GemmBf16 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = precision_unsupported_reason(Precision::bf16); !why.empty()) GTEST_SKIP() << why;
    set_gemm_bf16_every_shape(true);
  }
  void TearDown() override { set_gemm_bf16_every_shape(false); }
};

// Runs fn with the calling thread's products in bf16, restoring fp32 after.
template <class F>
void in_bf16(F&& fn) {
  RuntimeOptions o;
  o.threads = omp_get_max_threads();
  o.precision = Precision::bf16;
  const RuntimeScope scope(o);
  EXPECT_EQ(current_precision(), Precision::bf16);
  fn();
}

struct Case {
  bool ta, tb;
  int64_t M, N, K, pad;
  float alpha, beta;
};

void check(const Case& c, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "ta=" << c.ta << " tb=" << c.tb << " M=" << c.M << " N=" << c.N << " K=" << c.K
                                  << " pad=" << c.pad << " alpha=" << c.alpha << " beta=" << c.beta);
  const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K, br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
  const int64_t lda = ac + c.pad, ldb = bc + c.pad, ldc = c.N + c.pad;
  std::vector<float> A = test::random_vector<float>(ar * lda, seed), B = test::random_vector<float>(br * ldb, seed + 1);
  std::vector<float> C0 = test::random_vector<float>(c.M * ldc, seed + 2);
  // The operands rounded to bf16 (exact in double), and |A|·|B| for the error bounds.
  std::vector<double> A16(A.size()), B16(B.size()), Aabs(A.size()), Babs(B.size()), C0d(C0.begin(), C0.end());
  for (size_t i = 0; i < A.size(); ++i) A16[i] = from_bf16(to_bf16(A[i])), Aabs[i] = std::abs(A[i]);
  for (size_t i = 0; i < B.size(); ++i) B16[i] = from_bf16(to_bf16(B[i])), Babs[i] = std::abs(B[i]);
  std::vector<double> exact16 = C0d, magnitude(size_t(c.M * ldc), 0.0);
  gemm_ref<double>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A16.data(), lda, B16.data(), ldb, c.beta, exact16.data(), ldc);
  gemm_ref<double>(c.ta, c.tb, c.M, c.N, c.K, std::abs(c.alpha), Aabs.data(), lda, Babs.data(), ldb, 0.0,
                   magnitude.data(), ldc);
  std::vector<float> fp32 = C0;
  gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, fp32.data(), ldc);
  std::vector<float> C = C0;
  in_bf16([&] { gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc); });

  const double u32 = 0x1p-24, u16 = 0x1p-8;
  int far_from_rounded = 0, far_from_fp32 = 0, pad_written = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = size_t(i * ldc + j);
      if (j >= c.N) {  // C's padding columns are not C's
        pad_written += bits(C[at]) != bits(C0[at]);
        continue;
      }
      const double mag = magnitude[at] + std::abs(c.beta * C0d[at]);
      // fp32 accumulation of K products (and the beta term): at most about (K + 2)·u32 of the magnitude.
      far_from_rounded += !(std::abs(C[at] - exact16[at]) <= 2 * (c.K + 2) * u32 * mag + 1e-30);
      // Rounding each operand moves each product by at most 2·u16 of its size: bounded by the magnitude.
      far_from_fp32 += !(std::abs(double(C[at]) - double(fp32[at])) <= (2 * u16 + 2 * (c.K + 2) * u32) * mag + 1e-30);
    }
  EXPECT_EQ(far_from_rounded, 0) << "not the fp32-accumulated product of the bf16-rounded operands";
  EXPECT_EQ(far_from_fp32, 0) << "further from the fp32 product than bf16 rounding allows";
  EXPECT_EQ(pad_written, 0) << "wrote into C's padding";
}

TEST_F(GemmBf16, EveryTransposeOddSizesPaddingAlphaBeta) {
  uint64_t seed = 100;
  for (int t = 0; t < 4; ++t)
    for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 5, 3}, {33, 17, 65},
                                  {128, 64, 300}, {5, 130, 1000}})
      for (const auto& [alpha, beta] : {std::pair<float, float>{1, 0}, {0.5f, 1}, {-2, 0.25f}})
        check({bool(t & 1), bool(t & 2), M, N, K, (M + K) % 3, alpha, beta}, seed++);
}

TEST_F(GemmBf16, LongInnerDimension) {
  // The model's longest reduction: a weight gradient over every token of a 4096-token sequence.
  check({true, false, 64, 48, 4096, 0, 1, 1}, 7);
  check({false, true, 40, 64, 4096, 3, 1, 0}, 8);
}

TEST_F(GemmBf16, DiffersFromFp32WhereRoundingMatters) {
  // The path must actually round: operands with bits below bf16's mantissa give another product.
  const int64_t n = 64;
  std::vector<float> A(n * n, 1.0f + 0x1p-12f), B(n * n, 1.0f), C(n * n), C16(n * n);
  gemm<float>(false, false, n, n, n, 1, A.data(), n, B.data(), n, 0, C.data(), n);
  in_bf16([&] { gemm<float>(false, false, n, n, n, 1, A.data(), n, B.data(), n, 0, C16.data(), n); });
  EXPECT_FLOAT_EQ(C16[0], float(n));           // 1 + 2⁻¹² rounds to 1
  EXPECT_NE(C[0], C16[0]);
}

TEST_F(GemmBf16, ResultsIndependentOfThreads) {
  // Shapes of the model's products (a projection, a weight gradient, one head's scores) with 1, 2, 3 threads.
  for (const Case& c : {Case{false, true, 512, 256, 128, 0, 1, 0}, Case{true, false, 256, 128, 1024, 0, 1, 1},
                        Case{false, false, 300, 64, 257, 1, 1, 0}}) {
    const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K, br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
    const std::vector<float> A = test::random_vector<float>(ar * (ac + c.pad), 1);
    const std::vector<float> B = test::random_vector<float>(br * (bc + c.pad), 2);
    const std::vector<float> C0 = test::random_vector<float>(c.M * c.N, 3);
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2, 3}) {
      std::vector<float> C = C0;
      RuntimeOptions o;
      o.threads = threads;
      o.precision = Precision::bf16;
      const RuntimeScope scope(o);
      gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), ac + c.pad, B.data(), bc + c.pad, c.beta, C.data(), c.N);
      results.push_back(C);
    }
    EXPECT_EQ(results[0], results[1]) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
    EXPECT_EQ(results[0], results[2]) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
  }
}

// gemm_bias (a linear layer's forward): in bf16 oneDNN adds the bias after the product. Against the
// double product of the bf16-rounded operands plus the bias, within fp32 accumulation's bound; C's
// padding columns untouched.
TEST_F(GemmBf16, BiasAddedAfterTheProduct) {
  struct Shape {
    bool ta, tb;
    int64_t M, N, K, pad;
  };
  for (const Shape& c : {Shape{false, true, 37, 21, 19, 3}, Shape{true, false, 64, 48, 33, 0},
                         Shape{false, false, 5, 130, 70, 1}, Shape{false, true, 9, 7, 0, 2}}) {
    SCOPED_TRACE(testing::Message() << c.M << "x" << c.N << "x" << c.K << " ta=" << c.ta << " tb=" << c.tb);
    const int64_t lda = (c.ta ? c.M : c.K) + c.pad, ldb = (c.tb ? c.K : c.N) + c.pad, ldc = c.N + c.pad;
    const std::vector<float> A = test::random_vector<float>((c.ta ? c.K : c.M) * lda + 1, 11),
                             B = test::random_vector<float>((c.tb ? c.N : c.K) * ldb + 1, 12),
                             bias = test::random_vector<float>(c.N, 13);
    std::vector<double> A16(A.size()), B16(B.size()), Aabs(A.size()), Babs(B.size());
    for (size_t i = 0; i < A.size(); ++i) A16[i] = from_bf16(to_bf16(A[i])), Aabs[i] = std::abs(A[i]);
    for (size_t i = 0; i < B.size(); ++i) B16[i] = from_bf16(to_bf16(B[i])), Babs[i] = std::abs(B[i]);
    std::vector<double> exact(size_t(c.M * ldc)), magnitude(size_t(c.M * ldc));
    gemm_ref<double>(c.ta, c.tb, c.M, c.N, c.K, 1, A16.data(), lda, B16.data(), ldb, 0, exact.data(), ldc);
    gemm_ref<double>(c.ta, c.tb, c.M, c.N, c.K, 1, Aabs.data(), lda, Babs.data(), ldb, 0, magnitude.data(), ldc);
    std::vector<float> C(size_t(c.M * ldc), -7.0f);
    in_bf16([&] { gemm_bias<float>(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, bias.data(), C.data(), ldc); });
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t at = size_t(i * ldc + j);
        if (j >= c.N) {
          ASSERT_EQ(C[at], -7.0f) << "padding written at " << i << "," << j;
          continue;
        }
        const double want = exact[at] + bias[size_t(j)], mag = magnitude[at] + std::abs(bias[size_t(j)]);
        ASSERT_LE(std::abs(C[at] - want), 2 * (c.K + 2) * 0x1p-24 * mag + 1e-30) << i << "," << j;
      }
  }
}

// Which products run in bf16 by default: K ≥ 32 and M·N ≥ 2¹⁵; the rest stay exactly fp32, and
// the profile's tag (gemm_runs_bf16) says which.
TEST(GemmBf16Policy, SmallProductsStayFp32) {
  if (const std::string why = precision_unsupported_reason(Precision::bf16); !why.empty()) GTEST_SKIP() << why;
  struct Shape {
    int64_t M, N, K;
    bool bf16;
  };
  for (const Shape& s : {Shape{4096, 64, 256, true}, Shape{4096, 256, 64, true}, Shape{256, 128, 32, true},
                         Shape{256, 128, 31, false}, Shape{255, 128, 64, false}, Shape{256, 64, 4096, false},
                         Shape{4096, 512, 16, false}, Shape{8, 16, 64, false}}) {
    // Operands with bits below bf16's mantissa: the fp32 product differs from the bf16 one.
    std::vector<float> A(size_t(s.M * s.K), 1.0f + 0x1p-12f), B(size_t(s.K * s.N), 1.0f);
    std::vector<float> C32(size_t(s.M * s.N)), C(size_t(s.M * s.N));
    gemm<float>(false, false, s.M, s.N, s.K, 1, A.data(), s.K, B.data(), s.N, 0, C32.data(), s.N);
    EXPECT_FALSE(gemm_runs_bf16(s.M, s.N, s.K)) << "fp32 is the default";
    in_bf16([&] {
      gemm<float>(false, false, s.M, s.N, s.K, 1, A.data(), s.K, B.data(), s.N, 0, C.data(), s.N);
      EXPECT_EQ(gemm_runs_bf16(s.M, s.N, s.K), s.bf16) << s.M << "x" << s.N << "x" << s.K;
    });
    EXPECT_EQ(C != C32, s.bf16) << s.M << "x" << s.N << "x" << s.K;
  }
}

TEST(Precision, NamesParseAndTheScopeRestores) {
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(parse_precision("bfloat16"), Precision::bf16);
  EXPECT_EQ(parse_precision("fp32"), Precision::fp32);
  EXPECT_STREQ(precision_name(Precision::bf16), "bf16");
  EXPECT_THROW(parse_precision("fp16"), InvalidArgument);
  EXPECT_TRUE(precision_unsupported_reason(Precision::fp32).empty());
  EXPECT_EQ(current_precision(), Precision::fp32);
  RuntimeOptions o;
  o.precision = Precision::bf16;
  if (!precision_unsupported_reason(Precision::bf16).empty()) {
    // Without the instructions the scope refuses, and says why.
    try {
      const RuntimeScope scope(o);
      ADD_FAILURE() << "RuntimeScope accepted bf16 where it is unsupported";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    }
  } else {
    {
      const RuntimeScope scope(o);
      EXPECT_EQ(current_precision(), Precision::bf16);
    }
  }
  EXPECT_EQ(current_precision(), Precision::fp32);
}

}  // namespace
}  // namespace lf
