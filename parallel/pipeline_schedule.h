// pipeline_schedule.h: pipeline schedules as data. A schedule is, per stage, the ordered list of
// tasks (micro-batch, forward | backward) that stage runs in one optimizer step; the executor
// (pipeline.h) runs whatever list it is given, so a new schedule is a new generator only.
//
//   GPipe (Huang et al., 2019), fill-drain: at clock k stage j runs the forward of micro-batch
//   i = k - j; after all forwards, the backwards drain in reverse micro-batch order (clock k
//   runs backward i = M - 1 - (k - (pp - 1 - j))). Per stage: F0 .. F(M-1), B(M-1) .. B0.
//   1F1B (PipeDream-Flush, Narayanan et al., 2021): stage j runs min(pp - j - 1, M) warm-up
//   forwards, then alternates one forward and one backward, then drains the remaining
//   backwards; backwards in micro-batch order. At most pp - j micro-batches are in flight.
#pragma once
#include <string>
#include <vector>

namespace loom::parallel {

struct PipeTask {
  enum Kind { forward, backward };
  Kind kind;
  int micro;
  bool operator==(const PipeTask& o) const { return kind == o.kind && micro == o.micro; }
};

enum class PipeSchedule { gpipe, one_f_one_b };
PipeSchedule pipe_schedule_from_name(const std::string& name);  // "gpipe" | "1f1b"
const char* pipe_schedule_name(PipeSchedule s);

// The tasks of `stage` (0 .. pp-1) for M micro-batches.
std::vector<PipeTask> pipeline_tasks(PipeSchedule s, int pp, int micro_batches, int stage);

// The clock (time slot, unit-cost tasks) at which each task of each stage runs when every stage
// starts a task as soon as its inputs exist: stage j's forward i needs forward i of stage j - 1
// one slot earlier, its backward i needs backward i of stage j + 1 (or, on the last stage, its
// own forward i). Returns per stage the slot of each task, and the total slots in `makespan`.
std::vector<std::vector<int>> pipeline_clock(PipeSchedule s, int pp, int micro_batches, int& makespan);

// "F0 F1 B1 B0"
std::string tasks_str(const std::vector<PipeTask>& tasks);

}  // namespace loom::parallel
