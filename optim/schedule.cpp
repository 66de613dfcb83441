// schedule.cpp: constant, warmup + cosine, and warmup-stable-decay schedules.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace loom::optim {

double learning_rate(const ScheduleOptions& s, int64_t step) {
  if (s.warmup_steps > 0 && step < s.warmup_steps) return s.lr * double(step + 1) / double(s.warmup_steps);
  if (s.kind == "constant") return s.lr;
  double min_lr = s.lr * s.min_lr_ratio;
  if (s.kind == "cosine") {
    int64_t span = std::max<int64_t>(1, s.total_steps - s.warmup_steps);
    double progress = std::clamp(double(step - s.warmup_steps) / double(span), 0.0, 1.0);
    return min_lr + 0.5 * (s.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
  }
  if (s.kind == "wsd") {
    int64_t decay_steps = std::max<int64_t>(1, int64_t(std::llround(s.decay_fraction * double(s.total_steps))));
    int64_t decay_start = s.total_steps - decay_steps;
    if (step < decay_start) return s.lr;
    double progress = std::clamp(double(step - decay_start) / double(decay_steps), 0.0, 1.0);
    return s.lr - (s.lr - min_lr) * progress;  // linear decay to the floor
  }
  throw std::invalid_argument("unknown schedule '" + s.kind + "' (expected constant, cosine or wsd)");
}

}  // namespace loom::optim
