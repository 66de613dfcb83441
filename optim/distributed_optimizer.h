// distributed_optimizer.h: the optimizer step of a (possibly) parallel run: gradient sync over
// the data-parallel group (parallel/data_parallel.h), the global gradient norm and clipping over
// data- and tensor-parallel ranks, and the update of the slices this rank owns, with the
// optimizer state sharded over the data-parallel group for ZeRO stages 1 and 2 (Rajbhandari et
// al., SC'20; the bucket-sliced layout of Megatron's distributed optimizer). A single process
// is the case dp = tp = 1 of the same code path.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "parallel/data_parallel.h"
#include "parallel/shard.h"

namespace loom::optim {

struct ShardedParam {
  std::string name;       // the full tensor's name
  Tensor tensor;          // this rank's local part (a leaf)
  bool decay = true;
  parallel::Shard shard;  // which part of the full tensor `tensor` is (whole without TP)
  // Copies of one parameter on several pipeline stages (tied embeddings): `tied` sums their
  // gradients after backward; only the primary copy counts in the norm and is checkpointed.
  parallel::CommPtr tied;
  bool primary = true;
};

// The groups a rank's optimizer step spans (size-1 groups or null for none).
struct ParallelGroups {
  parallel::CommPtr dp, tp, pp;
  bool sequence_parallel = false;
};

class DistributedOptimizer {
 public:
  // make: builds the inner optimizer (AdamW, SGD) over the parameters it is given.
  using Factory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamRef>)>;
  // groups.sequence_parallel: replicated parameters get partial gradients on each tp rank,
  // summed over tp during the sync. The gradient norm sums over dp (ZeRO), tp and pp.
  DistributedOptimizer(std::vector<ShardedParam> params, const Factory& make, parallel::DataParallelOptions opt,
                       ParallelGroups groups);

  void zero_grad();
  // On for the backward pass of the last micro-batch of a step.
  void set_sync(bool on) { sync_->set_sync(on); }
  // Completes the gradient sync; returns the seconds spent waiting for communication.
  double finish_backward() { return sync_->finish(); }
  // The L2 norm of the full gradient (f64, every element counted once across all ranks).
  double grad_norm() const;
  // Scales the gradients to norm <= max_norm when above; returns the norm before.
  double clip_grad_norm(double max_norm);
  // Updates the owned slices and, for ZeRO, all-gathers the parameters.
  void step(double lr);

  int64_t steps_taken() const { return inner_->steps_taken(); }
  void set_steps_taken(int64_t t) { inner_->set_steps_taken(t); }
  // The optimizer state this rank writes to a layout-independent checkpoint, named
  // "<param>/<kind>" (kind: exp_avg, exp_avg_sq, momentum) with the parameter's full shape.
  std::vector<parallel::Piece> state_pieces() const;
  // Loads this rank's slices out of full state tensors: full(name) returns "<param>/<kind>" with
  // the parameter's full shape (undefined: missing, an error naming it).
  void load_state(const std::function<Tensor(const std::string&)>& full);

  const parallel::GradSync& sync() const { return *sync_; }
  const std::vector<ShardedParam>& params() const { return params_; }

 private:
  bool counts_in_norm(size_t param) const;

  std::vector<ShardedParam> params_;
  parallel::DataParallelOptions opt_;
  parallel::CommPtr dp_, tp_, pp_;
  std::unique_ptr<parallel::GradSync> sync_;
  // The inner optimizer's parameters are the owned slices (flat views), in sync_->owned()
  // order; rebuilt when the owned slices move (never after construction for ZeRO >= 1).
  std::unique_ptr<Optimizer> inner_;
  std::vector<parallel::GradSync::Slice> slices_;  // as the inner optimizer was built
};

}  // namespace loom::optim
