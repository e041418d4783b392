// int8 dynamic quantisation of the linear layers (--precision int8, src/cpu/linear_int8.h): the
// quantisers against their definition (scale and zero point, ties to even, saturation, all-zero and
// constant inputs, NaN and inf refused); the oneDNN product against the plain reference (odd sizes,
// row strides, bias or none, the same bits for any thread count); the int8 layer against the fp32 one
// within the bound the quantisation steps give; a whole model's logits in int8 against fp32; and no
// backward under int8. The products' tests skip on a CPU or build without AVX512-VNNI (the CLI's
// tests check the refusal).
#include <omp.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/linear.h"
#include "cpu/linear_int8.h"
#include "linformer/error.h"
#include "linformer/model.h"
#include "linformer/runtime.h"
#include "linformer/trainer.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "test_util.h"
#include "tiny_model_config.h"

namespace lf {
namespace {

using test::random_vector;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Runs fn with the calling thread's precision at int8 and `threads` threads, restoring both after.
template <class F>
void in_int8(F&& fn, int threads = 0) {
  RuntimeOptions o;
  o.threads = threads > 0 ? threads : omp_get_max_threads();
  o.precision = Precision::int8;
  const RuntimeScope scope(o);
  fn();
}

#define SKIP_WITHOUT_INT8()                                                                              \
  do {                                                                                                   \
    if (const std::string why = precision_unsupported_reason(Precision::int8); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

// ---- the quantisers against their definition -----------------------------------------------------

TEST(Int8Quantizer, U8ParamsFromTheRangeWithZero) {
  QuantParams p = choose_u8_params(-1.0f, 3.0f);
  EXPECT_EQ(p.scale, float(4.0 / 255.0));
  EXPECT_EQ(p.zero_point, 64);  // rne(1 / (4/255)) = rne(63.75)
  p = choose_u8_params(2.0f, 5.0f);  // the range is widened to include 0
  EXPECT_EQ(p.scale, float(5.0 / 255.0));
  EXPECT_EQ(p.zero_point, 0);
  p = choose_u8_params(-6.0f, -2.0f);
  EXPECT_EQ(p.scale, float(6.0 / 255.0));
  EXPECT_EQ(p.zero_point, 255);
  p = choose_u8_params(-1.0f, 1.0f);  // from the fp32 scale: 1 / fl(2/255) = 127.49999...
  EXPECT_EQ(p.zero_point, int(std::nearbyint(1.0 / double(float(2.0 / 255.0)))));
  p = choose_u8_params(-127.5f, 127.5f);  // scale 1 exactly: -lo/scale = 127.5, a tie, goes to the even 128
  EXPECT_EQ(p.scale, 1.0f);
  EXPECT_EQ(p.zero_point, 128);
  EXPECT_EQ(choose_u8_params(-126.5f, 128.5f).zero_point, 126);  // and 126.5 to 126
  p = choose_u8_params(0.0f, 0.0f);  // all zero: the smallest normal scale, 0 exact
  EXPECT_EQ(p.scale, FLT_MIN);
  EXPECT_EQ(p.zero_point, 0);
  p = choose_u8_params(-FLT_MAX, FLT_MAX);  // hi − lo overflows fp32, not the parameters
  EXPECT_TRUE(std::isfinite(p.scale));
  EXPECT_EQ(p.zero_point, int(std::nearbyint(double(FLT_MAX) / double(p.scale))));
}

TEST(Int8Quantizer, U8RoundsTiesToEvenAndSaturates) {
  const QuantParams p{1.0f, 10};
  const std::vector<float> x = {0.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 0.49999997f, 244.5f, 245.5f, 300.0f,
                                -10.0f, -10.5f, -11.0f, 1e30f, -1e30f, kNaN};
  const std::vector<int> want = {10, 10, 12, 12, 10, 8, 10, 254, 255, 255, 0, 0, 0, 255, 0, 0};
  std::vector<uint8_t> q(x.size());
  quantize_u8(x.data(), 1, int64_t(x.size()), int64_t(x.size()), p, q.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(int(q[i]), want[i]) << "x = " << x[i];
}

// q = clamp(z + rne(fl(x · fl(1/scale))), 0, 255), computed here in double from the same fp32 product.
void expect_u8_definition(const std::vector<float>& x, int64_t rows, int64_t cols, int64_t ld, QuantParams p,
                          const std::vector<uint8_t>& q) {
  const float inv = 1.0f / p.scale;
  int wrong = 0, far = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[size_t(r * ld + c)];
      const double want = std::clamp(double(p.zero_point) + std::nearbyint(double(v * inv)), 0.0, 255.0);
      wrong += int(q[size_t(r * cols + c)]) != int(want);
      // Inside the range, dequantising is off by at most half a step (and fp32's rounding of 1/scale).
      const double back = double(p.scale) * (int(q[size_t(r * cols + c)]) - p.zero_point);
      far += !(std::abs(back - v) <= 0.5 * p.scale * (1 + 1e-5));
    }
  EXPECT_EQ(wrong, 0) << "values not quantised by the definition";
  EXPECT_EQ(far, 0) << "values further than half a step from their quantised value";
}

TEST(Int8Quantizer, U8DynamicMatchesTheDefinition) {
  // Row strides, odd sizes, sizes below and above the parallel threshold, offset ranges.
  struct Case {
    int64_t rows, cols, pad;
    double lo, hi;
  };
  uint64_t seed = 1;
  for (const Case& c : {Case{1, 1, 0, -1, 1}, Case{3, 7, 2, -0.2, 3}, Case{33, 65, 1, -5, -1}, Case{300, 517, 3, 0.5, 2},
                        Case{257, 1024, 0, -1e-3, 1e-3}}) {
    SCOPED_TRACE(testing::Message() << c.rows << "x" << c.cols << " pad " << c.pad << " [" << c.lo << ", " << c.hi << "]");
    const int64_t ld = c.cols + c.pad;
    std::vector<float> x = random_vector<float>(c.rows * ld, seed++, c.lo, c.hi);
    std::vector<uint8_t> q(static_cast<size_t>(c.rows * c.cols));
    const QuantParams p = quantize_u8_dynamic(x.data(), c.rows, c.cols, ld, q.data());
    float lo = 0, hi = 0;
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.cols; ++j) lo = std::min(lo, x[size_t(r * ld + j)]), hi = std::max(hi, x[size_t(r * ld + j)]);
    const QuantParams want = choose_u8_params(lo, hi);  // from the values only: padding is not x's
    EXPECT_EQ(p.scale, want.scale);
    EXPECT_EQ(p.zero_point, want.zero_point);
    expect_u8_definition(x, c.rows, c.cols, ld, p, q);
  }
}

TEST(Int8Quantizer, U8AllZeroAndConstantInputs) {
  std::vector<uint8_t> q(40);
  std::vector<float> x(40, 0.0f);
  QuantParams p = quantize_u8_dynamic(x.data(), 4, 10, 10, q.data());
  for (uint8_t v : q) EXPECT_EQ(double(p.scale) * (v - p.zero_point), 0.0);
  x.assign(40, 0.7f);
  p = quantize_u8_dynamic(x.data(), 4, 10, 10, q.data());
  EXPECT_EQ(p.zero_point, 0);
  for (uint8_t v : q) EXPECT_EQ(v, 255);
  EXPECT_NEAR(double(p.scale) * 255, 0.7, 1e-7);
  x.assign(40, -3.0f);
  p = quantize_u8_dynamic(x.data(), 4, 10, 10, q.data());
  EXPECT_EQ(p.zero_point, 255);
  for (uint8_t v : q) EXPECT_EQ(v, 0);
  EXPECT_NEAR(double(p.scale) * -255, -3.0, 1e-6);
  // Zero stays exactly zero whatever the range: padding and ReLU's zeros are not moved.
  x = random_vector<float>(40, 9, -0.3, 2.2);
  x[7] = 0;
  p = quantize_u8_dynamic(x.data(), 4, 10, 10, q.data());
  EXPECT_EQ(int(q[7]), p.zero_point);
}

TEST(Int8Quantizer, NonFiniteInputsAreRefused) {
  EXPECT_THROW(choose_u8_params(-kInf, 1.0f), Error);
  EXPECT_THROW(choose_u8_params(0.0f, kNaN), Error);
  for (const int64_t n : {int64_t(12), int64_t(70000)}) {  // the sequential and the parallel loop
    for (const float bad : {kNaN, kInf, -kInf}) {
      std::vector<float> x = random_vector<float>(n, 2);
      x[size_t(n / 2 + 1)] = bad;
      std::vector<uint8_t> q(static_cast<size_t>(n));
      try {
        quantize_u8_dynamic(x.data(), n / 4, 4, 4, q.data());
        ADD_FAILURE() << "accepted " << bad << " in the input (n = " << n << ")";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("NaN or inf"), std::string::npos) << e.what();
      }
      std::vector<int8_t> qw(static_cast<size_t>(n));
      std::vector<float> scales(static_cast<size_t>(n / 4));
      EXPECT_THROW(quantize_s8_rows(x.data(), n / 4, 4, qw.data(), scales.data()), Error) << bad << " in a weight";
    }
  }
}

// The range and the finiteness probe at every row width and position: the vector loop's 16 lanes and
// its masked tail.
TEST(Int8Quantizer, RangeAndProbeAtEveryWidthAndPosition) {
  for (int64_t cols = 1; cols <= 40; ++cols) {
    const int64_t rows = 3;
    std::vector<float> x = random_vector<float>(rows * cols, uint64_t(cols), -0.5, 0.25);
    x[size_t(cols - 1)] = 3.0f;   // the maximum in the first row's last column (a tail lane when cols % 16 != 0)
    x[size_t(rows * cols - 1)] = -4.0f;  // the minimum in the last row's last column
    std::vector<uint8_t> q(size_t(rows * cols));
    const QuantParams got = quantize_u8_dynamic(x.data(), rows, cols, cols, q.data());
    const QuantParams want = choose_u8_params(-4.0f, 3.0f);
    EXPECT_EQ(got.scale, want.scale) << cols;
    EXPECT_EQ(got.zero_point, want.zero_point) << cols;
    for (int64_t bad_at = 0; bad_at < cols; ++bad_at) {
      std::vector<float> y(x);
      y[size_t(cols + bad_at)] = bad_at % 2 ? kInf : kNaN;  // in the middle row
      EXPECT_THROW(quantize_u8_dynamic(y.data(), rows, cols, cols, q.data()), Error) << cols << " " << bad_at;
    }
  }
}

TEST(Int8Quantizer, S8RowsMatchTheDefinition) {
  const int64_t rows = 37, cols = 129;
  std::vector<float> W = random_vector<float>(rows * cols, 4, -0.5, 0.5);
  for (int64_t c = 0; c < cols; ++c) W[size_t(3 * cols + c)] = 0;       // an all-zero row
  for (int64_t c = 0; c < cols; ++c) W[size_t(5 * cols + c)] = c == 7 ? -2.5f : 0;  // one entry
  for (int64_t c = 0; c < cols; ++c) W[size_t(6 * cols + c)] *= 1e-30f;  // a tiny row: its own scale
  std::vector<int8_t> q(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows));
  quantize_s8_rows(W.data(), rows, cols, q.data(), scales.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::abs(W[size_t(r * cols + c)]));
    const float want_scale = amax > 0 ? float(double(amax) / 127.0) : FLT_MIN;
    ASSERT_EQ(scales[size_t(r)], want_scale) << "row " << r;
    const float inv = 1.0f / want_scale;
    for (int64_t c = 0; c < cols; ++c) {
      const float w = W[size_t(r * cols + c)];
      const int got = q[size_t(r * cols + c)];
      ASSERT_EQ(got, int(std::clamp(std::nearbyint(double(w * inv)), -127.0, 127.0))) << r << "," << c;
      ASSERT_LE(std::abs(double(want_scale) * got - w), 0.5 * want_scale * (1 + 1e-5)) << r << "," << c;
      if (std::abs(w) == amax && amax > 0) {
        EXPECT_EQ(std::abs(got), 127) << "the largest entry is ±127";
      }
    }
  }
  EXPECT_EQ(q[size_t(5 * cols + 7)], -127);
}

// ---- the oneDNN product against the reference ---------------------------------------------------

class LinearInt8 : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_INT8(); }
};

struct Shape {
  int64_t N, in, out, pad_x, pad_y;
  bool bias;
};

float ulp(float v) {
  v = std::abs(v);
  return std::nextafter(v, kInf) - v;
}

void check_against_reference(const Shape& s, uint64_t seed, double lo, double hi) {
  SCOPED_TRACE(testing::Message() << "N=" << s.N << " in=" << s.in << " out=" << s.out << " pad_x=" << s.pad_x
                                  << " pad_y=" << s.pad_y << " bias=" << s.bias << " x in [" << lo << ", " << hi << "]");
  const int64_t ldx = s.in + s.pad_x, ldy = s.out + s.pad_y;
  const std::vector<float> x = random_vector<float>(s.N * ldx, seed, lo, hi);
  const std::vector<float> W = random_vector<float>(s.out * s.in, seed + 1, -0.2, 0.2);
  const std::vector<float> b = random_vector<float>(s.out, seed + 2);
  const float* bias = s.bias ? b.data() : nullptr;
  const std::vector<float> y0 = random_vector<float>(s.N * ldy, seed + 3);  // garbage to overwrite
  std::vector<float> fast = y0, ref = y0, unbiased = y0;
  linear_int8_forward(x.data(), W.data(), bias, fast.data(), s.N, s.in, s.out, ldx, ldy);
  linear_int8_forward_ref(x.data(), W.data(), bias, ref.data(), s.N, s.in, s.out, ldx, ldy);
  linear_int8_forward_ref(x.data(), W.data(), nullptr, unbiased.data(), s.N, s.in, s.out, ldx, ldy);
  int far = 0, pad_written = 0, differ = 0;
  for (int64_t r = 0; r < s.N; ++r)
    for (int64_t j = 0; j < ldy; ++j) {
      const size_t at = size_t(r * ldy + j);
      if (j >= s.out) {
        pad_written += std::memcmp(&fast[at], &y0[at], 4) != 0;
        continue;
      }
      differ += fast[at] != ref[at];
      // The integer sum is exact in both; what may differ is fp32's rounding of the scaled sum and of
      // adding the bias: one ulp of each.
      far += !(std::abs(double(fast[at]) - double(ref[at])) <= double(ulp(unbiased[at])) + double(ulp(ref[at])));
    }
  EXPECT_EQ(far, 0) << "further from the reference than fp32 rounding of the dequantisation allows";
  EXPECT_EQ(pad_written, 0) << "wrote into y's padding";
  ::testing::Test::RecordProperty("differ", differ);
}

TEST_F(LinearInt8, MatchesTheReferenceAtOddSizesStridesAndBias) {
  uint64_t seed = 10;
  for (const Shape& s : {Shape{1, 1, 1, 0, 0, false}, Shape{1, 1, 1, 0, 0, true}, Shape{7, 5, 3, 2, 1, true},
                         Shape{33, 65, 17, 0, 3, false}, Shape{33, 65, 17, 1, 0, true}, Shape{130, 257, 64, 3, 5, true},
                         Shape{5, 1000, 300, 0, 0, true}, Shape{300, 128, 513, 0, 7, false}, Shape{512, 2048, 96, 0, 0, true}})
    for (const auto& [lo, hi] : {std::pair<double, double>{-1, 1}, {0, 4}, {-3, -0.5}, {-0.1, 2}}) check_against_reference(s, seed++, lo, hi);
}

TEST_F(LinearInt8, ZeroInnerSizeGivesTheBias) {
  std::vector<float> b = {1, -2, 3}, y(6, 7.0f);
  linear_int8_forward(nullptr, nullptr, b.data(), y.data(), 2, 0, 3);
  EXPECT_EQ(y, (std::vector<float>{1, -2, 3, 1, -2, 3}));
  linear_int8_forward(nullptr, nullptr, nullptr, y.data(), 2, 0, 3);
  EXPECT_EQ(y, std::vector<float>(6, 0.0f));
  linear_int8_forward(nullptr, nullptr, b.data(), y.data(), 0, 4, 3);  // no rows: nothing
}

TEST_F(LinearInt8, TooLongAnInnerSizeIsRefused) {
  const int64_t in = kInt8MaxInner + 1;
  std::vector<float> x(size_t(in), 1.0f), W(size_t(in), 1.0f), y(1);
  try {
    linear_int8_forward(x.data(), W.data(), nullptr, y.data(), 1, in, 1);
    ADD_FAILURE() << "accepted in = " << in;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("overflow"), std::string::npos) << e.what();
  }
}

TEST_F(LinearInt8, ResultsIndependentOfThreads) {
  // The model's shapes (a projection, the feed-forward's two maps) and an odd one, with 1, 2 and 3 threads.
  for (const Shape& s : {Shape{512, 512, 512, 0, 0, true}, Shape{1024, 512, 2048, 0, 0, true},
                         Shape{1024, 2048, 512, 0, 0, false}, Shape{301, 259, 131, 1, 2, true}}) {
    const int64_t ldx = s.in + s.pad_x, ldy = s.out + s.pad_y;
    const std::vector<float> x = random_vector<float>(s.N * ldx, 1, -0.5, 1.5), W = random_vector<float>(s.out * s.in, 2);
    const std::vector<float> b = random_vector<float>(s.out, 3);
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2, 3}) {
      std::vector<float> y(size_t(s.N * ldy), 0.0f);
      in_int8([&] { linear_int8_forward(x.data(), W.data(), s.bias ? b.data() : nullptr, y.data(), s.N, s.in, s.out, ldx, ldy); },
              threads);
      results.push_back(std::move(y));
    }
    EXPECT_EQ(results[0], results[1]) << "N=" << s.N << " in=" << s.in << " out=" << s.out;
    EXPECT_EQ(results[0], results[2]) << "N=" << s.N << " in=" << s.in << " out=" << s.out;
  }
}

// |y_int8 − y| ≤ Σ_k |x_k|·|Δw_k| + |w_k|·|Δx_k| + |Δx_k|·|Δw_k| with |Δx| ≤ s_x/2, |Δw_k| ≤ s_w/2: the
// bound s_w/2·Σ|x| + s_x/2·Σ|w| + in·s_x·s_w/4, plus fp32's rounding of both sides.
TEST_F(LinearInt8, WithinTheQuantisationBoundOfFp32) {
  struct Case {
    int64_t N, in, out;
    double lo, hi;
  };
  uint64_t seed = 40;
  for (const Case& c : {Case{64, 512, 512, -1, 1}, Case{33, 2048, 129, 0, 3}, Case{100, 77, 300, -2, 0.5}}) {
    SCOPED_TRACE(testing::Message() << c.N << "x" << c.in << "→" << c.out << " x in [" << c.lo << ", " << c.hi << "]");
    const std::vector<float> x = random_vector<float>(c.N * c.in, seed++, c.lo, c.hi);
    const std::vector<float> W = random_vector<float>(c.out * c.in, seed++, -0.1, 0.1), b = random_vector<float>(c.out, seed++);
    std::vector<float> y32(static_cast<size_t>(c.N * c.out)), y8(size_t(c.N * c.out));
    linear_forward<float>(x.data(), W.data(), b.data(), y32.data(), c.N, c.in, c.out);
    in_int8([&] { linear_forward<float>(x.data(), W.data(), b.data(), y8.data(), c.N, c.in, c.out); });
    std::vector<uint8_t> qx(x.size());
    std::vector<int8_t> qw(W.size());
    std::vector<float> sw(static_cast<size_t>(c.out));
    const QuantParams px = quantize_u8_dynamic(x.data(), c.N, c.in, c.in, qx.data());
    quantize_s8_rows(W.data(), c.out, c.in, qw.data(), sw.data());
    int outside = 0;
    double worst = 0;  // the largest error as a fraction of its bound: the bound must not be vacuous
    for (int64_t r = 0; r < c.N; ++r)
      for (int64_t j = 0; j < c.out; ++j) {
        double sx = 0, sw_abs = 0, mag = std::abs(b[size_t(j)]);
        for (int64_t k = 0; k < c.in; ++k) {
          const double xv = std::abs(x[size_t(r * c.in + k)]), wv = std::abs(W[size_t(j * c.in + k)]);
          sx += xv, sw_abs += wv, mag += xv * wv;
        }
        const double s_x = px.scale * (1 + 1e-5), s_w = sw[size_t(j)] * (1 + 1e-5);
        const double bound = s_w / 2 * sx + s_x / 2 * sw_abs + double(c.in) * s_x * s_w / 4 + 4 * (c.in + 2) * 0x1p-24 * mag;
        const double err = std::abs(double(y8[size_t(r * c.out + j)]) - double(y32[size_t(r * c.out + j)]));
        outside += !(err <= bound);
        worst = std::max(worst, err / bound);
      }
    EXPECT_EQ(outside, 0) << "int8 further from fp32 than its quantisation steps allow";
    EXPECT_GT(worst, 0.01) << "the int8 result is suspiciously close to fp32: is it quantised at all?";
  }
}

// ---- what runs at int8: linear forwards only, and no backward -------------------------------------

TEST_F(LinearInt8, OnlyTheLinearLayersAreQuantised) {
  const int64_t N = 48, in = 96, out = 40;
  const std::vector<float> x = random_vector<float>(N * in, 5), W = random_vector<float>(out * in, 6), b = random_vector<float>(out, 7);
  std::vector<float> via_op(static_cast<size_t>(N * out)), ref(size_t(N * out)), unbiased(size_t(N * out));
  std::vector<float> mm32(static_cast<size_t>(N * out)), mm8(size_t(N * out));
  linear_int8_forward_ref(x.data(), W.data(), b.data(), ref.data(), N, in, out);
  linear_int8_forward_ref(x.data(), W.data(), nullptr, unbiased.data(), N, in, out);
  ops::matmul<float>(matrix(x.data(), N, in), matrix(W.data(), out, in).t(), matrix(mm32.data(), N, out));
  in_int8([&] {
    EXPECT_EQ(current_precision(), Precision::int8);
    ops::linear_forward<float>(matrix(x.data(), N, in), matrix(W.data(), out, in), vector_view(b.data(), out),
                               matrix(via_op.data(), N, out));
    ops::matmul<float>(matrix(x.data(), N, in), matrix(W.data(), out, in).t(), matrix(mm8.data(), N, out));
  });
  EXPECT_EQ(current_precision(), Precision::fp32);
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_LE(std::abs(via_op[i] - ref[i]), ulp(unbiased[i]) + ulp(ref[i])) << "ops::linear_forward at int8, entry " << i;
  EXPECT_EQ(mm8, mm32) << "ops::matmul must stay fp32 at int8";
  // double is the exact path of the tests: not quantised either.
  const std::vector<double> xd(x.begin(), x.end()), Wd(W.begin(), W.end());
  std::vector<double> yd(static_cast<size_t>(N * out)), yd8(size_t(N * out));
  linear_forward<double>(xd.data(), Wd.data(), nullptr, yd.data(), N, in, out);
  in_int8([&] { linear_forward<double>(xd.data(), Wd.data(), nullptr, yd8.data(), N, in, out); });
  EXPECT_EQ(yd, yd8);
}

TEST_F(LinearInt8, BackwardThrows) {
  const int64_t N = 4, in = 6, out = 5;
  const std::vector<float> x = random_vector<float>(N * in, 1), W = random_vector<float>(out * in, 2), dy = random_vector<float>(N * out, 3);
  std::vector<float> dx(static_cast<size_t>(N * in)), dW(size_t(out * in), 0.0f);
  in_int8([&] {
    try {
      ops::linear_backward<float>(matrix(x.data(), N, in), matrix(W.data(), out, in), matrix(dy.data(), N, out),
                                  matrix(dx.data(), N, in), vector_view(dW.data(), out * in), {});
      ADD_FAILURE() << "linear_backward ran at int8";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
    }
  });
  // The same call in fp32 runs.
  EXPECT_NO_THROW(ops::linear_backward<float>(matrix(x.data(), N, in), matrix(W.data(), out, in),
                                              matrix(dy.data(), N, out), matrix(dx.data(), N, in),
                                              vector_view(dW.data(), out * in), {}));
}

// ---- a whole model --------------------------------------------------------------------------------

TEST_F(LinearInt8, ModelLogitsCloseToFp32AndTheModelDoesNotTrain) {
  // The tiny configuration at a width where quantisation has something to average over.
  ModelConfig c = test::tiny_model_config();
  c.vocab_size = 64;
  c.d_model = 64;
  c.n_heads = 4;
  c.d_ff = 256;
  c.n_layers = 2;
  c.max_len = 32;
  c.attention = {LayerAttention{"linformer", json{{"k", 8}}}};
  c.dropout_embedding = c.dropout_attention = c.dropout_ffn = 0;
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate();
  arena.initialize(5);
  const int64_t B = 2, n = 32, V = model.logits_per_row();
  std::vector<int32_t> tokens(static_cast<size_t>(B * n));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 3) % 64);
  const float* out32 = model.forward(tokens.data(), nullptr, B, n, false, 0, false);
  const std::vector<float> logits32(out32, out32 + B * n * V);
  std::vector<float> logits8;
  in_int8([&] {
    const float* out8 = model.forward(tokens.data(), nullptr, B, n, false, 0, false);
    logits8.assign(out8, out8 + B * n * V);
  });
  double diff = 0, norm = 0;
  int same_argmax = 0;
  for (int64_t r = 0; r < B * n; ++r) {
    int64_t a32 = 0, a8 = 0;
    for (int64_t v = 0; v < V; ++v) {
      const size_t at = size_t(r * V + v);
      diff += (logits8[at] - logits32[at]) * double(logits8[at] - logits32[at]);
      norm += double(logits32[at]) * logits32[at];
      if (logits32[at] > logits32[size_t(r * V + a32)]) a32 = v;
      if (logits8[at] > logits8[size_t(r * V + a8)]) a8 = v;
    }
    same_argmax += a32 == a8;
  }
  const double rel = std::sqrt(diff / norm);
  EXPECT_LT(rel, 0.05) << "relative error of the int8 logits";
  EXPECT_GT(rel, 0.0) << "the int8 logits equal fp32's: nothing was quantised";
  EXPECT_GE(same_argmax, int(0.9 * double(B * n))) << "positions whose most likely token differs from fp32's";
  RecordProperty("relative_error_x1e6", int(rel * 1e6));

  // Keeping activations for a backward is allowed; the backward is not.
  in_int8([&] {
    model.forward(tokens.data(), nullptr, B, n, false, 0, true);
    std::vector<float> dlogits(size_t(B * n * V), 1e-3f);
    EXPECT_THROW(model.backward(dlogits.data()), Error);
  });
}

TEST(Int8Trainer, StepIsRefusedBeforeAnyWork) {
  RuntimeOptions o;
  o.precision = Precision::int8;
  if (!precision_unsupported_reason(Precision::int8).empty()) {
    EXPECT_THROW(Trainer(test::tiny_model_config(), TrainOptions{}, o), Error);  // the scope refuses int8
    return;
  }
  TrainOptions opt;
  opt.batch_size = 2;
  opt.seq_len = 16;
  Trainer trainer(test::tiny_model_config(), opt, o);
  TokenBatch b;
  b.B = 2;
  b.n = 16;
  b.tokens.assign(32, 1);
  b.targets.assign(32, 1);
  try {
    trainer.step({b});
    ADD_FAILURE() << "Trainer::step ran at int8";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("`precision` int8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(trainer.steps_done(), 0);
}

TEST(Precision, Int8NamesAndTraining) {
  EXPECT_EQ(parse_precision("int8"), Precision::int8);
  EXPECT_STREQ(precision_name(Precision::int8), "int8");
  EXPECT_FALSE(precision_trains(Precision::int8));
  EXPECT_TRUE(precision_trains(Precision::fp32));
  EXPECT_TRUE(precision_trains(Precision::bf16));
  EXPECT_THROW(require_precision_trains(Precision::int8, "training"), InvalidArgument);
  EXPECT_NO_THROW(require_precision_trains(Precision::bf16, "training"));
  EXPECT_THROW(parse_precision("int4"), InvalidArgument);
}

}  // namespace
}  // namespace lf
