// The cores of AFT-full and AFT-local (src/ops/aft.h, src/cpu/aft_position.cpp): the ops against the
// plain reference on the effective bias w̃ (n × n), forward and backward, in double and float, causal
// and not, with a padding mask, factored and stored bias, at odd sizes and row blocks; bad shapes refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cpu/aft_position.h"
#include "ops/aft.h"
#include "test_util.h"

namespace lf {
namespace {

struct PositionCase {
  int64_t B, n, d, max_len, rank, window, row_block;  // window 0: aft_full
};
const PositionCase kCases[] = {{1, 1, 1, 1, 0, 0, 1},    {2, 5, 3, 7, 0, 0, 2},    {1, 7, 17, 9, 3, 0, 3},
                               {3, 11, 20, 13, 2, 0, 4}, {1, 1, 1, 1, 0, 1, 1},    {2, 5, 3, 7, 0, 2, 2},
                               {1, 7, 17, 9, 3, 3, 3},   {3, 11, 20, 13, 2, 4, 4}, {2, 9, 5, 9, 0, 9, 16}};

// Padding at every third position of the second sample onwards (the first keeps all its keys).
std::vector<uint8_t> some_padding(int64_t B, int64_t n) {
  std::vector<uint8_t> mask(static_cast<size_t>(B * n), 0);
  for (int64_t b = 1; b < B; ++b)
    for (int64_t t = 0; t < n; t += 3) mask[size_t(b * n + t)] = 1;
  return mask;
}

template <class T>
void expect_close(const std::vector<T>& a, const std::vector<T>& ref, double tol, const char* what) {
  EXPECT_LE(test::max_rel_error(a.data(), ref.data(), int64_t(a.size()), 1.0), tol) << what;
}

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
  for (const PositionCase& c : kCases)
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
  for (const PositionCase& c : kCases)
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
