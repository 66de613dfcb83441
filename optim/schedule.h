// schedule.h: learning-rate schedules as pure functions of the step.
#pragma once
#include <cstdint>
#include <string>

namespace loom::optim {

struct ScheduleOptions {
  std::string kind = "cosine";  // constant | cosine (warmup + cosine) | wsd (warmup-stable-decay)
  double lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1000;
  double min_lr_ratio = 0.1;    // floor as a fraction of lr (cosine, wsd)
  double decay_fraction = 0.2;  // wsd: the final fraction of steps that decays (Hu et al., MiniCPM)
};

// Learning rate for optimizer step `step` (0-based). Warmup is linear from lr/warmup to lr.
double learning_rate(const ScheduleOptions& s, int64_t step);

}  // namespace loom::optim
