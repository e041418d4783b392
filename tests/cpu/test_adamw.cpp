// AdamW: a hand-computed trajectory, the constant-gradient closed form, fast path vs reference, the
// global gradient norm and scaling used for clipping, and invalid options.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/adamw.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

const AdamWOptions kOpt{0.1, 0.9, 0.999, 1e-8, 0.01};

TEST(AdamW, HandComputedTrajectory) {
  // Step 1 by hand: m̂ = g, v̂ = g², so p₁ = p₀(1 − lr·wd) − lr·g/(|g| + eps) = 0.999 − 0.1·0.5/(0.5 + 1e-8).
  // Steps 2 and 3 follow torch.optim.AdamW's update written out in double; the second element's last
  // gradient is 0, so only momentum and decay move it.
  const double grads[3][2] = {{0.5, -0.2}, {-1.0, 0.1}, {2.0, 0.0}};
  const double want_p[3][2] = {{0.899000002, -0.39950000499999977},
                               {0.9347113542385653, -0.37246680271367577},
                               {0.8918110813618659, -0.3515064071478075}};
  const double want_m3[2] = {0.15049999999999997, -0.007200000000000001};
  const double want_v3[2] = {0.005248500250000005, 4.991004000000006e-05};
  std::vector<double> p = {1.0, -0.5}, m(2, 0.0), v(2, 0.0), pr = p, mr = m, vr = v;
  for (int t = 1; t <= 3; ++t) {
    adamw_step(p.data(), grads[t - 1], m.data(), v.data(), 2, t, kOpt);
    adamw_step_ref(pr.data(), grads[t - 1], mr.data(), vr.data(), 2, t, kOpt);
    for (int i = 0; i < 2; ++i) {
      EXPECT_NEAR(p[size_t(i)], want_p[t - 1][i], 1e-14) << "step " << t << " element " << i;
      EXPECT_NEAR(pr[size_t(i)], want_p[t - 1][i], 1e-15) << "reference, step " << t << " element " << i;
    }
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(m[size_t(i)], want_m3[i], 1e-17);
    EXPECT_NEAR(v[size_t(i)], want_v3[i], 1e-18);
  }
}

TEST(AdamW, ConstantGradientClosedForm) {
  // With a constant gradient the bias corrections make m̂ = g and v̂ = g² exactly, so every step is
  // p ← p(1 − lr·wd) − lr·g/(|g| + eps).
  const AdamWOptions o{0.01, 0.8, 0.99, 1e-3, 0.1};
  const double g[3] = {0.25, -2.0, 1e-3};
  std::vector<double> p = {0.3, -1.0, 2.0}, m(3, 0.0), v(3, 0.0), want = p;
  for (int t = 1; t <= 20; ++t) {
    adamw_step(p.data(), g, m.data(), v.data(), 3, t, o);
    for (int i = 0; i < 3; ++i)
      want[size_t(i)] = want[size_t(i)] * (1 - o.lr * o.weight_decay) - o.lr * g[i] / (std::abs(g[i]) + o.eps);
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[size_t(i)], want[size_t(i)], 1e-12) << i;
}

template <class T>
void check_vs_reference(int64_t n, double tol) {
  SCOPED_TRACE(testing::Message() << "n=" << n);
  std::vector<T> p = test::random_vector<T>(n, 1), m(n, T(0)), v(n, T(0));
  std::vector<T> pr = p, mr = m, vr = v;
  for (int64_t t = 1; t <= 5; ++t) {
    const std::vector<T> g = test::random_vector<T>(n, uint64_t(10 + t));
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, t, kOpt);
    adamw_step_ref(pr.data(), g.data(), mr.data(), vr.data(), n, t, kOpt);
  }
  LF_EXPECT_CLOSE(p.data(), pr.data(), n, tol);
  LF_EXPECT_CLOSE(m.data(), mr.data(), n, tol);
  LF_EXPECT_CLOSE(v.data(), vr.data(), n, tol);
}

TEST(AdamW, FastMatchesReferenceFloat) {
  for (int64_t n : {1, 7, 100003}) check_vs_reference<float>(n, 2e-6);
}

TEST(AdamW, FastMatchesReferenceDouble) {
  for (int64_t n : {1, 7, 100003}) check_vs_reference<double>(n, 1e-14);
}

TEST(AdamW, GlobalNormAndClipping) {
  const float small[2] = {3.f, -4.f};
  EXPECT_EQ(grad_global_norm(small, 2), 5.0);
  EXPECT_EQ(grad_global_norm(small, 0), 0.0);

  const int64_t n = 200003;  // several chunks, threaded
  std::vector<float> g = test::random_vector<float>(n, 2);
  double want = 0;
  for (float x : g) want += double(x) * double(x);
  want = std::sqrt(want);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double n1 = grad_global_norm(g.data(), n);
  omp_set_num_threads(2);
  const double n2 = grad_global_norm(g.data(), n);
  omp_set_num_threads(saved);
  EXPECT_NEAR(n1, want, 1e-12 * want);
  EXPECT_EQ(n1, n2) << "the norm must not depend on the thread count";

  // Clipping to max_norm = 1: scale by max_norm / norm.
  const std::vector<float> g0 = g;
  scale_inplace(g.data(), n, 1.0 / n1);
  EXPECT_NEAR(grad_global_norm(g.data(), n), 1.0, 1e-6);
  EXPECT_EQ(g[17], float(1.0 / n1) * g0[17]);
}

TEST(AdamW, InvalidArgumentsThrow) {
  double p = 1, g = 1, m = 0, v = 0;
  EXPECT_THROW(adamw_step(&p, &g, &m, &v, 1, 0, kOpt), InvalidArgument);  // t is 1-based
  for (AdamWOptions bad : {AdamWOptions{-1e-3}, AdamWOptions{1e-3, 1.0}, AdamWOptions{1e-3, 0.9, -0.1},
                           AdamWOptions{1e-3, 0.9, 0.999, -1e-8}, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, -0.1}}) {
    EXPECT_THROW(adamw_step(&p, &g, &m, &v, 1, 1, bad), InvalidArgument);
    EXPECT_THROW(adamw_step_ref(&p, &g, &m, &v, 1, 1, bad), InvalidArgument);
  }
  EXPECT_EQ(p, 1.0) << "a rejected step must not touch the parameters";
  EXPECT_THROW(grad_global_norm(&g, -1), InvalidArgument);
  EXPECT_THROW(scale_inplace(&p, -1, 2.0), InvalidArgument);
}

}  // namespace
}  // namespace lf
