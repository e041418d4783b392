// The learning-rate schedule of a training run: linear warm-up to the peak, then cosine decay to a
// floor (min_lr_ratio × peak) at total_steps, constant after that. A pure function of the step, so a
// resumed run continues on exactly the curve it left.
#pragma once
#include <cstdint>

namespace lf {

struct LrSchedule {
  double peak_lr = 0;
  int64_t warmup_steps = 0;  // 0: no warm-up, step 0 already runs at the peak
  int64_t total_steps = 0;
  double min_lr_ratio = 0.1;  // the floor reached at total_steps, as a fraction of peak_lr

  // Throws lf::InvalidArgument naming the field: peak_lr finite and > 0, warmup_steps >= 0,
  // total_steps > 0, warmup_steps <= total_steps, min_lr_ratio finite and in [0, 1].
  void validate() const;

  // The rate for 0-based step `step` (the step about to be taken):
  //   step < warmup:          peak · (step + 1) / warmup
  //   warmup <= step < total: floor + (peak − floor) · ½(1 + cos(π · (step − warmup) / (total − warmup)))
  //   step >= total:          floor = min_lr_ratio · peak
  // Validates first; throws lf::InvalidArgument for a negative step.
  double lr(int64_t step) const;
};

}  // namespace lf
