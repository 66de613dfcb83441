// autograd.cpp: recording, the backward engine and gradient checkpointing.
#include "runtime/autograd.h"

#include <atomic>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "runtime/kernels.h"
#include "runtime/ops.h"
#include "runtime/rng.h"

namespace loom::runtime {

namespace {
std::atomic<uint64_t> g_next_sequence{0};
thread_local bool t_grad_enabled = true;
}  // namespace

Node::Node() : sequence_nr(g_next_sequence.fetch_add(1)) {}

bool grad_enabled() { return t_grad_enabled; }
GradModeGuard::GradModeGuard(bool enabled) : prev_(t_grad_enabled) { t_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { t_grad_enabled = prev_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}
bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs) {
  node->next.clear();
  node->next.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next.push_back(gradient_edge(t));
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i] || !outputs[i]->defined()) continue;
    if (!is_floating(outputs[i]->dtype())) continue;
    outputs[i]->impl()->grad_fn = node;
    outputs[i]->impl()->output_nr = int(i);
  }
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grads) {
  Tensor g = std::move(grads.at(0));
  if (!g.defined()) return {};
  if (g.shape() != leaf_->shape)
    throw std::logic_error("AccumulateGrad: gradient shape " + g.shape().str() + " != parameter shape " +
                           leaf_->shape.str());
  if (g.dtype() != leaf_->dtype) g = g.to(leaf_->dtype);
  if (!leaf_->grad) {
    // Own the buffer: take the incoming gradient only if nothing else can see it (hooks and
    // optimizers update .grad in place).
    bool exclusive = g.is_contiguous() && g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1;
    leaf_->grad = exclusive ? g.impl_ptr() : g.clone().impl_ptr();
  } else {
    Tensor acc(leaf_->grad);
    acc = add(acc, g);
    leaf_->grad = acc.impl_ptr();
  }
  Tensor grad_view(leaf_->grad);
  for (const GradHook& hook : leaf_->post_accumulate_hooks) hook(grad_view);
  return {};
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots) {
  NoGradGuard no_grad;
  // 1. Count, for each node, how many edges point at it (within the reachable graph).
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;
  std::vector<Node*> stack;
  std::vector<Edge> root_edges;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    if (!r.requires_grad())
      throw std::invalid_argument("backward: tensor does not require grad (no parameter reached it)");
    Edge e = gradient_edge(r);
    root_edges.push_back(e);
    if (!keep.count(e.node.get())) {
      keep[e.node.get()] = e.node;
      stack.push_back(e.node.get());
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (!e.node) continue;
      if (deps[e.node.get()]++ == 0 && !keep.count(e.node.get())) {
        keep[e.node.get()] = e.node;
        stack.push_back(e.node.get());
      }
    }
  }
  // 2. Seed gradient buffers and run ready nodes, latest-created first.
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto accumulate = [&](const Edge& e, const Tensor& g) {
    if (!e.node || !g.defined()) return;
    auto& buf = buffers[e.node.get()];
    if (buf.empty()) buf.resize(size_t(e.node->num_outputs()));
    Tensor& slot = buf[size_t(e.input_nr)];
    if (!slot.defined()) {
      slot = g;
    } else if (slot.is_contiguous() && slot.impl_ptr().use_count() == 1 && slot.storage().use_count() == 1 &&
               slot.shape() == g.shape() && slot.dtype() == g.dtype() && slot.device() == g.device()) {
      // Nothing else sees the partial sum (no view, no saved copy): add in place, which saves an
      // allocation and a pass (a tied 50257 x 768 embedding gradient is 154 MB).
      dispatch(Op::add, {slot, g}, {slot});
    } else {
      slot = add(slot, g);
    }
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    Tensor g = i < grad_roots.size() ? grad_roots[i] : Tensor();
    if (!g.defined()) {
      if (roots[i].numel() != 1)
        throw std::invalid_argument("backward: a gradient must be given for a non-scalar output of shape " +
                                    roots[i].shape().str());
      g = Tensor::ones(roots[i].shape(), roots[i].dtype(), roots[i].device());
    } else if (g.shape() != roots[i].shape()) {
      throw std::invalid_argument("backward: gradient shape " + g.shape().str() + " != output shape " +
                                  roots[i].shape().str());
    }
    accumulate(root_edges[i], g);
  }
  auto later = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  for (const Edge& e : root_edges)
    if (deps[e.node.get()] == 0) {
      deps[e.node.get()] = -1;  // queued
      ready.push(e.node.get());
    }
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    std::vector<Tensor> grads = std::move(buffers[n]);
    buffers.erase(n);
    grads.resize(size_t(n->num_outputs()));
    std::vector<Tensor> input_grads = n->apply(std::move(grads));
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.node) continue;
      if (i < input_grads.size()) accumulate(e, input_grads[i]);
      if (--deps[e.node.get()] == 0) ready.push(e.node.get());
    }
  }
}

// ---- checkpoint ---------------------------------------------------------------------------
namespace {
class CheckpointNode final : public Node {
 public:
  CheckpointNode(CheckpointFn fn, std::vector<Tensor> inputs, GeneratorState rng, int n_out)
      : fn_(std::move(fn)), inputs_(std::move(inputs)), rng_(rng), n_out_(n_out) {}
  const char* name() const override { return "CheckpointBackward"; }
  int num_outputs() const override { return n_out_; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    std::vector<Tensor> detached;
    for (const Tensor& t : inputs_) {
      Tensor d = t.detach();
      if (t.requires_grad()) d.set_requires_grad(true);
      detached.push_back(d);
    }
    // Replay the forward with the random state it first saw, then restore the current one.
    Generator& gen = default_generator();
    GeneratorState now = gen.state();
    gen.set_state(rng_);
    std::vector<Tensor> outs;
    {
      GradModeGuard enable(true);
      outs = fn_(detached);
    }
    gen.set_state(now);
    std::vector<Tensor> roots, root_grads;
    for (size_t i = 0; i < outs.size(); ++i)
      if (grads[i].defined() && outs[i].requires_grad()) {
        roots.push_back(outs[i]);
        root_grads.push_back(grads[i]);
      }
    if (!roots.empty()) run_backward(roots, root_grads);
    std::vector<Tensor> result;
    for (const Tensor& d : detached) result.push_back(d.requires_grad() ? d.grad() : Tensor());
    inputs_.clear();
    return result;
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> inputs_;
  GeneratorState rng_;
  int n_out_;
};
}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  GeneratorState rng = default_generator().state();
  std::vector<Tensor> outs;
  {
    NoGradGuard no_grad;
    outs = fn(inputs);
  }
  if (!grad_enabled()) return outs;
  // Parameters used inside fn are reached by the recomputation; the node needs only to be
  // reachable whenever anything in the region needs grad, so it always records.
  auto node = std::make_shared<CheckpointNode>(fn, inputs, rng, int(outs.size()));
  std::vector<Tensor*> out_ptrs;
  for (Tensor& o : outs) out_ptrs.push_back(&o);
  record(node, inputs, out_ptrs);
  return outs;
}

}  // namespace loom::runtime
