// The AFT cores (src/ops/aft.h, src/cpu/aft_*.cpp): each op's kernel against its plain reference in
// double and float, causal and not, with a padding mask, at odd sizes; bad shapes refused.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cpu/aft_simple.h"
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
  const TensorView<const uint8_t> mv = masked ? vector_view<const uint8_t>(mask.data(), c.B * c.n) : TensorView<const uint8_t>();
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

TEST(OpsAft, SimpleRefusesBadShapes) {
  const Case c{2, 3, 4};
  std::vector<float> x(24), y(24), small(12);
  std::vector<uint8_t> mask(5);
  const TensorView<float> none;
  // k of another shape; a mask of the wrong length; statistics of the causal size for a global call.
  EXPECT_THROW(ops::aft_simple_forward<float>(bnd(x, c), TensorView<float>(small.data(), {2, 3, 2}), bnd(x, c), {},
                                              bnd(y, c), none, none, none, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_simple_forward<float>(bnd(x, c), bnd(x, c), bnd(x, c), vector_view<const uint8_t>(mask.data(), 5),
                                              bnd(y, c), none, none, none, false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_simple_forward<float>(bnd(x, c), bnd(x, c), bnd(x, c), {}, bnd(y, c), vector_view(y.data(), 24),
                                              vector_view(y.data(), 24), vector_view(y.data(), 24), false),
               InvalidArgument);
  EXPECT_THROW(ops::aft_simple_backward<float>(bnd(x, c), bnd(x, c), bnd(x, c), {}, none, none, none, bnd(x, c),
                                               bnd(y, c), bnd(y, c), bnd(y, c), true),
               InvalidArgument);
}

}  // namespace
}  // namespace lf
