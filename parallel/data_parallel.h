// data_parallel.h: gradient synchronisation over the data-parallel group, in buckets that
// backward fills and starts while it still runs (PyTorch DDP / Megatron DDP), and the sharding
// of those buckets that ZeRO uses.
//
// Parameters are packed, in reverse registration order (the order backward produces their
// gradients), into buckets of about bucket_bytes. A post-accumulate hook copies a parameter's
// gradient into its bucket on the micro-batch that synchronises; when a bucket is complete its
// collective starts asynchronously (with overlap), so communication runs behind the rest of
// backward. finish() waits for all of them.
//   zero_stage 0: all-reduce (sum); every parameter's .grad is the group's sum afterwards.
//   zero_stage 1: all-reduce (sum); each rank then uses only its owned slices of the buckets.
//   zero_stage 2: reduce-scatter (sum): each rank receives only its owned slices.
// Each bucket is split over the group with split_range (uneven when its size does not divide),
// so rank r owns slice r of every bucket; owned() lists those slices per parameter.
// Gradients are summed, not averaged: the trainer's loss is already divided by the global
// token count, which makes the sum the exact single-process gradient.
//
// Some parameters hold partial gradients that another group must sum first (PartialSum):
//  - under sequence parallelism, replicated parameters (norms, row-parallel biases) over tp,
//    in the hook (the tp ranks run backward in lock step);
//  - under pipeline parallelism, the two copies of tied embeddings (first and last stage) over
//    the pair, after backward (in the hook the last stage would wait for the first, which waits
//    for the last stage's gradients: a deadlock). Their bucket starts in finish().
#pragma once
#include <memory>
#include <vector>

#include "parallel/comm.h"

namespace loom::parallel {

struct PartialSum {
  CommPtr group;                // null: the gradient is complete
  bool after_backward = false;  // sum in finish() rather than in the hook
};

struct DataParallelOptions {
  int64_t bucket_bytes = 25 << 20;
  bool overlap = true;  // start each bucket from backward; false: all at finish()
  int zero_stage = 0;   // 0, 1 or 2
};

class GradSync {
 public:
  // params: the model's leaves (all of one dtype and device); partial[i] (may be empty): the
  // group that sums parameter i's gradient first.
  GradSync(std::vector<Tensor> params, CommPtr dp, DataParallelOptions opt, std::vector<PartialSum> partial = {});
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Backward passes before the last micro-batch of a step only accumulate .grad locally; the
  // last one runs with sync on. Off by default.
  void set_sync(bool on);
  // Starts the buckets that have not started (parameters that got no gradient count as zero),
  // waits for every collective and, for zero_stage 0, writes the sums back into .grad.
  // Returns the seconds spent waiting (communication not hidden behind backward).
  double finish();

  // A slice [begin, end) of parameter `param`'s flat local elements that this rank owns, and
  // where its reduced gradient is after finish().
  struct Slice {
    size_t param;
    int64_t begin, end;
    Tensor grad;  // 1-D view, end - begin elements
  };
  const std::vector<Slice>& owned() const { return owned_; }
  // zero_stage >= 1, after the owned slices of the parameters were updated: every rank's slices
  // are all-gathered into every rank's parameters.
  void all_gather_params();

  int num_buckets() const;
  // Buckets whose collective had started before the last finish() was called (overlapped
  // with backward).
  int buckets_started_in_backward() const { return started_early_; }
  const DataParallelOptions& options() const { return opt_; }
  const CommPtr& comm() const { return dp_; }

 private:
  struct State;
  std::shared_ptr<State> s_;
  DataParallelOptions opt_;
  CommPtr dp_;
  std::vector<Slice> owned_;
  int started_early_ = 0;
};

}  // namespace loom::parallel
