// The linear-attention ops (src/ops/linear_attention.h): each refuses a bad shape with lf::InvalidArgument,
// and the feature-map kernels (src/cpu/feature_maps.h) match their plain references in float and double at
// odd sizes, threaded or not. The core's kernel is tested against plain O(n²) sums in
// tests/attention/test_linear.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/feature_maps.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/linear_attention.h"
#include "test_util.h"

namespace lf {
namespace {
using test::max_rel_error;
using test::random_vector;
using test::tolerance;

// Keys (B, m, h, ·) with padding: one max per (batch, head) (span m) or, causal, one per key (span 1).
template <class T>
void check_key_features(int64_t B, int64_t m, int64_t h, int64_t dh, int64_t mf, int64_t span) {
  FavorKeyShape s{B, m, h, dh, mf, span};
  const std::vector<T> k = random_vector<T>(B * m * h * dh, 1), u = random_vector<T>(B * m * h * mf, 2, -3, 3);
  std::vector<uint8_t> mask(size_t(B * m), 0);
  mask[1] = mask[size_t(B * m - 1)] = 1;
  std::vector<T> phi(u.size()), phi_ref(u.size()), M(size_t(B * h * s.spans())), M_ref(M.size());
  favor_key_features<T>(s, k.data(), u.data(), mask.data(), T(0.3), phi.data(), M.data());
  favor_key_features_ref<T>(s, k.data(), u.data(), mask.data(), T(0.3), phi_ref.data(), M_ref.data());
  EXPECT_LE(max_rel_error(phi.data(), phi_ref.data(), int64_t(phi.size())), tolerance<T>()) << m << " " << span;
  EXPECT_LE(max_rel_error(M.data(), M_ref.data(), int64_t(M.size())), tolerance<T>());
  for (int64_t i = 0; i < h * mf; ++i) EXPECT_EQ(phi[size_t(h * mf + i)], T(0));  // key 1 is padding
}

template <class T>
void check_feature_kernels() {
  // Above the threading threshold (65536 elements) and below it, odd sizes.
  for (int64_t rows : {7, 4099}) {
    const int64_t mf = 17, n = rows * mf;
    const std::vector<T> u = random_vector<T>(n, 3, -4, 4), g = random_vector<T>(n, 4);
    std::vector<T> phi(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
    favor_query_features<T>(u.data(), phi.data(), rows, mf);
    favor_query_features_ref<T>(u.data(), ref.data(), rows, mf);
    EXPECT_LE(max_rel_error(phi.data(), ref.data(), n), tolerance<T>());

    const int64_t dh = 5;
    const std::vector<T> k = random_vector<T>(rows * dh, 5), dk0 = random_vector<T>(rows * dh, 6);
    std::vector<T> dk = dk0, dk_ref = dk0;
    favor_key_norm_backward<T>(k.data(), g.data(), T(0.7), rows, dh, mf, dk.data());
    favor_key_norm_backward_ref<T>(k.data(), g.data(), T(0.7), rows, dh, mf, dk_ref.data());
    EXPECT_LE(max_rel_error(dk.data(), dk_ref.data(), rows * dh), tolerance<T>());

    // The element-wise maps, against their definitions.
    std::vector<uint8_t> mask(size_t(rows), 0);
    mask[2] = 1;
    std::vector<T> y(static_cast<size_t>(n)), dx(static_cast<size_t>(n)), du(static_cast<size_t>(n));
    elu_plus_one_forward<T>(u.data(), mask.data(), y.data(), rows, mf);
    elu_plus_one_backward<T>(y.data(), g.data(), dx.data(), n);
    favor_features_backward<T>(phi.data(), g.data(), du.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double x = double(u[size_t(i)]);
      const double want = mask[size_t(i / mf)] ? 0.0 : x > 0 ? x + 1 : std::exp(x);
      EXPECT_NEAR(double(y[size_t(i)]), want, tolerance<T>() * std::max(1.0, want));
      EXPECT_EQ(dx[size_t(i)], g[size_t(i)] * std::min(y[size_t(i)], T(1)));
      EXPECT_EQ(du[size_t(i)], g[size_t(i)] * phi[size_t(i)]);
    }
  }
  check_key_features<T>(2, 13, 3, 5, 7, 13);  // non-causal: one max per (batch, head)
  check_key_features<T>(2, 13, 3, 5, 7, 1);   // causal: each key its own
  check_key_features<T>(2, 13, 3, 5, 7, 4);   // spans of 4
  check_key_features<T>(3, 700, 4, 8, 11, 1);  // threaded
}

TEST(LinearAttentionKernels, FeatureMapsMatchTheirReferencesInDouble) { check_feature_kernels<double>(); }
TEST(LinearAttentionKernels, FeatureMapsMatchTheirReferencesInFloat) { check_feature_kernels<float>(); }

TEST(Ops, LinearAttentionRefusesBadShapes) {
  const int64_t B = 2, n = 5, m = 6, h = 2, r = 3, dv = 4;
  std::vector<double> q(size_t(B * n * h * r)), k(size_t(B * m * h * r)), v(size_t(B * m * h * dv));
  std::vector<double> out(size_t(B * n * h * dv)), den(size_t(B * h * n)), shift(size_t(B * h * 2));
  const TensorView<double> Q(q.data(), {B, n, h, r}), K(k.data(), {B, m, h, r}), V(v.data(), {B, m, h, dv});
  const TensorView<double> O(out.data(), {B, n, h, dv}), D(den.data(), {B, h, n});
  ops::LinearAttentionOptions o;
  EXPECT_NO_THROW(ops::linear_attention_forward<double>(Q, K, V, {}, {}, o, O, D));
  // Values with another number of keys, out without heads, den of the wrong length.
  EXPECT_THROW(
      ops::linear_attention_forward<double>(Q, K, TensorView<double>(v.data(), {B, m - 1, h, dv}), {}, {}, o, O, D),
      InvalidArgument);
  EXPECT_THROW(
      ops::linear_attention_forward<double>(Q, K, V, {}, {}, o, TensorView<double>(out.data(), {B, n, h * dv}), D),
      InvalidArgument);
  EXPECT_THROW(ops::linear_attention_forward<double>(Q, K, V, {}, {}, o, O, TensorView<double>(den.data(), {B, h, 4})),
               InvalidArgument);
  // A key shift without causality; causal with n ≠ m.
  const TensorView<double> S(shift.data(), {B, h, 1});
  EXPECT_THROW(ops::linear_attention_forward<double>(Q, K, V, {}, S, o, O, D), InvalidArgument);
  o.causal = true;
  EXPECT_THROW(ops::linear_attention_forward<double>(Q, K, V, {}, {}, o, O, D), InvalidArgument);
  // A mask of the wrong length; a transposed dout.
  std::vector<uint8_t> mask(size_t(B * m), 0);
  o.causal = false;
  EXPECT_THROW(
      ops::linear_attention_forward<double>(Q, K, V, TensorView<const uint8_t>(mask.data(), {B, m - 1}), {}, o, O, D),
      InvalidArgument);
  std::vector<double> dq(q.size()), dk(k.size()), dvv(v.size()), dout(out.size());
  EXPECT_THROW(ops::linear_attention_backward<double>(
                   Q, K, V, {}, {}, o, O, D, TensorView<double>(dout.data(), {B, n, dv, h}).t(),
                   TensorView<double>(dq.data(), {B, n, h, r}), TensorView<double>(dk.data(), {B, m, h, r}),
                   TensorView<double>(dvv.data(), {B, m, h, dv})),
               InvalidArgument);
}

// linear_attention_decode: a state of the wrong shape, a scale without shifts (or the reverse), a
// non-causal call, and as many keys as queries.
TEST(Ops, LinearAttentionDecodeRefusesBadStates) {
  const int64_t B = 2, n = 3, h = 2, r = 3, dv = 4;
  std::vector<double> q(size_t(B * n * h * r)), k(q.size()), v(size_t(B * n * h * dv)), out(v.size());
  std::vector<double> den(size_t(B * h * n)), shift(den.size()), H(size_t(B * h * r * dv)), z(size_t(B * h * r));
  std::vector<double> R(size_t(B * h), -INFINITY);
  const TensorView<double> Q(q.data(), {B, n, h, r}), K(k.data(), {B, n, h, r}), V(v.data(), {B, n, h, dv});
  const TensorView<double> O(out.data(), {B, n, h, dv}), D(den.data(), {B, h, n}), S(shift.data(), {B, h, n});
  const TensorView<double> Hv(H.data(), {B, h, r, dv}), Z(z.data(), {B, h, r}), Rv(R.data(), {B, h});
  ops::LinearAttentionOptions o;
  o.causal = true;
  EXPECT_NO_THROW(ops::linear_attention_decode<double>(Q, K, V, {}, o, Hv, Z, {}, O, D));
  EXPECT_NO_THROW(ops::linear_attention_decode<double>(Q, K, V, S, o, Hv, Z, Rv, O, D));
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K, V, {}, o, TensorView<double>(H.data(), {B, h, dv, r}), Z, {},
                                                    O, D),
               InvalidArgument);
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K, V, S, o, Hv, Z, {}, O, D), InvalidArgument);
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K, V, {}, o, Hv, Z, Rv, O, D), InvalidArgument);
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K, V, S, o, Hv, Z, TensorView<double>(R.data(), {h, B - 1}), O, D),
               InvalidArgument);
  const TensorView<double> K2(k.data(), {B, n - 1, h, r}), V2(v.data(), {B, n - 1, h, dv});
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K2, V2, {}, o, Hv, Z, {}, O, D), InvalidArgument);
  o.causal = false;
  EXPECT_THROW(ops::linear_attention_decode<double>(Q, K, V, {}, o, Hv, Z, {}, O, D), InvalidArgument);
}

TEST(Ops, FeatureMapsRefuseBadShapes) {
  std::vector<float> x(60), y(60), k(30);
  std::vector<uint8_t> mask(12);
  const TensorView<float> X(x.data(), {2, 6, 5}), Y(y.data(), {2, 6, 5});
  EXPECT_NO_THROW(ops::elu_plus_one_forward<float>(X, TensorView<const uint8_t>(mask.data(), {2, 6}), Y));
  EXPECT_THROW(ops::elu_plus_one_forward<float>(X, TensorView<const uint8_t>(mask.data(), {2, 5}), Y), InvalidArgument);
  EXPECT_THROW(ops::elu_plus_one_forward<float>(X, {}, TensorView<float>(y.data(), {2, 5, 6})), InvalidArgument);
  EXPECT_THROW(ops::elu_plus_one_backward<float>(X, X, TensorView<float>(y.data(), {2, 5, 5})), InvalidArgument);
  EXPECT_THROW(ops::favor_query_features<float>(X, TensorView<float>(y.data(), {6, 2, 5}).t()), InvalidArgument);
  EXPECT_THROW(ops::favor_features_backward<float>(X, X, TensorView<float>(y.data(), {59})), InvalidArgument);
  // Keys (B, m, h, d_h) = (2, 3, 1, 5) with u of other keys; causal key_max not one per key.
  const TensorView<float> K(k.data(), {2, 3, 1, 5});
  ops::LinearAttentionOptions o;
  o.causal = true;
  o.chunk = 2;
  std::vector<float> u(12), kmax(6);
  const TensorView<float> U(u.data(), {2, 3, 1, 2});
  EXPECT_NO_THROW(ops::favor_key_features<float>(K, U, {}, 0.5, o, U, TensorView<float>(kmax.data(), {2, 1, 3})));
  EXPECT_THROW(ops::favor_key_features<float>(K, TensorView<float>(u.data(), {2, 2, 1, 3}), {}, 0.5, o, U,
                                              TensorView<float>(kmax.data(), {2, 1, 3})),
               InvalidArgument);
  EXPECT_THROW(ops::favor_key_features<float>(K, U, {}, 0.5, o, U, TensorView<float>(kmax.data(), {2, 1, 2})),
               InvalidArgument);
  EXPECT_THROW(
      ops::favor_key_norm_backward<float>(TensorView<float>(k.data(), {6, 5}), TensorView<float>(u.data(), {4, 3}), 0.5,
                                          TensorView<float>(x.data(), {6, 5})),
      InvalidArgument);
}

}  // namespace
}  // namespace lf
