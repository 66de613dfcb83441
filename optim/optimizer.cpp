// optimizer.cpp: AdamW, SGD and gradient-norm utilities on the fused update kernels.
#include "optim/optimizer.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "runtime/kernels.h"
#include "runtime/ops.h"

namespace loom::optim {

using namespace runtime;

void Optimizer::step(double lr) {
  std::vector<Tensor> grads;
  for (const ParamRef& p : params_) grads.push_back(p.tensor.grad());
  step(lr, grads);
}

void Optimizer::zero_grad() {
  for (ParamRef& p : params_) p.tensor.zero_grad();
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  std::map<std::string, Tensor> given(st.begin(), st.end());
  NoGradGuard ng;
  for (auto& [name, mine] : state()) {
    auto it = given.find(name);
    if (it == given.end()) throw std::runtime_error("optimizer state '" + name + "' missing from checkpoint");
    if (it->second.shape() != mine.shape())
      throw std::runtime_error("optimizer state '" + name + "' has shape " + it->second.shape().str() +
                               " in the checkpoint, expected " + mine.shape().str());
    Tensor dst = mine;
    dst.copy_(it->second);
  }
}

AdamW::AdamW(std::vector<ParamRef> params, AdamWOptions opt) : Optimizer(std::move(params)), opt_(opt) {
  for (const ParamRef& p : params_) {
    exp_avg_.push_back(Tensor::zeros(p.tensor.shape(), p.tensor.dtype(), p.tensor.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p.tensor.shape(), p.tensor.dtype(), p.tensor.device()));
  }
}

void AdamW::step(double lr, const std::vector<Tensor>& grads) {
  ++t_;
  NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = grads.at(i);
    if (!g.defined()) continue;
    OpAttrs a;
    a.alpha = lr;
    a.beta = opt_.beta1;
    a.p = opt_.beta2;
    a.eps = opt_.eps;
    a.scale = params_[i].decay ? opt_.weight_decay : 0.0;
    a.k = t_;
    Tensor p = params_[i].tensor.detach();
    dispatch(Op::adamw_step, {g.contiguous()}, {p, exp_avg_[i], exp_avg_sq_[i]}, a);
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.push_back({params_[i].name + "/exp_avg", exp_avg_[i]});
    s.push_back({params_[i].name + "/exp_avg_sq", exp_avg_sq_[i]});
  }
  return s;
}

SGD::SGD(std::vector<ParamRef> params, SGDOptions opt) : Optimizer(std::move(params)), opt_(opt) {
  if (opt_.momentum > 0)
    for (const ParamRef& p : params_)
      momentum_.push_back(Tensor::zeros(p.tensor.shape(), p.tensor.dtype(), p.tensor.device()));
}

void SGD::step(double lr, const std::vector<Tensor>& grads) {
  ++t_;
  NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = grads.at(i);
    if (!g.defined()) continue;
    OpAttrs a;
    a.alpha = lr;
    a.beta = opt_.momentum;
    a.scale = params_[i].decay ? opt_.weight_decay : 0.0;
    Tensor p = params_[i].tensor.detach();
    Tensor m = momentum_.empty() ? Tensor() : momentum_[i];
    dispatch(Op::sgd_step, {g.contiguous()}, {p, m}, a);
  }
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t i = 0; i < momentum_.size(); ++i) s.push_back({params_[i].name + "/momentum", momentum_[i]});
  return s;
}

void scale_in_place(const Tensor& g, double s) {
  NoGradGuard ng;
  Tensor out = g;
  if (!g.is_contiguous()) {
    out.copy_(mul_scalar(g, s));
    return;
  }
  OpAttrs a;
  a.alpha = s;
  dispatch(Op::mul_scalar, {g}, {out}, a);  // elementwise: reading and writing g is safe
}

double grad_norm(const std::vector<ParamRef>& params) {
  double total = 0;
  for (const ParamRef& p : params) {
    Tensor g = p.tensor.grad();
    if (g.defined()) total += sum_squares(g).item();  // f64, one pass, no copy
  }
  return std::sqrt(total);
}

void scale_grads(const std::vector<ParamRef>& params, double s) {
  for (const ParamRef& p : params) {
    Tensor g = p.tensor.grad();
    if (g.defined()) scale_in_place(g, s);
  }
}

double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm) {
  double norm = grad_norm(params);
  if (std::isfinite(norm) && max_norm > 0 && norm > max_norm) scale_grads(params, max_norm / (norm + 1e-6));
  return norm;
}

}  // namespace loom::optim
