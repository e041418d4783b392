// The learning-rate schedule: warm-up, cosine decay and floor at hand-computed steps, the edge cases
// (no warm-up, warm-up filling the whole run) and every validation error.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "linformer/error.h"
#include "linformer/schedule.h"

namespace lf {
namespace {

// peak 1e-3, 10 warm-up steps, 110 in all: the decay phase is 100 steps long, the floor 1e-4.
const LrSchedule kSched{1e-3, 10, 110, 0.1};

TEST(LrSchedule, WarmupIsLinearFromOneStep) {
  EXPECT_DOUBLE_EQ(kSched.lr(0), 1e-4);  // (0 + 1) / 10 · peak
  EXPECT_DOUBLE_EQ(kSched.lr(4), 5e-4);
  EXPECT_DOUBLE_EQ(kSched.lr(9), 1e-3);  // the last warm-up step reaches the peak
}

TEST(LrSchedule, CosineDecayToTheFloor) {
  EXPECT_DOUBLE_EQ(kSched.lr(10), 1e-3);  // decay progress 0
  // progress 0.25: 1e-4 + 9e-4 · ½(1 + cos(π/4)) = 1e-4 + 9e-4 · 0.8535533905932737
  EXPECT_NEAR(kSched.lr(35), 8.681980515339464e-4, 1e-15);
  EXPECT_NEAR(kSched.lr(60), 5.5e-4, 1e-15);  // progress 0.5: halfway between peak and floor
  // progress 0.75: 1e-4 + 9e-4 · ½(1 − cos(π/4)) = 1e-4 + 9e-4 · 0.14644660940672627
  EXPECT_NEAR(kSched.lr(85), 2.3180194846605364e-4, 1e-15);
  EXPECT_NEAR(kSched.lr(109), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(std::numbers::pi * 99 / 100)), 1e-15);
}

TEST(LrSchedule, ConstantFloorAfterTheEnd) {
  EXPECT_DOUBLE_EQ(kSched.lr(110), 1e-4);
  EXPECT_DOUBLE_EQ(kSched.lr(1000000), 1e-4);
  const LrSchedule zero_floor{2e-3, 0, 10, 0.0};
  EXPECT_DOUBLE_EQ(zero_floor.lr(10), 0.0);
}

TEST(LrSchedule, NonIncreasingAfterWarmup) {
  for (int64_t s = 10; s < 120; ++s) EXPECT_LE(kSched.lr(s + 1), kSched.lr(s)) << "step " << s;
}

TEST(LrSchedule, NoWarmupStartsAtThePeak) {
  const LrSchedule s{3e-4, 0, 100};  // min_lr_ratio defaults to 0.1
  EXPECT_DOUBLE_EQ(s.lr(0), 3e-4);
  EXPECT_NEAR(s.lr(50), 3e-5 + 2.7e-4 * 0.5, 1e-16);
  EXPECT_DOUBLE_EQ(s.lr(100), 3e-5);
}

TEST(LrSchedule, WarmupFillingTheRunThenFloor) {
  const LrSchedule s{1.0, 4, 4, 0.5};
  EXPECT_DOUBLE_EQ(s.lr(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.5);
}

void expect_invalid(const LrSchedule& s, int64_t step, const std::string& fragment) {
  try {
    s.lr(step);
    ADD_FAILURE() << "expected lf::InvalidArgument mentioning '" << fragment << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(LrSchedule, RejectsBadSettings) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  expect_invalid({0.0, 0, 10}, 0, "peak_lr");
  expect_invalid({-1e-3, 0, 10}, 0, "peak_lr");
  expect_invalid({nan, 0, 10}, 0, "peak_lr");
  expect_invalid({std::numeric_limits<double>::infinity(), 0, 10}, 0, "peak_lr");
  expect_invalid({1e-3, -1, 10}, 0, "warmup_steps");
  expect_invalid({1e-3, 0, 0}, 0, "total_steps");
  expect_invalid({1e-3, 11, 10}, 0, "must not exceed total_steps");
  expect_invalid({1e-3, 0, 10, 1.5}, 0, "min_lr_ratio");
  expect_invalid({1e-3, 0, 10, -0.1}, 0, "min_lr_ratio");
  expect_invalid({1e-3, 0, 10, nan}, 0, "min_lr_ratio");
  expect_invalid(kSched, -1, "step must be >= 0");
  EXPECT_NO_THROW(kSched.validate());
}

}  // namespace
}  // namespace lf
