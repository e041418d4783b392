// The ops layer (src/ops/): views carry shape, strides and device; each op checks its views, refuses
// what its backend cannot take with lf::InvalidArgument, and gives exactly what its CPU kernel gives
// (the kernels are tested against their references in tests/cpu/).
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/linear.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/norm_act.h"
#include "ops/sequence.h"
#include "ops/softmax.h"
#include "test_util.h"

namespace lf {
namespace {
using test::max_rel_error;
using test::random_vector;

TEST(TensorView, ContiguousStridesTransposeAndNarrow) {
  std::vector<float> x(24);
  TensorView<float> v(x.data(), {2, 3, 4});
  EXPECT_EQ(v.rank(), 3);
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(-1), 1);
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.rows(), 6);
  EXPECT_TRUE(v.contiguous());
  EXPECT_TRUE(v.uniform_rows());
  EXPECT_EQ(TensorView<float>::dtype(), DType::F32);
  EXPECT_EQ(TensorView<const int32_t>::dtype(), DType::I32);

  const TensorView<float> t = v.t();
  EXPECT_EQ(t.shape_string(), "(2, 4, 3)");
  EXPECT_EQ(t.stride(-1), 4);
  EXPECT_FALSE(t.contiguous());
  EXPECT_FALSE(t.uniform_rows());

  // Columns 1..2 of every row: rows stay uniform (stride 4) but are not contiguous.
  const TensorView<float> cols = v.narrow(-1, 1, 2);
  EXPECT_EQ(cols.data(), x.data() + 1);
  EXPECT_TRUE(cols.uniform_rows());
  EXPECT_FALSE(cols.contiguous());
  EXPECT_EQ(cols.row_stride(), 4);
  // Rows 1..2 of each batch item: the gap between items breaks the uniform row stride.
  EXPECT_FALSE(v.narrow(1, 1, 2).uniform_rows());

  EXPECT_THROW(v.narrow(2, 3, 2), InvalidArgument);
  EXPECT_THROW(vector_view(x.data(), 24).t(), InvalidArgument);
  EXPECT_THROW(v.size(3), InvalidArgument);
  EXPECT_THROW((TensorView<float>(x.data(), {1, 2, 3, 4, 5})), InvalidArgument);
}

TEST(TensorView, BufferViewsRefuseMoreElementsThanHeld) {
  Buffer<double> b;
  b.resize(6);
  EXPECT_EQ(b.view({2, 3}).numel(), 6);
  EXPECT_EQ(b.view({2, 3}).device(), Device::CPU);
  EXPECT_THROW(b.view({2, 4}), InvalidArgument);
  const Buffer<double>& cb = b;
  EXPECT_EQ(cb.view({6}).data(), b.data());
  b.release();
  EXPECT_TRUE(b.empty());
}

// What the layers rely on: new elements are zeros, the same size keeps the allocation (a layer resizes
// every forward), assign fills, release frees.
TEST(TensorView, BufferResizesLikeTheVectorItWraps) {
  Buffer<float> b(4);
  EXPECT_EQ(b.size(), 4);
  std::vector<float> x(4);
  ops::copy<float>(b.view({4}), vector_view(x.data(), 4));
  EXPECT_EQ(x, std::vector<float>(4, 0.0f));
  ops::fill(b.view({4}), 2.0);
  const float* at = b.data();
  b.resize(4);
  EXPECT_EQ(b.data(), at);
  b.resize(6);  // the first 4 kept, 2 zeros added
  x.resize(6);
  ops::copy<float>(b.view({6}), vector_view(x.data(), 6));
  EXPECT_EQ(x, (std::vector<float>{2, 2, 2, 2, 0, 0}));
  b.assign(3, 5.0f);
  EXPECT_EQ(b.size(), 3);
  ops::copy<float>(b.view({3}), vector_view(x.data(), 3));
  EXPECT_EQ(x[2], 5.0f);
  b.release();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.data(), nullptr);
}

// A permutation of axes materialised and its gradient added back (conv_full's weight layout).
TEST(Ops, CopyStridedPermutesAxesAndAccumulates) {
  constexpr int64_t G = 2, O = 3, C = 2, W = 4;
  const auto w = random_vector<double>(G * O * C * W, 11);
  // wt (G, W, O, C)[i][t][o][c] = w (G, O, C, W)[i][o][c][t].
  const auto permuted = TensorView<const double>::strided(w.data(), {G, W, O, C}, {O * C * W, 1, C * W, W});
  std::vector<double> wt(G * W * O * C, -1.0);
  ops::copy_strided<double>(permuted, TensorView<double>(wt.data(), {G, W, O, C}));
  for (int64_t i = 0; i < G; ++i)
    for (int64_t t = 0; t < W; ++t)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t c = 0; c < C; ++c)
          EXPECT_EQ(wt[size_t(((i * W + t) * O + o) * C + c)], w[size_t(((i * O + o) * C + c) * W + t)]);
  std::vector<double> dw(w.size(), 0.5);
  ops::copy_strided<double>(TensorView<const double>(wt.data(), {G, W, O, C}),
                            TensorView<double>::strided(dw.data(), {G, W, O, C}, {O * C * W, 1, C * W, W}), true);
  for (size_t e = 0; e < w.size(); ++e) EXPECT_EQ(dw[e], 0.5 + w[e]);
  // Rank 2: a transpose.
  std::vector<double> t(6);
  ops::copy_strided<double>(matrix(w.data(), 2, 3).t(), matrix(t.data(), 3, 2));
  EXPECT_EQ(t[1], w[3]);
  EXPECT_THROW(ops::copy_strided<double>(matrix(w.data(), 2, 3), matrix(t.data(), 3, 2)), InvalidArgument);
  EXPECT_THROW(ops::copy_strided<double>(matrix(w.data(), 2, 3), vector_view(t.data(), 6)), InvalidArgument);
}

TEST(Ops, AllFiniteFindsNaNAndInf) {
  std::vector<float> x = {1, -2, 0, 3};
  EXPECT_TRUE(ops::all_finite<float>(vector_view(x.data(), 4)));
  EXPECT_TRUE(ops::all_finite<float>(vector_view(x.data(), 0)));
  x[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(ops::all_finite<float>(vector_view(x.data(), 4)));
  EXPECT_TRUE(ops::all_finite<float>(vector_view(x.data(), 2)));
  x[2] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(ops::all_finite<float>(matrix(x.data(), 2, 2)));
  EXPECT_THROW(ops::all_finite<float>(matrix(x.data(), 2, 2).t()), InvalidArgument);
}

// gemm_ref on explicit transposes and strides, the reference for every matmul layout below.
void expect_matmul_matches(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t pad) {
  const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  const auto A = random_vector<double>((ta ? K : M) * lda, 1), B = random_vector<double>((tb ? N : K) * ldb, 2);
  auto C = random_vector<double>(M * ldc, 3), C_ref = C;
  gemm_ref<double>(ta, tb, M, N, K, 0.5, A.data(), lda, B.data(), ldb, 2.0, C_ref.data(), ldc);
  const auto a = ta ? matrix(A.data(), K, M, lda).t() : matrix(A.data(), M, K, lda);
  const auto b = tb ? matrix(B.data(), N, K, ldb).t() : matrix(B.data(), K, N, ldb);
  ops::matmul(a, b, matrix(C.data(), M, N, ldc), 0.5, 2.0);
  EXPECT_LT(max_rel_error(C.data(), C_ref.data(), int64_t(C.size())), 1e-12) << "trans " << ta << tb << " pad " << pad;
}

TEST(Ops, MatmulReadsTransposedAndStridedViewsInPlace) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t pad : {0, 3}) expect_matmul_matches(ta, tb, 5, 7, 4, pad);
}

TEST(Ops, MatmulBatchesWithASharedOperand) {
  // c[i] (3 × 2) = a[i] (3 × 4) · w (4 × 2) for 5 items; w is rank 2, shared.
  const auto a = random_vector<double>(5 * 12, 4), w = random_vector<double>(8, 5);
  std::vector<double> c(5 * 6), c_ref(5 * 6);
  ops::matmul(matrices(a.data(), 5, 12, 3, 4), matrix(w.data(), 4, 2), matrices(c.data(), 5, 6, 3, 2));
  for (int i = 0; i < 5; ++i)
    gemm_ref<double>(false, false, 3, 2, 4, 1, a.data() + 12 * i, 4, w.data(), 2, 0, c_ref.data() + 6 * i, 2);
  EXPECT_LT(max_rel_error(c.data(), c_ref.data(), int64_t(c.size())), 1e-12);
}

TEST(Ops, MatmulRefusesMismatchedShapesAndATransposedOutput) {
  std::vector<float> a(12), b(12), c(16);
  EXPECT_THROW(ops::matmul(matrix(a.data(), 3, 4), matrix(b.data(), 3, 4), matrix(c.data(), 3, 4)), InvalidArgument);
  EXPECT_THROW(ops::matmul(matrix(a.data(), 4, 3).t(), matrix(b.data(), 4, 3), matrix(c.data(), 3, 3).t()),
               InvalidArgument);
  // A view whose last two strides are both > 1 has no BLAS layout.
  EXPECT_THROW(ops::matmul(TensorView<const float>::strided(a.data(), {2, 2}, {4, 2}), matrix(b.data(), 2, 2),
                           matrix(c.data(), 2, 2)),
               InvalidArgument);
}

TEST(Ops, LinearOnColumnsOfAWiderActivationMatchesTheKernel) {
  // x: columns 2..5 of a (6, 9) activation; y written into columns 1..3 of a (6, 5) one.
  const int64_t N = 6, in = 4, out = 3;
  const auto X = random_vector<double>(N * 9, 6), W = random_vector<double>(out * in, 7),
             bias = random_vector<double>(out, 8), dY = random_vector<double>(N * 5, 9);
  std::vector<double> Y(N * 5, 0.25), Y_ref = Y;
  ops::linear_forward(matrix(X.data() + 2, N, in, 9), matrix(W.data(), out, in), vector_view(bias.data(), out),
                      matrix(Y.data() + 1, N, out, 5));
  linear_forward(X.data() + 2, W.data(), bias.data(), Y_ref.data() + 1, N, in, out, 9, 5);
  EXPECT_EQ(Y, Y_ref);

  std::vector<double> dX(N * 9, 0.5), dW(out * in, 0.1), db(out, 0.2);
  auto dX_ref = dX, dW_ref = dW, db_ref = db;
  ops::linear_backward<double>(matrix(X.data() + 2, N, in, 9), matrix(W.data(), out, in), matrix(dY.data() + 1, N, out, 5),
                       matrix(dX.data() + 2, N, in, 9), vector_view(dW.data(), out * in), vector_view(db.data(), out),
                       /*accumulate_dx=*/true);
  linear_backward(X.data() + 2, W.data(), dY.data() + 1, dX_ref.data() + 2, dW_ref.data(), db_ref.data(), N, in, out,
                  true, 9, 5);
  EXPECT_EQ(dX, dX_ref);
  EXPECT_EQ(dW, dW_ref);
  EXPECT_EQ(db, db_ref);
  // Skipping dx and dW: only the bias gradient moves.
  ops::linear_backward<double>({}, matrix(W.data(), out, in), matrix(dY.data() + 1, N, out, 5), {}, {},
                               vector_view(db.data(), out));
  EXPECT_NE(db, db_ref);

  EXPECT_THROW(ops::linear_forward(matrix(X.data(), N, in, 9), matrix(W.data(), in, out), {}, matrix(Y.data(), N, out, 5)),
               InvalidArgument);
  EXPECT_THROW(ops::linear_forward(matrix(X.data(), N, in, 9), matrix(W.data(), out, in), vector_view(bias.data(), 2),
                                   matrix(Y.data(), N, out, 5)),
               InvalidArgument);
}

TEST(Ops, ElementwiseOpsOnStridedRows) {
  // Columns 1..3 of a (4, 5) buffer: the other columns must not change.
  std::vector<double> y(20, 7.0);
  const auto x = random_vector<double>(20, 10);
  const auto yv = matrix(y.data() + 1, 4, 3, 5);
  ops::fill(yv, 1.0);
  ops::axpby(2.0, matrix(x.data() + 1, 4, 3, 5), 0.5, yv);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 5; ++c) {
      const double want = c >= 1 && c <= 3 ? 0.5 + 2.0 * x[size_t(r * 5 + c)] : 7.0;
      EXPECT_DOUBLE_EQ(y[size_t(r * 5 + c)], want) << r << "," << c;
    }
  const std::vector<uint8_t> mask = {0, 1, 0, 1};
  ops::zero_masked_rows(vector_view(mask.data(), 4), yv);
  EXPECT_EQ(y[5 + 1], 0.0);
  EXPECT_EQ(y[5], 7.0);
  EXPECT_NE(y[1], 0.0);
  std::vector<double> z(12);
  ops::copy(yv, matrix(z.data(), 4, 3));
  EXPECT_EQ(z[0], y[1]);
  EXPECT_THROW(ops::copy(yv, matrix(z.data(), 3, 4)), InvalidArgument);
  EXPECT_THROW(ops::zero_masked_rows(vector_view(mask.data(), 3), yv), InvalidArgument);
}

TEST(Ops, ReluOnStridedRowsAndItsBackward) {
  // Columns 1..3 of (4, 5) buffers: max(x, 0) (NaN gives 0), and dy passed where y > 0.
  auto x = random_vector<double>(20, 11);
  x[6] = std::nan("");
  std::vector<double> y(20, 7.0), dx(20, 7.0);
  const auto dy = random_vector<double>(20, 12);
  ops::relu_forward<double>(matrix(x.data() + 1, 4, 3, 5), matrix(y.data() + 1, 4, 3, 5));
  ops::relu_backward<double>(matrix(y.data() + 1, 4, 3, 5), matrix(dy.data() + 1, 4, 3, 5),
                             matrix(dx.data() + 1, 4, 3, 5));
  for (int64_t e = 0; e < 20; ++e) {
    const bool in_view = e % 5 >= 1 && e % 5 <= 3;
    EXPECT_EQ(y[size_t(e)], in_view ? (x[size_t(e)] > 0 ? x[size_t(e)] : 0.0) : 7.0) << e;
    EXPECT_EQ(dx[size_t(e)], in_view ? (x[size_t(e)] > 0 ? dy[size_t(e)] : 0.0) : 7.0) << e;
  }
  // In place, as the kinds call them.
  std::vector<double> z = x, dz = dy;
  ops::relu_forward<double>(matrix(z.data(), 4, 5), matrix(z.data(), 4, 5));
  ops::relu_backward<double>(matrix(z.data(), 4, 5), matrix(dz.data(), 4, 5), matrix(dz.data(), 4, 5));
  for (int64_t e = 0; e < 20; ++e) EXPECT_EQ(dz[size_t(e)], x[size_t(e)] > 0 ? dy[size_t(e)] : 0.0) << e;
  EXPECT_THROW(ops::relu_forward<double>(matrix(x.data(), 4, 5), matrix(y.data(), 5, 4)), InvalidArgument);
  EXPECT_THROW(ops::relu_backward<double>(matrix(y.data(), 4, 5), matrix(dy.data(), 4, 5), matrix(dx.data(), 4, 4)),
               InvalidArgument);
  EXPECT_THROW(ops::relu_backward<double>(matrix(y.data(), 4, 5).t(), matrix(dy.data(), 5, 4), matrix(dx.data(), 5, 4)),
               InvalidArgument);
}

TEST(Ops, ElementwiseOpsOnLargeFlatAndStridedBlocksOnTwoThreads) {
  // Above the threading threshold: a flat vector (one row, split in chunks with a short tail) and a
  // strided block (split by rows) must give each element its plain value on two threads.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  const int64_t flat = 5 * 16384 + 123, rows = 300, cols = 257, ld = 260;
  for (const bool strided : {false, true}) {
    const int64_t r = strided ? rows : 1, c = strided ? cols : flat, l = strided ? ld : flat;
    const auto x = random_vector<float>(size_t(r * l), 21), y0 = random_vector<float>(size_t(r * l), 22);
    std::vector<float> y = y0, z(size_t(r * l), 9.0f), relu(size_t(r * l), 9.0f), drelu(size_t(r * l), 9.0f);
    const auto xv = matrix<const float>(x.data(), r, c, l);
    ops::axpby(2.0f, xv, 0.5f, matrix(y.data(), r, c, l));
    ops::copy(xv, matrix(z.data(), r, c, l));
    ops::relu_forward<float>(xv, matrix(relu.data(), r, c, l));
    ops::relu_backward<float>(matrix<const float>(relu.data(), r, c, l), matrix<const float>(y0.data(), r, c, l),
                              matrix(drelu.data(), r, c, l));
    int64_t wrong = 0;
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < l; ++j) {
        const size_t e = size_t(i * l + j);
        const bool in_view = j < c;
        wrong += y[e] != (in_view ? 0.5f * y0[e] + 2.0f * x[e] : y0[e]);
        wrong += z[e] != (in_view ? x[e] : 9.0f);
        wrong += relu[e] != (in_view ? std::max(x[e], 0.0f) : 9.0f);
        wrong += drelu[e] != (in_view ? (x[e] > 0 ? y0[e] : 0.0f) : 9.0f);
      }
    EXPECT_EQ(wrong, 0) << (strided ? "strided" : "flat");
    ops::fill(matrix(z.data(), r, c, l), 3.0f);
    EXPECT_EQ(std::count(z.begin(), z.end(), 3.0f), r * c);
  }
  omp_set_num_threads(saved);
}

TEST(Ops, RowAndElementOpsRefuseMismatchedViews) {
  std::vector<float> a(12), b(12), m(3), s(3);
  EXPECT_THROW(ops::softmax_forward(matrix(a.data(), 3, 4), matrix(b.data(), 4, 3)), InvalidArgument);
  EXPECT_THROW(ops::softmax_forward(matrix(a.data(), 3, 4), matrix(b.data(), 4, 3).t()), InvalidArgument);
  EXPECT_THROW(ops::gelu_forward(vector_view(a.data(), 12), vector_view(b.data(), 11)), InvalidArgument);
  EXPECT_THROW(ops::layernorm_forward(matrix(a.data(), 3, 4), vector_view(m.data(), 3), vector_view(s.data(), 3),
                                      matrix(b.data(), 3, 4), vector_view(m.data(), 3), vector_view(s.data(), 3)),
               InvalidArgument);
  const std::vector<int32_t> ids = {0, 1};
  EXPECT_THROW(ops::embedding_forward(vector_view(ids.data(), 2), matrix(a.data(), 4, 3), matrix(b.data(), 3, 3)),
               InvalidArgument);
  EXPECT_THROW(ops::cross_entropy_forward<float>(matrix(a.data(), 3, 4), vector_view(ids.data(), 2)), InvalidArgument);
}

}  // namespace
}  // namespace lf
