// Core: the Philox RNG against its published known answers, the parameter arena, thread settings.
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <thread>

#include "cpu/gemm.h"
#include "linformer/arena.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "test_util.h"

namespace lf {
namespace {

TEST(Philox, KnownAnswers) {
  // Random123's known-answer vectors for philox4x32-10.
  uint32_t zero[4] = {0, 0, 0, 0};
  Philox::block(0, zero);
  EXPECT_EQ(zero[0], 0x6627e8d5u);
  EXPECT_EQ(zero[1], 0xe169c58du);
  EXPECT_EQ(zero[2], 0xbc57ac4cu);
  EXPECT_EQ(zero[3], 0x9b00dbd8u);
  uint32_t ones[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  Philox::block(0xffffffffffffffffull, ones);
  EXPECT_EQ(ones[0], 0x408f276du);
  EXPECT_EQ(ones[1], 0x41c83b0eu);
  EXPECT_EQ(ones[2], 0xa20bc7c6u);
  EXPECT_EQ(ones[3], 0x6d5451fdu);
}

TEST(Philox, UniformAndNormalMoments) {
  const int N = 200000;
  double su = 0, sn = 0, sn2 = 0;
  for (int i = 0; i < N; ++i) {
    const float u = uniform01(9, 1, uint64_t(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    su += u;
    const double z = normal_f64(9, 2, uint64_t(i));
    sn += z;
    sn2 += z * z;
  }
  EXPECT_NEAR(su / N, 0.5, 0.005);
  EXPECT_NEAR(sn / N, 0.0, 0.01);
  EXPECT_NEAR(sn2 / N, 1.0, 0.02);
}

TEST(ParamArena, OneBufferNamedViewsAndSharing) {
  ParamArena<float> a;
  const int w = a.declare("w", {3, 4}, Init::ones());
  const int b = a.declare("b", {4}, Init::zeros());
  EXPECT_EQ(a.declare("shared", {2, 2}, Init::ones(), true, true), a.declare("shared", {2, 2}, Init::ones(), true, true));
  EXPECT_THROW(a.declare("w", {3, 4}, Init::ones()), InvalidArgument);                // twice, not shared
  EXPECT_THROW(a.declare("shared", {2, 3}, Init::ones(), true, true), InvalidArgument);  // shape differs
  EXPECT_THROW(a.declare("bad", {0, 3}, Init::ones()), InvalidArgument);
  a.allocate();
  a.initialize(1);
  EXPECT_EQ(a.numel(), 12 + 4 + 4);
  EXPECT_EQ(a.value(b), a.value(w) + 12);  // contiguous
  EXPECT_EQ(a.value(w)[11], 1.0f);
  EXPECT_EQ(a.find("b"), b);
  EXPECT_EQ(a.find("nope"), -1);
  a.grad(w)[0] = 5;
  a.zero_grad();
  EXPECT_EQ(a.grad(w)[0], 0.0f);
  EXPECT_THROW(a.declare("late", {1}, Init::ones()), InvalidArgument);
  // Views of a parameter carry its shape and the arena's device.
  EXPECT_EQ(a.device(), Device::CPU);
  const auto wv = a.value_view(w);
  EXPECT_EQ(wv.rank(), 2);
  EXPECT_EQ(wv.size(0), 3);
  EXPECT_EQ(wv.size(1), 4);
  EXPECT_EQ(wv.device(), a.device());
  EXPECT_EQ(a.grad_view(b).data(), a.grad(b));
  EXPECT_EQ(a.value_view(-1).data(), nullptr);
}

TEST(ParamArena, InferenceArenaHasNoGradients) {
  ParamArena<float> a;
  const int w = a.declare("w", {3, 4}, Init::ones());
  a.allocate(/*with_grads=*/false);
  a.initialize(1);
  EXPECT_FALSE(a.has_grads());
  EXPECT_EQ(a.value(w)[5], 1.0f);
  EXPECT_THROW(a.grad(w), InvalidArgument);
  EXPECT_THROW(a.grads(), InvalidArgument);
}

TEST(ParamArena, InitialValuesDependOnNameAndSeedNotOrder) {
  ParamArena<double> a, b;
  a.declare("x", {100}, Init::uniform(0.5));
  a.declare("y", {100}, Init::normal(2.0));
  b.declare("y", {100}, Init::normal(2.0));
  b.declare("x", {100}, Init::uniform(0.5));
  a.allocate();
  b.allocate();
  a.initialize(7);
  b.initialize(7);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.value(a.find("x"))[i], b.value(b.find("x"))[i]);
    EXPECT_EQ(a.value(a.find("y"))[i], b.value(b.find("y"))[i]);
    EXPECT_LE(std::abs(a.value(0)[i]), 0.5);
  }
  b.initialize(8);
  EXPECT_NE(a.value(a.find("x"))[0], b.value(b.find("x"))[0]);
}

TEST(ParamArena, OneStreamTwoScales) {
  ParamArena<double> a;
  const int e = a.declare("E", {50}, Init::normal(1.0, 2.0, "R"));
  const int f = a.declare("F", {50}, Init::normal(1.0, 0.5, "R"));
  a.allocate();
  a.initialize(3);
  for (int i = 0; i < 50; ++i) EXPECT_DOUBLE_EQ(a.value(e)[i], 4.0 * a.value(f)[i]);
}

TEST(ParamArena, CustomInitFillsByAFunctionOfTheSeed) {
  ParamArena<float> a;
  int64_t seen_numel = 0;
  const Init custom = Init::custom([&](uint64_t seed, double* out, int64_t numel) {
    seen_numel = numel;
    for (int64_t i = 0; i < numel; ++i) out[i] = double(seed) * 1000 + double(i) + 0.25;
  });
  const int w = a.declare("w", {2, 3}, custom, /*trainable=*/false);
  const int z = a.declare("z", {2}, Init::ones());
  a.allocate();
  a.initialize(7);
  EXPECT_EQ(seen_numel, 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.value(w)[i], float(7000 + i + 0.25));
  EXPECT_EQ(a.value(z)[1], 1.0f);
  a.initialize(2);
  EXPECT_EQ(a.value(w)[5], 2005.25f);
  EXPECT_FALSE(a.info(w).trainable);
  ParamArena<float> empty;  // a custom initialiser without a function is refused, not called
  empty.declare("e", {1}, Init::custom(nullptr));
  empty.allocate();
  EXPECT_THROW(empty.initialize(1), InvalidArgument);
}

TEST(Threading, ExplicitEnvironmentAndBadValues) {
  EXPECT_EQ(resolve_threads(1), 1);
  setenv(kThreadsEnv, "3", 1);
  EXPECT_EQ(resolve_threads(0), 3);
  setenv(kThreadsEnv, "two", 1);
  EXPECT_THROW(resolve_threads(0), InvalidArgument);
  setenv(kThreadsEnv, "-3", 1);
  EXPECT_THROW(resolve_threads(0), InvalidArgument);
  EXPECT_THROW(RuntimeScope{RuntimeOptions{}}, InvalidArgument);
  EXPECT_EQ(resolve_threads(2), 2);  // an explicit count ignores the environment
  unsetenv(kThreadsEnv);
  EXPECT_EQ(resolve_threads(0), omp_get_num_procs());
  EXPECT_THROW(RuntimeOptions{-1}.validate(), InvalidArgument);
  EXPECT_THROW(RuntimeOptions{kMaxThreads + 1}.validate(), InvalidArgument);
  EXPECT_THROW((RuntimeOptions{1, -5.0}.validate()), InvalidArgument);
}

// A scope sets the calling thread's count (and the GEMM backend's) and restores it; scopes nest, and
// another host thread keeps its own count meanwhile.
TEST(Threading, RuntimeScopeSetsAndRestoresTheCallingThreadsCount) {
  const int before = omp_get_max_threads(), gemm_before = gemm_threads();
  {
    const RuntimeScope one(RuntimeOptions{1});
    EXPECT_EQ(one.threads(), 1);
    EXPECT_EQ(num_threads(), 1);
    {
      const RuntimeScope three(RuntimeOptions{3});
      EXPECT_EQ(num_threads(), 3);
      EXPECT_EQ(gemm_threads(), 3);
      int other_thread = 0;
      std::thread([&] {
        const RuntimeScope five(RuntimeOptions{5});
        other_thread = num_threads();
      }).join();
      EXPECT_EQ(other_thread, 5);
      EXPECT_EQ(num_threads(), 3);
    }
    EXPECT_EQ(num_threads(), 1);
    int team = 0;
#pragma omp parallel
    {
#pragma omp single
      team = omp_get_num_threads();
    }
    EXPECT_EQ(team, 1);
  }
  EXPECT_EQ(omp_get_max_threads(), before);
  EXPECT_EQ(gemm_threads(), gemm_before);
}

}  // namespace
}  // namespace lf
