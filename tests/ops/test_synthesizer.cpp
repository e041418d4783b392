// The ops of `synthesizer` (src/ops/synthesizer.h): each kernel matches its plain reference in double
// and float at odd sizes, on both sides of the row-parallel threshold (n² > 16384), causal or not, with
// padded keys (a causal first row that sees only padding gives zeros); each op refuses views that do
// not match with lf::InvalidArgument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/synthesizer.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/synthesizer.h"
#include "test_util.h"

namespace lf {
namespace {
using test::max_rel_error;
using test::random_vector;

// Padding at key 0 (so a causal row 0 sees none) and every fifth key.
std::vector<uint8_t> padding(int64_t n) {
  std::vector<uint8_t> mask(size_t(n), 0);
  for (int64_t j = 0; j < n; j += 5) mask[size_t(j)] = 1;
  return mask;
}

template <class T>
void check_softmax(int64_t n, bool causal, bool masked) {
  const double tol = test::tolerance<T>();
  const int64_t ld = n + 3;  // the scores: the top-left of a wider matrix, as R^i[:n, :n]
  const auto S = test::cast_vector<T>(random_vector(n * ld, 1, -4, 4));
  const auto bias = test::cast_vector<T>(random_vector(n, 2));
  const auto mask = padding(n);
  const TensorView<const uint8_t> key_mask = masked ? vector_view(mask.data(), n) : TensorView<const uint8_t>();
  std::vector<T> P(size_t(n * n)), P_ref(size_t(n * n));
  for (const T* b : {static_cast<const T*>(nullptr), bias.data()}) {
    ops::synthesizer_softmax<T>(matrix(S.data(), n, n, ld), b ? vector_view(b, n) : TensorView<const T>(), key_mask,
                                causal, matrix(P.data(), n, n));
    synthesizer_softmax_ref(S.data(), ld, b, key_mask.data(), causal, n, P_ref.data());
    EXPECT_LE(max_rel_error(P.data(), P_ref.data(), n * n), tol) << "bias " << (b != nullptr);
  }
  // In place (the dense mode's scores are written into P), with the bias.
  std::vector<T> Q(size_t(n * n));
  for (int64_t t = 0; t < n; ++t) std::copy_n(S.data() + t * ld, n, Q.data() + t * n);
  ops::synthesizer_softmax<T>(matrix(Q.data(), n, n), vector_view(bias.data(), n), key_mask, causal,
                              matrix(Q.data(), n, n));
  EXPECT_LE(max_rel_error(Q.data(), P_ref.data(), n * n), tol);
  if (masked && causal) {
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(P[size_t(j)], T(0)) << "row 0 sees only padding";
  }

  // The factorised scores S[t, j] = a[t, j / fb] · b[t, j mod fb], a and b columns of wider rows.
  const int64_t fb = 7, fa = (n + fb - 1) / fb, lda = fa + 2, ldb = fb + 1;
  const auto a = test::cast_vector<T>(random_vector(n * lda, 3, -2, 2));
  const auto c = test::cast_vector<T>(random_vector(n * ldb, 4, -2, 2));
  std::vector<T> F(size_t(n * n));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < n; ++j) F[size_t(t * n + j)] = a[size_t(t * lda + j / fb)] * c[size_t(t * ldb + j % fb)];
  ops::synthesizer_factorized_softmax<T>(matrix(a.data(), n, fa, lda), matrix(c.data(), n, fb, ldb), key_mask, causal,
                                         matrix(P.data(), n, n));
  synthesizer_softmax_ref<T>(F.data(), n, nullptr, key_mask.data(), causal, n, P_ref.data());
  EXPECT_LE(max_rel_error(P.data(), P_ref.data(), n * n), tol) << "factorised";

  // Backward from those probabilities.
  const auto dP = test::cast_vector<T>(random_vector(n * n, 5));
  std::vector<T> G = dP, G_ref = dP;
  ops::synthesizer_softmax_backward<T>(matrix<const T>(P.data(), n, n), causal, matrix(G.data(), n, n));
  synthesizer_softmax_backward_ref(P.data(), causal, n, G_ref.data());
  EXPECT_LE(max_rel_error(G.data(), G_ref.data(), n * n), tol) << "softmax backward";

  // The factors' gradients from G, into buffers laid out as a and b (their other columns untouched).
  std::vector<T> da(a.size(), T(9)), db(c.size(), T(9)), da_ref(a.size(), T(9)), db_ref(c.size(), T(9));
  ops::synthesizer_factors_backward<T>(matrix<const T>(G.data(), n, n), matrix(a.data(), n, fa, lda),
                                       matrix(c.data(), n, fb, ldb), causal, matrix(da.data(), n, fa, lda),
                                       matrix(db.data(), n, fb, ldb));
  synthesizer_factors_backward_ref(G.data(), a.data(), lda, fa, c.data(), ldb, fb, causal, n, da_ref.data(),
                                   db_ref.data());
  EXPECT_LE(max_rel_error(da.data(), da_ref.data(), int64_t(da.size())), 10 * tol) << "da";
  EXPECT_LE(max_rel_error(db.data(), db_ref.data(), int64_t(db.size())), 10 * tol) << "db";
}

template <class T>
void check_all_sizes() {
  for (int64_t n : {1, 37, 131})  // 131² > 16384: rows in parallel
    for (bool causal : {false, true})
      for (bool masked : {false, true}) {
        SCOPED_TRACE(testing::Message() << "n " << n << " causal " << causal << " masked " << masked);
        check_softmax<T>(n, causal, masked);
      }
}

TEST(OpsSynthesizer, KernelsMatchTheirReferencesInDouble) { check_all_sizes<double>(); }
TEST(OpsSynthesizer, KernelsMatchTheirReferencesInFloat) { check_all_sizes<float>(); }

TEST(OpsSynthesizer, RefusesBadShapes) {
  const int64_t n = 6;
  std::vector<float> S(64), P(64), a(64), b(64), da(64), db(64), bias(8);
  std::vector<uint8_t> mask(8);
  const auto probs = matrix(P.data(), n, n);
  const TensorView<const uint8_t> none;
  // Not square, not contiguous, scores of another shape, in place with another row stride.
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n), {}, none, false, matrix(P.data(), n, n + 1)),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n), {}, none, false, matrix(P.data(), n, n, 8)),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n - 1), {}, none, false, probs), InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(P.data(), n, n, 7), {}, none, false, matrix(P.data(), n, n)),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n).t(), {}, none, false, probs), InvalidArgument);
  // A bias or key mask of another length.
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n), vector_view(bias.data(), n + 1), none, false,
                                               probs),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax<float>(matrix(S.data(), n, n), {}, vector_view(mask.data(), n - 1), false,
                                               probs),
               InvalidArgument);
  // Factors with too few columns (2 · 2 < 6) or rows.
  EXPECT_THROW(ops::synthesizer_factorized_softmax<float>(matrix(a.data(), n, 2), matrix(b.data(), n, 2), none, false,
                                                          probs),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_factorized_softmax<float>(matrix(a.data(), n - 1, 3), matrix(b.data(), n, 2), none,
                                                          false, probs),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_softmax_backward<float>(matrix(S.data(), n, n), false, matrix(P.data(), n + 1, n + 1)),
               InvalidArgument);
  // Factor gradients of another shape, or rows another stride apart than the factors'.
  EXPECT_THROW(ops::synthesizer_factors_backward<float>(matrix(S.data(), n, n), matrix(a.data(), n, 3),
                                                        matrix(b.data(), n, 2), false, matrix(da.data(), n, 2),
                                                        matrix(db.data(), n, 2)),
               InvalidArgument);
  EXPECT_THROW(ops::synthesizer_factors_backward<float>(matrix(S.data(), n, n), matrix(a.data(), n, 3),
                                                        matrix(b.data(), n, 2), false, matrix(da.data(), n, 3, 4),
                                                        matrix(db.data(), n, 2)),
               InvalidArgument);
  EXPECT_NO_THROW(ops::synthesizer_factors_backward<float>(matrix(S.data(), n, n), matrix(a.data(), n, 3),
                                                           matrix(b.data(), n, 2), false, matrix(da.data(), n, 3),
                                                           matrix(db.data(), n, 2)));
}

}  // namespace
}  // namespace lf
