// The AFT cores (src/ops/aft.h, src/cpu/aft_*.cpp): each op's kernel against its plain reference in
// double and float, causal and not, with a padding mask, at odd sizes; bad shapes refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "attention/aft_decode.h"
#include "cpu/aft_conv.h"
#include "cpu/aft_decode.h"
#include "cpu/aft_position.h"
#include "cpu/aft_simple.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/aft.h"
#include "test_util.h"

namespace lf {
namespace {

struct Case {
  int64_t B, n, d;
};
const Case kCases[] = {{1, 1, 1}, {2, 5, 3}, {1, 7, 17}, {3, 11, 20}};

// Padding at every third position of the second sample onwards (the first keeps all its keys).
std::vector<uint8_t> some_padding(int64_t B, int64_t n) {
  std::vector<uint8_t> mask(static_cast<size_t>(B * n), 0);
  for (int64_t b = 1; b < B; ++b)
    for (int64_t t = 0; t < n; t += 3) mask[size_t(b * n + t)] = 1;
  return mask;
}

// Relative to the result's size, at least 1: a gradient that is 0 in exact arithmetic (one key) is
// rounding in the fast path.
template <class T>
void expect_close(const std::vector<T>& a, const std::vector<T>& ref, double tol, const char* what) {
  EXPECT_LE(test::max_rel_error(a.data(), ref.data(), int64_t(a.size()), 1.0), tol) << what;
}

template <class T>
TensorView<T> bnd(std::vector<T>& x, const Case& c) {
  return TensorView<T>(x.data(), {c.B, c.n, c.d});
}

template <class T>
void check_aft_simple(const Case& c, bool causal, bool masked, double tol) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " n=" << c.n << " d=" << c.d << " causal=" << causal
                                  << " masked=" << masked);
  const int64_t N = c.B * c.n * c.d, stats = (causal ? c.B * c.n : c.B) * c.d;
  const std::vector<T> q0 = test::random_vector<T>(N, 1, -3, 3), k = test::random_vector<T>(N, 2, -3, 3),
                       v = test::random_vector<T>(N, 3), d_o = test::random_vector<T>(N, 4);
  std::vector<uint8_t> mask = masked ? some_padding(c.B, c.n) : std::vector<uint8_t>();
  const TensorView<const uint8_t> mv =
      masked ? vector_view<const uint8_t>(mask.data(), c.B * c.n) : TensorView<const uint8_t>();
  std::vector<T> q = q0, kk = k, vv = v, o(N), r(stats), m(stats), s(stats), oref(N);
  ops::aft_simple_forward<T>(bnd(q, c), bnd(kk, c), bnd(vv, c), mv, bnd(o, c), vector_view(r.data(), stats),
                             vector_view(m.data(), stats), vector_view(s.data(), stats), causal);
  aft_simple_forward_ref(q0.data(), k.data(), v.data(), mask.empty() ? nullptr : mask.data(), oref.data(), c.B, c.n,
                         c.d, causal);
  expect_close(o, oref, tol, "o");

  std::vector<T> go = d_o, dq(N), dk(N), dv(N), dqr(N), dkr(N), dvr(N);
  ops::aft_simple_backward<T>(bnd(q, c), bnd(kk, c), bnd(vv, c), mv, vector_view(r.data(), stats),
                              vector_view(m.data(), stats), vector_view(s.data(), stats), bnd(go, c), bnd(dq, c),
                              bnd(dk, c), bnd(dv, c), causal);
  aft_simple_backward_ref(q0.data(), k.data(), v.data(), mask.empty() ? nullptr : mask.data(), d_o.data(), dqr.data(),
                          dkr.data(), dvr.data(), c.B, c.n, c.d, causal);
  expect_close(dq, dqr, tol, "dq");
  expect_close(dk, dkr, tol, "dk");
  expect_close(dv, dvr, tol, "dv");
}

TEST(OpsAft, SimpleMatchesReference) {
  for (const Case& c : kCases)
    for (bool causal : {false, true})
      for (bool masked : {false, true}) {
        check_aft_simple<double>(c, causal, masked, 1e-12);
        check_aft_simple<float>(c, causal, masked, 2e-5);
      }
}

// Decoding a sequence piece by piece (a prompt, single rows, a chunk) from the carried state gives the
// causal reference over the whole sequence, and the fast state update matches its plain reference.
template <class T>
void check_aft_simple_decode(const Case& c, double tol) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " n=" << c.n << " d=" << c.d);
  const int64_t N = c.B * c.n * c.d;
  const std::vector<T> q = test::random_vector<T>(N, 1, -3, 3), k = test::random_vector<T>(N, 2, -6, 6),
                       v = test::random_vector<T>(N, 3);
  std::vector<T> want(N);
  aft_simple_forward_ref(q.data(), k.data(), v.data(), nullptr, want.data(), c.B, c.n, c.d, true);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::vector<T> mx(size_t(c.B * c.d), neg_inf), sum(mx.size(), T(0)), num(mx.size(), T(0));
  std::vector<T> mx_r = mx, sum_r = sum, num_r = num;
  for (int64_t t = 0; t < c.n;) {
    const int64_t p = std::min<int64_t>(t == 0 ? 3 : t % 2 ? 1 : 4, c.n - t);
    // Rows [t, t + p) of each sample.
    auto rows = [&](const std::vector<T>& x) {
      std::vector<T> out;
      for (int64_t b = 0; b < c.B; ++b)
        out.insert(out.end(), x.begin() + (b * c.n + t) * c.d, x.begin() + (b * c.n + t + p) * c.d);
      return out;
    };
    std::vector<T> qp = rows(q), kp = rows(k), vp = rows(v), o(qp.size()), o_r(qp.size());
    const Case pc{c.B, p, c.d};
    ops::aft_simple_decode<T>(bnd(qp, pc), bnd(kp, pc), bnd(vp, pc), bnd(o, pc), TensorView<T>(mx.data(), {c.B, c.d}),
                              TensorView<T>(sum.data(), {c.B, c.d}), TensorView<T>(num.data(), {c.B, c.d}));
    aft_simple_decode_ref(qp.data(), kp.data(), vp.data(), o_r.data(), mx_r.data(), sum_r.data(), num_r.data(), c.B, p,
                          c.d);
    expect_close(o, rows(want), tol, "o against the whole sequence");
    expect_close(o_r, rows(want), tol, "the reference against the whole sequence");
    expect_close(sum, sum_r, tol, "sum");
    expect_close(num, num_r, tol, "num");
    ASSERT_EQ(mx, mx_r);  // a max: exact
    t += p;
  }
}

TEST(OpsAft, SimpleDecodeMatchesTheWholeSequence) {
  for (const Case& c : kCases) {
    check_aft_simple_decode<double>(c, 1e-12);
    check_aft_simple_decode<float>(c, 2e-5);
  }
}

TEST(OpsAft, SimpleDecodeRefusesABadState) {
  const Case c{2, 3, 4};
  std::vector<float> x(24), y(24), st(8), small(6);
  const TensorView<float> S(st.data(), {2, 4});
  EXPECT_NO_THROW(ops::aft_simple_decode<float>(bnd(x, c), bnd(x, c), bnd(x, c), bnd(y, c), S, S, S));
  EXPECT_THROW(ops::aft_simple_decode<float>(bnd(x, c), bnd(x, c), bnd(x, c), bnd(y, c), S, S,
                                             TensorView<float>(small.data(), {2, 3})),
               InvalidArgument);
  EXPECT_THROW(ops::aft_simple_decode<float>(bnd(x, c), TensorView<float>(y.data(), {2, 4, 3}), bnd(x, c), bnd(y, c), S,
                                             S, S),
               InvalidArgument);
}

// ---- decoding the position-biased kinds (ops::aft_window_decode) -----------------------------------

// How a decoding test feeds the bias: aft_full's KV cache (dense rows), aft_local's window with a dense
// (factored) or band (stored) bias, aft_conv's window with one band per head for every row.
enum class DecodeForm { kKvCache, kWindowDense, kWindowBand, kConv };

// Decodes (B, n, d) piece by piece (a prompt of 3, single rows, a piece of 4, ...) through the state
// class the kinds use, and compares every piece with the whole sequence's reference (aft_position_forward_ref
// with the effective bias, or aft_conv_forward_ref) and with the op's own plain reference.
template <class T>
void check_window_decode(DecodeForm form, int64_t window, double tol) {
  const int64_t B = 2, n = 13, d = 6, h = form == DecodeForm::kConv ? 3 : 1, dk = form == DecodeForm::kConv ? h : d;
  SCOPED_TRACE(testing::Message() << "form " << int(form) << " window " << window);
  const std::vector<T> q = test::random_vector<T>(B * n * d, 1, -3, 3), k = test::random_vector<T>(B * n * dk, 2, -4, 4),
                       v = test::random_vector<T>(B * n * d, 3), w = test::random_vector<T>(n * n, 4, -2, 2),
                       what = test::random_vector<T>(h * window, 5, -2, 2);
  std::vector<T> want(size_t(B * n * d));
  if (form == DecodeForm::kConv) {
    std::vector<T> omega(what.size());
    for (size_t i = 0; i < what.size(); ++i) omega[i] = T(std::exp(double(what[i])));
    aft_conv_forward_ref(q.data(), k.data(), v.data(), nullptr, omega.data(), want.data(), B, n, d, h, window, true);
  } else {
    std::vector<T> eff(w.size(), T(0));  // aft_local: the bias inside the window, 0 outside
    for (int64_t t = 0; t < n; ++t)
      for (int64_t u = 0; u <= t; ++u)
        if (form == DecodeForm::kKvCache || t - u < window) eff[size_t(t * n + u)] = w[size_t(t * n + u)];
    aft_position_forward_ref(q.data(), k.data(), v.data(), nullptr, eff.data(), want.data(), B, n, d, true);
  }
  AftDecodeState<T> state(B, dk, d, form == DecodeForm::kKvCache ? 0 : window), ref_state = state;
  for (int64_t t = 0; t < n;) {
    const int64_t p = std::min<int64_t>(t == 0 ? 3 : t % 3 ? 1 : 4, n - t), P = t + p;
    auto rows = [&](const std::vector<T>& x, int64_t width) {
      std::vector<T> out;
      for (int64_t b = 0; b < B; ++b)
        out.insert(out.end(), x.begin() + (b * n + t) * width, x.begin() + (b * n + P) * width);
      return out;
    };
    const std::vector<T> qp = rows(q, d), kp = rows(k, dk), vp = rows(v, d), wantp = rows(want, d);
    std::vector<T> bias;
    int64_t L = 0;
    bool band = false;
    TensorView<const T> bv;
    for (AftDecodeState<T>* st : {&state, &ref_state}) st->append(kp.data(), vp.data(), p);
    L = state.L;
    if (form == DecodeForm::kConv) {
      bv = TensorView<const T>(what.data(), {1, h, window});
      band = true;
    } else if (form == DecodeForm::kWindowBand) {  // tap j: the key t − (window − 1) + j
      for (int64_t i = t; i < P; ++i)
        for (int64_t j = 0; j < window; ++j) {
          const int64_t u = i - (window - 1) + j;
          bias.push_back(u >= 0 ? w[size_t(i * n + u)] : T(0));
        }
      bv = TensorView<const T>(bias.data(), {p, 1, window});
      band = true;
    } else {  // dense: rows t .. P − 1 against the cached keys' positions P − L .. P − 1
      for (int64_t i = t; i < P; ++i)
        for (int64_t u = P - L; u < P; ++u) bias.push_back(w[size_t(i * n + u)]);
      bv = TensorView<const T>(bias.data(), {p, L});
    }
    const int64_t win = form == DecodeForm::kKvCache ? L : window;
    std::vector<T> o(qp.size()), o_ref(qp.size());
    ops::aft_window_decode<T>(TensorView<const T>(qp.data(), {B, p, d}), state.K(), state.V(), L, win, bv, band,
                              state.mx(), state.sum(), state.num(), TensorView<T>(o.data(), {B, p, d}));
    const auto K = ref_state.K();
    AftDecodeShape s{B, p, L, K.size(1), d, dk, win};
    AftDecodeBias<T> b{bv.data(), band ? (bv.size(0) == 1 ? 0 : bv.stride(0)) : bv.stride(0), band ? bv.size(1) : 1,
                       band};
    aft_window_decode_ref<T>(s, qp.data(), K.data(), ref_state.V().data(), b, ref_state.mx().data(),
                             ref_state.sum().data(), ref_state.num().data(), o_ref.data());
    expect_close(o, wantp, tol, "o against the whole sequence");
    expect_close(o_ref, wantp, tol, "the reference against the whole sequence");
    for (AftDecodeState<T>* st : {&state, &ref_state}) st->finish(p);
    t = P;
  }
}

TEST(OpsAft, WindowDecodeMatchesTheWholeSequence) {
  for (int64_t window : {1, 2, 5, 20}) {
    for (DecodeForm form : {DecodeForm::kWindowDense, DecodeForm::kWindowBand, DecodeForm::kConv}) {
      check_window_decode<double>(form, window, 1e-12);
      check_window_decode<float>(form, window, 2e-5);
    }
  }
  check_window_decode<double>(DecodeForm::kKvCache, 1, 1e-12);
  check_window_decode<float>(DecodeForm::kKvCache, 1, 2e-5);
}

TEST(OpsAft, WindowDecodeRefusesBadShapes) {
  const int64_t B = 2, n = 3, d = 4, L = 5;
  std::vector<float> q(size_t(B * n * d)), kv(size_t(B * L * d)), o(q.size()), bias(size_t(n * L)), st(size_t(B * d));
  const TensorView<const float> Q(q.data(), {B, n, d}), K(kv.data(), {B, L, d}), W(bias.data(), {n, L});
  const TensorView<float> O(o.data(), {B, n, d}), S(st.data(), {B, d}), none;
  EXPECT_NO_THROW(ops::aft_window_decode<float>(Q, K, K, L, L, W, false, none, none, none, O));
  EXPECT_NO_THROW(ops::aft_window_decode<float>(Q, K, K, L, 2, W, false, S, S, S, O));
  // A window short of the cache without a prefix state; fewer cached rows than new ones; a dense bias of
  // other columns; a band of another window; K of a width that does not divide d.
  EXPECT_THROW(ops::aft_window_decode<float>(Q, K, K, L, 2, W, false, none, none, none, O), InvalidArgument);
  EXPECT_THROW(ops::aft_window_decode<float>(Q, K, K, 2, 2, W, false, S, S, S, O), InvalidArgument);
  EXPECT_THROW(ops::aft_window_decode<float>(Q, K, K, L, 2, TensorView<const float>(bias.data(), {n, L - 1}), false, S,
                                             S, S, O),
               InvalidArgument);
  EXPECT_THROW(ops::aft_window_decode<float>(Q, K, K, L, 2, TensorView<const float>(bias.data(), {n, 1, 3}), true, S, S,
                                             S, O),
               InvalidArgument);
  EXPECT_THROW(ops::aft_window_decode<float>(Q, TensorView<const float>(kv.data(), {B, L, 3}), K, L, L, W, false, none,
                                             none, none, O),
               InvalidArgument);
}

TEST(OpsAft, SimpleRefusesBadShapes) {
  const Case c{2, 3, 4};
  std::vector<float> x(24), y(24), small(12);
  std::vector<uint8_t> mask(5);
  const TensorView<float> none;
  // k of another shape; a mask of the wrong length; statistics of the causal size for a global call.
  EXPECT_THROW(ops::aft_simple_forward<float>(bnd(x, c), TensorView<float>(small.data(), {2, 3, 2}), bnd(x, c), {},
                                              bnd(y, c), none, none, none, false),
               InvalidArgument);
  EXPECT_THROW(
      ops::aft_simple_forward<float>(bnd(x, c), bnd(x, c), bnd(x, c), vector_view<const uint8_t>(mask.data(), 5),
                                     bnd(y, c), none, none, none, false),
      InvalidArgument);
  EXPECT_THROW(ops::aft_simple_forward<float>(bnd(x, c), bnd(x, c), bnd(x, c), {}, bnd(y, c), vector_view(y.data(), 24),
                                              vector_view(y.data(), 24), vector_view(y.data(), 24), false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_simple_backward<float>(bnd(x, c), bnd(x, c), bnd(x, c), {}, none, none, none, bnd(x, c),
                                               bnd(y, c), bnd(y, c), bnd(y, c), true),
               InvalidArgument);
}

struct ConvCase {
  int64_t B, n, h, dh, s;
};

template <class T>
void check_aft_conv(const ConvCase& c, bool causal, bool masked, double tol) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " n=" << c.n << " h=" << c.h << " d_h=" << c.dh << " s=" << c.s
                                  << " causal=" << causal << " masked=" << masked);
  const int64_t d = c.h * c.dh, N = c.B * c.n * d, NK = c.B * c.n * c.h;
  const std::vector<T> q0 = test::random_vector<T>(N, 1, -3, 3), k = test::random_vector<T>(NK, 2, -3, 3),
                       v = test::random_vector<T>(N, 3), d_o = test::random_vector<T>(N, 4),
                       omega = test::random_vector<T>(c.h * c.s, 5, 0.2, 3);
  std::vector<uint8_t> mask = masked ? some_padding(c.B, c.n) : std::vector<uint8_t>();
  const uint8_t* mp = mask.empty() ? nullptr : mask.data();
  const TensorView<const uint8_t> mv = masked ? vector_view<const uint8_t>(mp, c.B * c.n) : TensorView<const uint8_t>();
  auto act = [&](std::vector<T>& x, int64_t w) { return TensorView<T>(x.data(), {c.B, c.n, w}); };
  auto per_head = [&](std::vector<T>& x) { return TensorView<T>(x.data(), {c.B, c.h, c.n}); };
  std::vector<T> q = q0, kk = k, vv = v, om = omega, o(N), r(N), den(c.B * c.h * c.n), m(den.size()), oref(N);
  ops::aft_conv_forward<T>(act(q, d), act(kk, c.h), act(vv, d), mv, matrix(om.data(), c.h, c.s), act(o, d), act(r, d),
                           per_head(den), per_head(m), causal);
  aft_conv_forward_ref(q0.data(), k.data(), v.data(), mp, omega.data(), oref.data(), c.B, c.n, d, c.h, c.s, causal);
  expect_close(o, oref, tol, "o");

  std::vector<T> go = d_o, dq(N), dk(NK), dv(N), dqr(N), dkr(NK), dvr(N);
  std::vector<double> dw(size_t(c.h * c.s)), dwr(dw.size());
  ops::aft_conv_backward<T>(act(q, d), act(kk, c.h), act(vv, d), mv, matrix(om.data(), c.h, c.s), act(r, d),
                            per_head(den), per_head(m), act(go, d), act(dq, d), act(dk, c.h), act(dv, d),
                            matrix(dw.data(), c.h, c.s), causal);
  aft_conv_backward_ref(q0.data(), k.data(), v.data(), mp, omega.data(), d_o.data(), dqr.data(), dkr.data(), dvr.data(),
                        dwr.data(), c.B, c.n, d, c.h, c.s, causal);
  expect_close(dq, dqr, tol, "dq");
  expect_close(dk, dkr, tol, "dk");
  expect_close(dv, dvr, tol, "dv");
  expect_close(dw, dwr, tol, "dwhat");
}

TEST(OpsAft, ConvMatchesReference) {
  const ConvCase cases[] = {{1, 1, 1, 1, 1}, {2, 5, 1, 3, 3}, {1, 9, 3, 2, 5}, {3, 13, 2, 5, 7}, {2, 4, 2, 3, 9}};
  for (const ConvCase& c : cases)
    for (bool causal : {false, true})
      for (bool masked : {false, true}) {
        check_aft_conv<double>(c, causal, masked, 1e-12);
        check_aft_conv<float>(c, causal, masked, 2e-5);
      }
}

// The kernel's normalisation against its formula, and its backward against central differences of
// Σ dwhat ⊙ ŵ(w, γ, β).
TEST(OpsAft, ConvKernelNormalisation) {
  const int64_t h = 2, s = 5;
  std::vector<double> w = test::random_vector<double>(h * s, 1), gamma = {0.7, -1.3}, beta = {0.2, 0.5};
  const std::vector<double> dwhat = test::random_vector<double>(h * s, 2);
  auto what = [&](std::vector<double>& z, std::vector<double>& omega, std::vector<double>& inv_std) {
    ops::aft_conv_kernel_forward<double>(matrix(w.data(), h, s), vector_view(gamma.data(), h),
                                         vector_view(beta.data(), h), matrix(omega.data(), h, s),
                                         matrix(z.data(), h, s), vector_view(inv_std.data(), h), 1e-5);
  };
  std::vector<double> z(size_t(h * s)), omega(z.size()), inv_std(static_cast<size_t>(h));
  what(z, omega, inv_std);
  for (int64_t i = 0; i < h; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < s; ++j) mean += w[size_t(i * s + j)] / double(s);
    for (int64_t j = 0; j < s; ++j) var += (w[size_t(i * s + j)] - mean) * (w[size_t(i * s + j)] - mean) / double(s);
    for (int64_t j = 0; j < s; ++j)
      EXPECT_NEAR(omega[size_t(i * s + j)],
                  std::exp(gamma[size_t(i)] * (w[size_t(i * s + j)] - mean) / std::sqrt(var + 1e-5) + beta[size_t(i)]),
                  1e-12);
  }
  std::vector<double> dw(w.size(), 0.0), dg(size_t(h), 0.0), db(size_t(h), 0.0);
  ops::aft_conv_kernel_backward<double>(vector_view(gamma.data(), h), matrix<const double>(z.data(), h, s),
                                        vector_view<const double>(inv_std.data(), h),
                                        matrix<const double>(dwhat.data(), h, s), matrix(dw.data(), h, s),
                                        vector_view(dg.data(), h), vector_view(db.data(), h));
  auto loss = [&] {
    std::vector<double> z2(z.size()), om2(z.size()), is2(static_cast<size_t>(h));
    what(z2, om2, is2);
    double sum = 0;
    for (size_t e = 0; e < z2.size(); ++e) sum += dwhat[e] * std::log(om2[e]);  // log ω = ŵ
    return sum;
  };
  test::expect_gradient_matches(loss, w.data(), h * s, dw.data(), "dw");
  test::expect_gradient_matches(loss, gamma.data(), h, dg.data(), "dgamma");
  test::expect_gradient_matches(loss, beta.data(), h, db.data(), "dbeta");
}

TEST(OpsAft, ConvRefusesBadShapes) {
  std::vector<float> x(24), y(24), kk(12), om(6), den(12), m(12);
  const TensorView<float> q(x.data(), {2, 3, 4}), o(y.data(), {2, 3, 4});
  // 3 heads do not divide d = 4; K with the wrong number of heads; den of the wrong shape.
  EXPECT_THROW(ops::aft_conv_forward<float>(q, TensorView<float>(kk.data(), {2, 3, 2}), q, {}, matrix(om.data(), 3, 2),
                                            o, {}, TensorView<float>(den.data(), {2, 3, 2}),
                                            TensorView<float>(m.data(), {2, 3, 2}), false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_conv_forward<float>(q, TensorView<float>(kk.data(), {2, 3, 2}), q, {}, matrix(om.data(), 1, 6),
                                            o, {}, TensorView<float>(den.data(), {2, 1, 3}),
                                            TensorView<float>(m.data(), {2, 1, 3}), false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_conv_forward<float>(q, TensorView<float>(kk.data(), {2, 3, 2}), q, {}, matrix(om.data(), 2, 3),
                                            o, {}, TensorView<float>(den.data(), {2, 3, 2}),
                                            TensorView<float>(m.data(), {2, 2, 3}), false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_conv_kernel_forward<float>(matrix(om.data(), 2, 3), vector_view(kk.data(), 3),
                                                   vector_view(kk.data(), 2), matrix(om.data(), 2, 3),
                                                   TensorView<double>(), TensorView<double>(), 1e-5),
               InvalidArgument);
}

// ---- AFT-full and AFT-local: the ops against the plain reference on the effective bias w̃ (n × n),
// factored and stored bias, odd row blocks; the exact path where the shift underflows. ----

struct PositionCase {
  int64_t B, n, d, max_len, rank, window, row_block;  // window 0: aft_full
};
const PositionCase kPositionCases[] = {{1, 1, 1, 1, 0, 0, 1},    {2, 5, 3, 7, 0, 0, 2},    {1, 7, 17, 9, 3, 0, 3},
                               {3, 11, 20, 13, 2, 0, 4}, {1, 1, 1, 1, 0, 1, 1},    {2, 5, 3, 7, 0, 2, 2},
                               {1, 7, 17, 9, 3, 3, 3},   {3, 11, 20, 13, 2, 4, 4}, {2, 9, 5, 9, 0, 9, 16}};

// The bias of one case in its stored form: U, V (max_len × rank), or w (max_len × max_len) for
// aft_full, its band (max_len × W) for aft_local; and what it means for the length n.
template <class T>
struct Bias {
  Bias(const PositionCase& c, bool causal, double spread)
      : c_(c),
        W(c.window == 0 ? c.max_len
          : causal      ? c.window
                        : 2 * c.window - 1) {
    if (c.rank > 0) {
      const double f = std::sqrt(spread / double(c.rank));  // entries of U Vᵀ within ±spread
      u = test::random_vector<T>(c.max_len * c.rank, 11, -f, f);
      v = test::random_vector<T>(c.max_len * c.rank, 12, -f, f);
    } else {
      w = test::random_vector<T>(c.max_len * W, 13, -spread, spread);
    }
  }
  // The band column of key u in row t, or −1 outside aft_local's window (aft_full: u itself).
  int64_t column(int64_t t, int64_t u) const {
    if (c_.window == 0) return u;
    const int64_t j = u - t + c_.window - 1;
    return std::llabs(u - t) < c_.window && j < W ? j : -1;
  }
  // w̃ (n × n): the bias where it applies, 0 elsewhere.
  std::vector<T> effective() const {
    std::vector<T> wt(size_t(c_.n * c_.n), T(0));
    for (int64_t t = 0; t < c_.n; ++t)
      for (int64_t key = 0; key < c_.n; ++key) {
        const int64_t j = column(t, key);
        if (j < 0) continue;
        if (c_.rank == 0) {
          wt[size_t(t * c_.n + key)] = w[size_t(t * W + j)];
          continue;
        }
        double s = 0;
        for (int64_t e = 0; e < c_.rank; ++e)
          s += double(u[size_t(t * c_.rank + e)]) * double(v[size_t(key * c_.rank + e)]);
        wt[size_t(t * c_.n + key)] = T(s);
      }
    return wt;
  }
  // dw̃ (n × n) mapped to the stored form: gu, gv or gw.
  void gradients(const std::vector<T>& dwt, std::vector<T>& gu, std::vector<T>& gv, std::vector<T>& gw) const {
    gu.assign(u.size(), T(0));
    gv.assign(v.size(), T(0));
    gw.assign(w.size(), T(0));
    for (int64_t t = 0; t < c_.n; ++t)
      for (int64_t k = 0; k < c_.n; ++k) {
        const int64_t j = column(t, k);
        if (j < 0) continue;
        const double g = double(dwt[size_t(t * c_.n + k)]);
        if (c_.rank == 0) {
          gw[size_t(t * W + j)] = T(g);
          continue;
        }
        for (int64_t e = 0; e < c_.rank; ++e) {
          gu[size_t(t * c_.rank + e)] += T(g * double(v[size_t(k * c_.rank + e)]));
          gv[size_t(k * c_.rank + e)] += T(g * double(u[size_t(t * c_.rank + e)]));
        }
      }
  }
  TensorView<T> view(std::vector<T>& x, int64_t cols) const {
    return x.empty() ? TensorView<T>() : matrix(x.data(), c_.max_len, cols);
  }

  const PositionCase& c_;
  int64_t W;
  std::vector<T> u, v, w;
};

// Returns how many elements took the exact path (a shifted denominator below 4·n·min/ε).
template <class T>
int64_t check_position(const PositionCase& c, bool causal, bool masked, double spread, double tol) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " n=" << c.n << " d=" << c.d << " L=" << c.max_len
                                  << " rank=" << c.rank << " window=" << c.window << " R=" << c.row_block
                                  << " causal=" << causal << " masked=" << masked << " spread=" << spread);
  const int64_t N = c.B * c.n * c.d;
  const std::vector<T> q0 = test::random_vector<T>(N, 1, -3, 3), k = test::random_vector<T>(N, 2, -spread, spread),
                       v = test::random_vector<T>(N, 3), d_y = test::random_vector<T>(N, 4);
  std::vector<uint8_t> mask = masked ? some_padding(c.B, c.n) : std::vector<uint8_t>();
  const uint8_t* mp = mask.empty() ? nullptr : mask.data();
  const TensorView<const uint8_t> mv = masked ? vector_view<const uint8_t>(mp, c.B * c.n) : TensorView<const uint8_t>();
  Bias<T> bias(c, causal, spread);
  const std::vector<T> wt = bias.effective();
  auto act = [&](std::vector<T>& x) { return TensorView<T>(x.data(), {c.B, c.n, c.d}); };
  const bool full = c.window == 0;
  const int64_t rank = c.rank;

  std::vector<T> q = q0, kk = k, vv = v, o(N), a(N), den(N), state(full ? 2 * N : N), oref(N);
  const TensorView<T> st = full ? TensorView<T>(state.data(), {c.n, c.B, 2 * c.d}) : act(state);
  if (full)
    ops::aft_full_forward<T>(act(q), act(kk), act(vv), mv, bias.view(bias.u, rank), bias.view(bias.v, rank),
                             bias.view(bias.w, bias.W), act(o), act(a), act(den), st, c.row_block, causal);
  else
    ops::aft_local_forward<T>(act(q), act(kk), act(vv), mv, bias.view(bias.u, rank), bias.view(bias.v, rank),
                              bias.view(bias.w, bias.W), act(o), act(a), act(den), st, c.window, c.row_block, causal);
  aft_position_forward_ref(q0.data(), k.data(), v.data(), mp, wt.data(), oref.data(), c.B, c.n, c.d, causal);
  expect_close(o, oref, tol, "o");

  std::vector<T> dy = d_y, dq(N), dk(N), dv(N), dqr(N), dkr(N), dvr(N), dwt(size_t(c.n * c.n));
  std::vector<T> gu(bias.u.size(), T(0)), gv(bias.v.size(), T(0)), gw(bias.w.size(), T(0)), gur, gvr, gwr;
  if (full)
    ops::aft_full_backward<T>(act(q), act(kk), act(vv), mv, bias.view(bias.u, rank), bias.view(bias.v, rank),
                              bias.view(bias.w, bias.W), act(a), act(den), st, act(dy), act(dq), act(dk), act(dv),
                              bias.view(gu, rank), bias.view(gv, rank), bias.view(gw, bias.W), c.row_block, causal);
  else
    ops::aft_local_backward<T>(act(q), act(kk), act(vv), mv, bias.view(bias.u, rank), bias.view(bias.v, rank),
                               bias.view(bias.w, bias.W), act(a), act(den), st, act(dy), act(dq), act(dk), act(dv),
                               bias.view(gu, rank), bias.view(gv, rank), bias.view(gw, bias.W), c.window, c.row_block,
                               causal);
  aft_position_backward_ref(q0.data(), k.data(), v.data(), mp, wt.data(), d_y.data(), dqr.data(), dkr.data(),
                            dvr.data(), dwt.data(), c.B, c.n, c.d, causal);
  bias.gradients(dwt, gur, gvr, gwr);
  expect_close(dq, dqr, tol, "dq");
  expect_close(dk, dkr, tol, "dk");
  expect_close(dv, dvr, tol, "dv");
  expect_close(gu, gur, tol, "grad_u");
  expect_close(gv, gvr, tol, "grad_v");
  expect_close(gw, gwr, tol, "grad_w");
  const double floor =
      4.0 * double(c.n) * double(std::numeric_limits<T>::min()) / double(std::numeric_limits<T>::epsilon());
  return std::count_if(den.begin(), den.end(), [&](T x) { return !(double(x) >= floor); });
}

TEST(OpsAftPosition, MatchesReference) {
  for (const PositionCase& c : kPositionCases)
    for (bool causal : {false, true})
      for (bool masked : {false, true}) {
        check_position<double>(c, causal, masked, 3, 1e-12);
        check_position<float>(c, causal, masked, 3, 2e-5);
      }
}

// Keys and biases far apart (their maxima on different keys by more than float's exponent range):
// the denominators underflow and the exact path takes over.
TEST(OpsAftPosition, MatchesReferenceWhereTheShiftUnderflows) {
  int64_t exact_double = 0, exact_float = 0;
  for (const PositionCase& c : kPositionCases)
    for (bool causal : {false, true}) {
      exact_double += check_position<double>(c, causal, true, 400, 1e-12);
      exact_float += check_position<float>(c, causal, true, 60, 2e-5);
    }
  EXPECT_GT(exact_double, 0);
  EXPECT_GT(exact_float, 0);
}

TEST(OpsAftPosition, RefusesBadShapes) {
  const int64_t B = 2, n = 3, d = 4, L = 5;
  std::vector<float> x(24), y(24), small(12), keys(48), u(10), w(25), band(15);
  const TensorView<float> q(x.data(), {B, n, d}), o(y.data(), {B, n, d}), kt(keys.data(), {n, B, 2 * d});
  const TensorView<float> uv = matrix(u.data(), L, 2), wv = matrix(w.data(), L, L), none;
  // k of another shape; both bias forms; neither; the key table of the wrong shape; a zero row block;
  // a bias shorter than n.
  EXPECT_THROW(ops::aft_full_forward<float>(q, TensorView<float>(small.data(), {2, 3, 2}), q, {}, none, none, wv, o, o,
                                            o, kt, 4, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, uv, uv, wv, o, o, o, kt, 4, false), InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, none, none, none, o, o, o, kt, 4, false), InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, none, none, wv, o, o, o,
                                            TensorView<float>(keys.data(), {B, n, 2 * d}), 4, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, none, none, wv, o, o, o, kt, 0, false), InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, uv, matrix(u.data(), 2, 2), none, o, o, o, kt, 4, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_full_forward<float>(q, q, q, {}, none, none, matrix(w.data(), 2, 2), o, o, o, kt, 4, false),
               InvalidArgument);
  // aft_local: a band of the wrong width (window 2 non-causal: W = 3), window 0; a gradient of the wrong shape.
  EXPECT_THROW(
      ops::aft_local_forward<float>(q, q, q, {}, none, none, matrix(band.data(), L, 2), o, o, o, o, 2, 4, false),
      InvalidArgument);
  EXPECT_THROW(
      ops::aft_local_forward<float>(q, q, q, {}, none, none, matrix(band.data(), L, 3), o, o, o, o, 0, 4, false),
      InvalidArgument);
  EXPECT_THROW(ops::aft_local_backward<float>(q, q, q, {}, none, none, matrix(band.data(), L, 3), q, q, q, o, o, o, o,
                                              none, none, matrix(band.data(), L, 2), 2, 4, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_full_backward<float>(q, q, q, {}, uv, uv, none, q, q, kt, o, o, o, o, uv, none, none, 4, false),
               InvalidArgument);
}

}  // namespace
}  // namespace lf
