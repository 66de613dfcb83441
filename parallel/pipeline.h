// pipeline.h: the pipeline executor. It runs one stage's task list (pipeline_schedule.h) for one
// optimizer step: forwards receive the previous stage's activation and send theirs on,
// backwards receive the next stage's activation gradient and send the input's gradient back.
// Sends are nonblocking (so a stage computes while its output travels, and two neighbours
// sending to each other cannot deadlock); receives block. Tags: 2 i for micro-batch i's
// activation, 2 i + 1 for its gradient.
//
// Re-materialisation (GPipe section 2.2): a stage keeps, per micro-batch in flight, only its
// input, and runs the forward again inside the backward (modes always / except_last / never;
// except_last keeps the graph of the last forward of the step, whose backward follows at once
// on the last stage). The stage's forward function sets the random state it draws from itself
// (from the step and micro-batch), so a recomputed forward replays its dropout exactly.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "parallel/pipeline_schedule.h"

namespace loom::parallel {

enum class Recompute { never, always, except_last };
Recompute recompute_from_name(const std::string& name);  // "never" | "always" | "except_last"

struct StageFns {
  // Micro-batch i's forward on this stage: input (the ids on the first stage, else the
  // received activation, a leaf that requires grad) -> the activation to send on, or on the
  // last stage the scalar loss contribution that backward starts from.
  std::function<Tensor(int micro, const Tensor& input)> forward;
  // The first stage's input for micro-batch i; undefined for an empty micro-batch (allowed
  // only with a single stage: nothing runs for it).
  std::function<Tensor(int micro)> first_input;
  // The shape of the activation between stages for micro-batch i.
  std::function<runtime::Dims(int micro)> activation_shape;
  DType dtype = DType::f32;
  // Called with true right before the step's last backward task (gradient sync hooks).
  std::function<void(bool)> set_sync;
};

struct PipelineStats {
  double total_s = 0;     // wall time of the step on this stage
  double blocked_s = 0;   // waiting in receives (the bubble, as this stage sees it)
  double losses = 0;      // sum of the last stage's loss values (0 elsewhere)
  int64_t peak_in_flight = 0;  // most micro-batches holding activations at once
};

class PipelineExecutor {
 public:
  // pp: the pipeline group (stage = rank in it).
  PipelineExecutor(CommPtr pp, PipeSchedule schedule, int micro_batches, Recompute recompute);

  PipelineStats run(const StageFns& fns);
  // Forwards only, without autograd (evaluation): micro-batches 0 .. M-1 flow through the
  // stages; returns the last stage's loss sum (0 elsewhere). `micro_batches` may differ from
  // the training count.
  double run_forward(const StageFns& fns, int micro_batches);

  int stage() const { return pp_->rank(); }
  int stages() const { return pp_->size(); }
  bool first() const { return stage() == 0; }
  bool last() const { return stage() == stages() - 1; }
  const std::vector<PipeTask>& tasks() const { return tasks_; }

 private:
  CommPtr pp_;
  int micro_batches_;
  Recompute recompute_;
  std::vector<PipeTask> tasks_;
};

}  // namespace loom::parallel
