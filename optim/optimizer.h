// optimizer.h: AdamW and SGD over a list of named parameters, with per-parameter state that
// checkpoints address by name (so a run resumes, and later reshards, by name).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace loom::optim {

using runtime::Tensor;

struct ParamRef {
  std::string name;
  Tensor tensor;
  bool decay = true;  // false: no weight decay (norms, biases, embeddings when configured)
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of every parameter that has a gradient (its .grad), at learning rate lr.
  void step(double lr);
  // The same with explicit gradients: grads[i] (contiguous, the shape or numel of params[i];
  // undefined to skip) instead of params[i]'s .grad.
  virtual void step(double lr, const std::vector<Tensor>& grads) = 0;
  void zero_grad();
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Named state tensors ("<param>/exp_avg", ...) for checkpoints; load copies values in.
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state);
  const std::vector<ParamRef>& params() const { return params_; }

 protected:
  explicit Optimizer(std::vector<ParamRef> params) : params_(std::move(params)) {}
  std::vector<ParamRef> params_;
  int64_t t_ = 0;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<ParamRef> params, AdamWOptions opt);
  using Optimizer::step;
  void step(double lr, const std::vector<Tensor>& grads) override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  AdamWOptions opt_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

struct SGDOptions {
  double momentum = 0.9, weight_decay = 0.0;
};
class SGD final : public Optimizer {
 public:
  SGD(std::vector<ParamRef> params, SGDOptions opt);
  using Optimizer::step;
  void step(double lr, const std::vector<Tensor>& grads) override;
  std::vector<std::pair<std::string, Tensor>> state() const override;

 private:
  SGDOptions opt_;
  std::vector<Tensor> momentum_;
};

// g *= s in place (one pass, no temporary): clipping and averaging of gradients.
void scale_in_place(const Tensor& g, double s);
// Global L2 norm of all gradients (f64 accumulation). Returns NaN/Inf if any gradient is.
double grad_norm(const std::vector<ParamRef>& params);
// Scales gradients so their global norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm);
// Multiplies every gradient by s (gradient accumulation averaging, loss-scale removal).
void scale_grads(const std::vector<ParamRef>& params, double s);

}  // namespace loom::optim
