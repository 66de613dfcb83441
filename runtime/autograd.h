// autograd.h: the define-by-run tape. Each differentiable op that sees an input requiring
// grad records a Node holding what its backward needs and edges to the producers of its
// inputs. Tensor::backward() runs the recorded nodes in reverse creation order (highest
// sequence number first, so gradients of late layers, and their data-parallel reductions,
// are ready early). Backward functions run with grad mode off.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace loom::runtime {

struct Edge {
  std::shared_ptr<Node> node;  // null: that input does not need a gradient
  int input_nr = 0;            // which output of `node` the input was
};

class Node {
 public:
  Node();
  virtual ~Node() = default;
  // grads[i] is the gradient w.r.t. output i (undefined if nothing flowed there).
  // Returns one gradient per entry of `next` (undefined where none).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grads) = 0;
  virtual const char* name() const = 0;
  virtual int num_outputs() const { return 1; }

  std::vector<Edge> next;
  uint64_t sequence_nr;
};

// Accumulates into a leaf's .grad and runs its post-accumulate hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  const char* name() const override { return "AccumulateGrad"; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// Grad mode (thread-local). NoGradGuard disables recording in its scope.
bool grad_enabled();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

// True when an op with these inputs must record a node.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);
// The edge through which a gradient reaches tensor t (its grad_fn, or its leaf accumulator).
Edge gradient_edge(const Tensor& t);
// Attaches `node` as the grad_fn of `outputs` (output i gets output_nr i) and wires its edges
// to `inputs`. Call only when any_requires_grad(inputs) and grad mode is on.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            std::vector<Tensor*> outputs);

// Runs backward from `roots` with the given output gradients (ones for scalars if undefined).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots);

// Re-materialisation: runs fn without recording its internals; in backward re-runs it with
// the random-number state it first saw, then back-propagates through the recomputed region.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

// A node defined by a lambda, for ops whose backward is a few lines.
class LambdaNode final : public Node {
 public:
  using Fn = std::function<std::vector<Tensor>(std::vector<Tensor>&&)>;
  LambdaNode(const char* name, Fn fn, int num_outputs = 1)
      : name_(name), fn_(std::move(fn)), num_outputs_(num_outputs) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override { return fn_(std::move(grads)); }
  const char* name() const override { return name_; }
  int num_outputs() const override { return num_outputs_; }

 private:
  const char* name_;
  Fn fn_;
  int num_outputs_;
};

}  // namespace loom::runtime
