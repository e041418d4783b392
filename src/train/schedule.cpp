// Linear warm-up + cosine decay; see schedule.h.
#include "linformer/schedule.h"

#include <cmath>
#include <numbers>

#include "linformer/error.h"

namespace lf {

void LrSchedule::validate() const {
  LF_REQUIRE(std::isfinite(peak_lr) && peak_lr > 0, "learning-rate schedule: peak_lr must be a positive number, got ",
             peak_lr);
  LF_REQUIRE(warmup_steps >= 0, "learning-rate schedule: warmup_steps must be >= 0, got ", warmup_steps);
  LF_REQUIRE(total_steps > 0, "learning-rate schedule: total_steps must be positive, got ", total_steps);
  LF_REQUIRE(warmup_steps <= total_steps, "learning-rate schedule: warmup_steps (", warmup_steps,
             ") must not exceed total_steps (", total_steps, "); shorten the warm-up or train longer");
  LF_REQUIRE(std::isfinite(min_lr_ratio) && min_lr_ratio >= 0 && min_lr_ratio <= 1,
             "learning-rate schedule: min_lr_ratio must be in [0, 1], got ", min_lr_ratio);
}

double LrSchedule::lr(int64_t step) const {
  validate();
  LF_REQUIRE(step >= 0, "learning-rate schedule: step must be >= 0, got ", step);
  // (step + 1) so that step 0 already moves the weights and the last warm-up step reaches the peak.
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  const double floor = min_lr_ratio * peak_lr;
  // step >= total also covers warmup == total, where the decay phase is empty.
  if (step >= total_steps) return floor;
  const double progress = double(step - warmup_steps) / double(total_steps - warmup_steps);
  return floor + (peak_lr - floor) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
}

}  // namespace lf
