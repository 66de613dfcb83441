// pipeline_schedule.cpp: the GPipe and 1F1B task lists and their ideal clock.
#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <stdexcept>

namespace loom::parallel {

PipeSchedule pipe_schedule_from_name(const std::string& name) {
  if (name == "gpipe") return PipeSchedule::gpipe;
  if (name == "1f1b") return PipeSchedule::one_f_one_b;
  throw std::invalid_argument("unknown pipeline schedule '" + name + "' (expected gpipe or 1f1b)");
}

const char* pipe_schedule_name(PipeSchedule s) { return s == PipeSchedule::gpipe ? "gpipe" : "1f1b"; }

std::vector<PipeTask> pipeline_tasks(PipeSchedule s, int pp, int M, int stage) {
  if (pp < 1 || M < 1 || stage < 0 || stage >= pp)
    throw std::invalid_argument("pipeline_tasks: stage " + std::to_string(stage) + " of " + std::to_string(pp) +
                                " with " + std::to_string(M) + " micro-batches");
  std::vector<PipeTask> t;
  if (s == PipeSchedule::gpipe) {
    for (int i = 0; i < M; ++i) t.push_back({PipeTask::forward, i});
    for (int i = M - 1; i >= 0; --i) t.push_back({PipeTask::backward, i});
    return t;
  }
  const int warmup = std::min(pp - stage - 1, M);
  int f = 0, b = 0;
  for (; f < warmup; ++f) t.push_back({PipeTask::forward, f});
  for (; f < M; ++f, ++b) {
    t.push_back({PipeTask::forward, f});
    t.push_back({PipeTask::backward, b});
  }
  for (; b < M; ++b) t.push_back({PipeTask::backward, b});
  return t;
}

std::vector<std::vector<int>> pipeline_clock(PipeSchedule s, int pp, int M, int& makespan) {
  std::vector<std::vector<PipeTask>> tasks;
  for (int j = 0; j < pp; ++j) tasks.push_back(pipeline_tasks(s, pp, M, j));
  std::vector<std::vector<int>> slot(static_cast<size_t>(pp));
  std::map<std::pair<int, int>, int> fdone, bdone;  // (stage, micro) -> slot it ran in
  std::vector<size_t> next(size_t(pp), 0);
  std::vector<int> free_at(size_t(pp), 0);
  makespan = 0;
  // Relax until every stage has placed all its tasks (each pass places at least one task of a
  // valid schedule).
  for (bool progress = true; progress;) {
    progress = false;
    for (int j = 0; j < pp; ++j) {
      while (next[size_t(j)] < tasks[size_t(j)].size()) {
        const PipeTask& t = tasks[size_t(j)][next[size_t(j)]];
        int ready = free_at[size_t(j)];
        if (t.kind == PipeTask::forward) {
          if (j > 0) {
            auto it = fdone.find({j - 1, t.micro});
            if (it == fdone.end()) break;
            ready = std::max(ready, it->second + 1);
          }
        } else {
          auto dep = j + 1 < pp ? bdone.find({j + 1, t.micro}) : fdone.find({j, t.micro});
          if (dep == (j + 1 < pp ? bdone.end() : fdone.end())) break;
          ready = std::max(ready, dep->second + 1);
        }
        slot[size_t(j)].push_back(ready);
        (t.kind == PipeTask::forward ? fdone : bdone)[{j, t.micro}] = ready;
        free_at[size_t(j)] = ready + 1;
        makespan = std::max(makespan, ready + 1);
        ++next[size_t(j)];
        progress = true;
      }
    }
  }
  for (int j = 0; j < pp; ++j)
    if (next[size_t(j)] != tasks[size_t(j)].size())
      throw std::logic_error(std::string("pipeline_clock: schedule ") + pipe_schedule_name(s) + " deadlocks");
  return slot;
}

std::string tasks_str(const std::vector<PipeTask>& tasks) {
  std::string s;
  for (const PipeTask& t : tasks) {
    if (!s.empty()) s += ' ';
    s += (t.kind == PipeTask::forward ? 'F' : 'B') + std::to_string(t.micro);
  }
  return s;
}

}  // namespace loom::parallel
