// distributed_optimizer.cpp: sync, norm, clipping and the sharded update.
#include "optim/distributed_optimizer.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::optim {

using namespace runtime;

DistributedOptimizer::DistributedOptimizer(std::vector<ShardedParam> params, const Factory& make,
                                           parallel::DataParallelOptions opt, ParallelGroups groups)
    : params_(std::move(params)), opt_(opt), dp_(std::move(groups.dp)), tp_(std::move(groups.tp)), pp_(std::move(groups.pp)) {
  if (!dp_) throw std::invalid_argument("DistributedOptimizer: no data-parallel group");
  const bool tp_active = tp_ && tp_->size() > 1;
  std::vector<Tensor> leaves;
  std::vector<parallel::PartialSum> partial;
  for (const ShardedParam& p : params_) {
    leaves.push_back(p.tensor);
    if (p.tied) partial.push_back({p.tied, true});
    else if (tp_active && groups.sequence_parallel && p.shard.is_whole()) partial.push_back({tp_, false});
    else partial.push_back({});
  }
  sync_ = std::make_unique<parallel::GradSync>(leaves, dp_, opt_, partial);
  const bool sharded = dp_->size() > 1 && opt_.zero_stage >= 1;
  if (sharded) slices_ = sync_->owned();
  else
    for (size_t i = 0; i < params_.size(); ++i) slices_.push_back({i, 0, params_[i].tensor.numel(), Tensor()});
  std::vector<ParamRef> refs;
  for (const parallel::GradSync::Slice& s : slices_) {
    const ShardedParam& p = params_[s.param];
    Tensor flat = p.tensor.detach().view({p.tensor.numel()});
    // Whole slices keep the parameter's own view so the state has its shape.
    Tensor t = s.begin == 0 && s.end == p.tensor.numel() ? p.tensor.detach() : flat.narrow(0, s.begin, s.end - s.begin);
    refs.push_back({p.name, t, p.decay});
  }
  inner_ = make(std::move(refs));
}

void DistributedOptimizer::zero_grad() {
  for (ShardedParam& p : params_) p.tensor.zero_grad();
}

bool DistributedOptimizer::counts_in_norm(size_t i) const {
  // Replicated over tp: counted by tp rank 0 only; a tied copy only by its primary.
  if (!params_[i].primary) return false;
  return params_[i].shard.is_whole() ? (!tp_ || tp_->rank() == 0) : true;
}

double DistributedOptimizer::grad_norm() const {
  NoGradGuard ng;
  double local = 0;
  for (const parallel::GradSync::Slice& s : sync_->owned()) {
    if (!s.grad.defined() || !counts_in_norm(s.param)) continue;
    local += sum_squares(s.grad).item();
  }
  Tensor total = Tensor::scalar(local, DType::f64);
  if (dp_->size() > 1 && opt_.zero_stage >= 1) dp_->all_reduce(total);
  if (tp_ && tp_->size() > 1) tp_->all_reduce(total);
  if (pp_ && pp_->size() > 1) pp_->all_reduce(total);
  return std::sqrt(total.item());
}

double DistributedOptimizer::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  if (std::isfinite(norm) && max_norm > 0 && norm > max_norm) {
    const double s = max_norm / (norm + 1e-6);
    for (const parallel::GradSync::Slice& sl : sync_->owned())
      if (sl.grad.defined()) scale_in_place(sl.grad, s);
  }
  return norm;
}

void DistributedOptimizer::step(double lr) {
  const std::vector<parallel::GradSync::Slice>& owned = sync_->owned();
  if (owned.size() != slices_.size())
    throw std::logic_error("DistributedOptimizer::step: gradients were not synchronised (call finish_backward)");
  std::vector<Tensor> grads;
  for (size_t i = 0; i < owned.size(); ++i) {
    const Tensor& g = owned[i].grad;
    grads.push_back(g.defined() ? g.view(inner_->params()[i].tensor.shape()) : Tensor());
  }
  inner_->step(lr, grads);
  sync_->all_gather_params();
}

std::vector<parallel::Piece> DistributedOptimizer::state_pieces() const {
  // Writers: for ZeRO every data-parallel rank its slices, otherwise data-parallel rank 0;
  // parameters replicated over tp only on tp rank 0.
  std::vector<parallel::Piece> out;
  const bool sharded = dp_->size() > 1 && opt_.zero_stage >= 1;
  if (!sharded && dp_->rank() != 0) return out;
  std::map<std::string, size_t> slice_of;
  for (size_t i = 0; i < slices_.size(); ++i) slice_of[params_[slices_[i].param].name] = i;
  for (const auto& [name, t] : inner_->state()) {
    const std::string pname = name.substr(0, name.rfind('/'));
    const parallel::GradSync::Slice& s = slices_[slice_of.at(pname)];
    const ShardedParam& p = params_[s.param];
    if (!p.primary || (p.shard.is_whole() && tp_ && tp_->rank() != 0)) continue;
    out.push_back({name, p.shard.full, p.shard.runs(s.begin, s.end), t.contiguous().view({t.numel()})});
  }
  return out;
}

void DistributedOptimizer::load_state(const std::function<Tensor(const std::string&)>& full) {
  NoGradGuard ng;
  std::map<std::string, size_t> slice_of;
  for (size_t i = 0; i < slices_.size(); ++i) slice_of[params_[slices_[i].param].name] = i;
  for (auto& [name, t] : inner_->state()) {
    const std::string pname = name.substr(0, name.rfind('/'));
    const parallel::GradSync::Slice& s = slices_[slice_of.at(pname)];
    const ShardedParam& p = params_[s.param];
    Tensor f = full(name);
    if (!f.defined()) throw std::runtime_error("optimizer state '" + name + "' missing from checkpoint");
    if (f.shape() != p.shard.full)
      throw std::runtime_error("optimizer state '" + name + "' has shape " + f.shape().str() +
                               " in the checkpoint, the parameter's full shape is " + p.shard.full.str());
    Tensor dst = t;
    dst.view({dst.numel()}).copy_(parallel::take_local(f.to(dst.dtype()), p.shard, s.begin, s.end));
  }
}

}  // namespace loom::optim
