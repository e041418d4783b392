// The op profiler (linformer/profile.h, src/core/profile.cpp) and its hook in LF_DISPATCH: it counts
// the calls and FLOPs of a known sequence of ops by name and GEMM shape, records nothing without a
// scope (or from another thread, or inside a parallel region), keeps nested ops' time out of their
// parent's, and its times are non-negative and add up to at most the scope's wall time.
#include <gtest/gtest.h>

#include <omp.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/op_timer.h"
#include "linformer/error.h"
#include "linformer/profile.h"
#include "linformer/runtime.h"
#include "linformer/tensor.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/softmax.h"
#include "test_util.h"

namespace lf {
namespace {

using test::random_vector;

// The stats of a profile by "op|detail".
std::map<std::string, OpStat> by_key(const OpProfile& p) {
  std::map<std::string, OpStat> m;
  for (const OpStat& s : p.ops) m[s.op + "|" + s.detail] = s;
  return m;
}

// A fixed sequence: 2 products (3 × 4) · (4 × 5), one batched (3 × 2 × 4) · (4 × 5) with Bᵀ read in
// place, a linear forward (6 rows, 4 → 5) and its backward (dx, dW, dbias), one softmax.
void run_known_ops() {
  const auto A = random_vector<float>(3 * 2 * 4, 1), B = random_vector<float>(4 * 5, 2);
  std::vector<float> C(3 * 2 * 5);
  ops::matmul<float>(matrix(A.data(), 3, 4), matrix(B.data(), 4, 5), matrix(C.data(), 3, 5));
  ops::matmul<float>(matrix(A.data(), 3, 4), matrix(B.data(), 4, 5), matrix(C.data(), 3, 5));
  ops::matmul<float>(matrices(A.data(), 3, 8, 2, 4), matrix(B.data(), 5, 4).t(), matrices(C.data(), 3, 10, 2, 5));
  const auto X = random_vector<float>(6 * 4, 3), W = random_vector<float>(5 * 4, 4), b = random_vector<float>(5, 5);
  std::vector<float> Y(6 * 5), dX(6 * 4), dW(5 * 4, 0.f), db(5, 0.f);
  ops::linear_forward<float>(matrix(X.data(), 6, 4), matrix(W.data(), 5, 4), vector_view(b.data(), 5),
                             matrix(Y.data(), 6, 5));
  ops::linear_backward<float>(matrix(X.data(), 6, 4), matrix(W.data(), 5, 4), matrix(Y.data(), 6, 5),
                              matrix(dX.data(), 6, 4), vector_view(dW.data(), 20), vector_view(db.data(), 5));
  ops::softmax_forward<float>(matrix(Y.data(), 6, 5), matrix(Y.data(), 6, 5));
}

TEST(OpProfile, CountsCallsAndFlopsOfAKnownSequence) {
  ProfileScope scope;
  EXPECT_TRUE(profiling());
  run_known_ops();
  const OpProfile p = scope.stop();
  EXPECT_FALSE(profiling());
  const auto m = by_key(p);
  ASSERT_EQ(m.size(), 7u) << "matmul ×2 shapes, linear_forward, linear_backward dx and dW, add_column_sums, softmax";
  const OpStat& mm = m.at("matmul|M=3 N=5 K=4 tA=0 tB=0 batch=1");
  EXPECT_EQ(mm.calls, 2);
  EXPECT_DOUBLE_EQ(mm.flops, 2 * 2.0 * 3 * 5 * 4);
  const OpStat& bmm = m.at("matmul|M=2 N=5 K=4 tA=0 tB=1 batch=3");
  EXPECT_EQ(bmm.calls, 1);
  EXPECT_DOUBLE_EQ(bmm.flops, 2.0 * 2 * 5 * 4 * 3);
  EXPECT_DOUBLE_EQ(m.at("linear_forward|M=6 N=5 K=4 tA=0 tB=1 batch=1").flops, 2.0 * 6 * 5 * 4);
  EXPECT_DOUBLE_EQ(m.at("linear_backward|dx: M=6 N=4 K=5 tA=0 tB=0 batch=1").flops, 2.0 * 6 * 4 * 5);
  EXPECT_DOUBLE_EQ(m.at("linear_backward|dW: M=5 N=4 K=6 tA=1 tB=0 batch=1").flops, 2.0 * 5 * 4 * 6);
  EXPECT_EQ(m.at("add_column_sums|").calls, 1);
  EXPECT_EQ(m.at("softmax_forward|").calls, 1);
  EXPECT_DOUBLE_EQ(m.at("softmax_forward|").flops, 0);  // not counted by the op
  int64_t calls = 0;
  for (const OpStat& s : p.ops) calls += s.calls;
  EXPECT_EQ(calls, 8);
}

TEST(OpProfile, TimesAreNonNegativeSortedAndWithinTheWallTime) {
  const auto t0 = std::chrono::steady_clock::now();
  ProfileScope scope;
  for (int i = 0; i < 20; ++i) run_known_ops();
  const OpProfile p = scope.stop();
  const double outer = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(p.ops.empty());
  double sum = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    EXPECT_GE(p.ops[i].seconds, 0) << p.ops[i].op;
    if (i > 0) {
      EXPECT_LE(p.ops[i].seconds, p.ops[i - 1].seconds) << "the longest first";
    }
    sum += p.ops[i].seconds;
  }
  EXPECT_DOUBLE_EQ(p.op_seconds(), sum);
  EXPECT_GT(sum, 0);
  EXPECT_LE(sum, p.wall_seconds);
  EXPECT_LE(p.wall_seconds, outer);
}

// At --precision int8 the linear layers' forward products are another row, marked " int8"; the other
// products (matmul) stay fp32 and unmarked.
TEST(OpProfile, Int8LinearProductsAreMarked) {
  if (const std::string why = precision_unsupported_reason(Precision::int8); !why.empty()) GTEST_SKIP() << why;
  const auto X = random_vector<float>(6 * 4, 3), W = random_vector<float>(5 * 4, 4);
  std::vector<float> Y(6 * 5), C(6 * 5);
  RuntimeOptions o;
  o.precision = Precision::int8;
  const RuntimeScope runtime(o);
  ProfileScope scope;
  ops::linear_forward<float>(matrix(X.data(), 6, 4), matrix(W.data(), 5, 4), {}, matrix(Y.data(), 6, 5));
  ops::matmul<float>(matrix(X.data(), 6, 4), matrix(W.data(), 5, 4).t(), matrix(C.data(), 6, 5));
  const auto m = by_key(scope.stop());
  EXPECT_EQ(m.count("linear_forward|M=6 N=5 K=4 tA=0 tB=1 batch=1 int8"), 1u);
  EXPECT_EQ(m.count("matmul|M=6 N=5 K=4 tA=0 tB=1 batch=1"), 1u);
  EXPECT_EQ(m.size(), 2u);
}

TEST(OpProfile, EmptyWhenOff) {
  EXPECT_FALSE(profiling());
  run_known_ops();  // no scope: nothing is kept for a later one
  ProfileScope scope;
  const OpProfile p = scope.stop();
  EXPECT_TRUE(p.ops.empty());
  EXPECT_GE(p.wall_seconds, 0);
  EXPECT_TRUE(scope.stop().ops.empty()) << "a second stop returns an empty profile";
  {
    ProfileScope discarded;  // destroyed without stop(): the next scope starts empty
    run_known_ops();
  }
  ProfileScope next;
  EXPECT_TRUE(next.stop().ops.empty());
}

TEST(OpProfile, OneScopeAtATime) {
  ProfileScope scope;
  EXPECT_THROW(ProfileScope(), Error);
  scope.stop();
  EXPECT_NO_THROW(ProfileScope());
}

TEST(OpProfile, OnlyTheOwningThreadOutsideParallelRegionsIsCounted) {
  ProfileScope scope;
  std::thread other([] { run_known_ops(); });
  other.join();
#pragma omp parallel num_threads(2)
  { const profile_detail::OpTimer t("in_parallel"); }
  const OpProfile p = scope.stop();
  EXPECT_TRUE(p.ops.empty()) << p.ops.front().op;
}

void busy_wait(double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
  }
}

TEST(OpProfile, NestedOpsCountOnlyInTheInnerOne) {
  ProfileScope scope;
  {
    profile_detail::OpTimer outer("outer");
    ASSERT_TRUE(outer.on());
    busy_wait(0.002);
    {
      profile_detail::OpTimer inner("inner");
      inner.set_detail({"x", 10});
      busy_wait(0.05);
    }
  }
  const OpProfile p = scope.stop();
  const auto m = by_key(p);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_GE(m.at("inner|x").seconds, 0.05);
  EXPECT_DOUBLE_EQ(m.at("inner|x").flops, 10);
  EXPECT_GE(m.at("outer|").seconds, 0.002);
  EXPECT_LT(m.at("outer|").seconds, 0.05) << "the inner op's time is not the outer one's";
  EXPECT_LE(p.op_seconds(), p.wall_seconds);
}

}  // namespace
}  // namespace lf
