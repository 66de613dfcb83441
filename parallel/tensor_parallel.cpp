// tensor_parallel.cpp: region entry/exit and the vocabulary-parallel embedding and loss.
#include "parallel/tensor_parallel.h"

#include <stdexcept>

#include "parallel/mappings.h"
#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::parallel {

using namespace runtime;

Tensor enter_region(const Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return x;
  return tp.sequence_parallel ? all_gather_from_sequence(x, tp.comm, kSequenceDim, true) : copy_to_region(x, tp.comm);
}

Tensor exit_region(const Tensor& partial, const TensorParallel& tp) {
  if (!tp.active()) return partial;
  return tp.sequence_parallel ? reduce_scatter_to_sequence(partial, tp.comm, kSequenceDim)
                              : reduce_from_region(partial, tp.comm);
}

Tensor sequence_chunk(const Tensor& x, const TensorParallel& tp) {
  if (!tp.sp()) return x;
  const int64_t T = x.size(kSequenceDim), n = tp.size();
  if (T % n)
    throw std::invalid_argument("sequence parallelism: sequence length " + std::to_string(T) +
                                " does not divide by tensor-parallel degree " + std::to_string(n));
  return narrow(x, kSequenceDim, tp.rank() * (T / n), T / n);
}

namespace {
// Host-side ownership of global ids: local index (0 where not owned) and the owned mask.
struct LocalIds {
  Tensor index;  // i64, same shape as ids
  Tensor owned;  // 1 where owned (and, for targets, not ignored), 0 elsewhere; dtype dt
  Tensor valid;  // 1 where not ignore_index; dtype dt
};
LocalIds localise(const Tensor& ids, Range vocab, DType dt, Device dev, int64_t ignore_index) {
  std::vector<int64_t> g = ids.to(Device::cpu()).to_vector<int64_t>();
  std::vector<int64_t> idx(g.size(), 0);
  std::vector<double> owned(g.size(), 0.0), valid(g.size(), 0.0);
  for (size_t i = 0; i < g.size(); ++i) {
    valid[i] = g[i] != ignore_index;
    if (g[i] >= vocab.begin && g[i] < vocab.end) {
      idx[i] = g[i] - vocab.begin;
      owned[i] = 1.0;
    }
  }
  LocalIds out;
  out.index = Tensor::from_vector(idx, ids.shape()).to(dev);
  out.owned = Tensor::from_vector(owned, ids.shape()).to(dt).to(dev);
  out.valid = Tensor::from_vector(valid, ids.shape()).to(dt).to(dev);
  return out;
}
}  // namespace

Tensor vocab_parallel_embedding(const Tensor& ids, const Tensor& weight, Range vocab, const TensorParallel& tp) {
  if (!tp.active()) return embedding(weight, ids);
  if (weight.size(0) != vocab.size())
    throw std::invalid_argument("vocab_parallel_embedding: weight has " + std::to_string(weight.size(0)) +
                                " rows for a vocabulary range of " + std::to_string(vocab.size()));
  LocalIds l = localise(ids, vocab, weight.dtype(), weight.device(), INT64_MIN);
  Tensor e = mul(embedding(weight, l.index), unsqueeze(l.owned, -1));
  return exit_region(e, tp);
}

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, Range vocab,
                                    const TensorParallel& tp, int64_t ignore_index) {
  if (!tp.active()) {
    CrossEntropyOptions ce;
    ce.reduction = Reduction::sum;
    ce.ignore_index = ignore_index;
    return cross_entropy(logits, targets, ce);
  }
  if (logits.dim() != 2 || targets.dim() != 1 || logits.size(0) != targets.size(0) || logits.size(1) != vocab.size())
    throw std::invalid_argument("vocab_parallel_cross_entropy: logits " + logits.shape().str() + " and targets " +
                                targets.shape().str() + " do not match a vocabulary range of " +
                                std::to_string(vocab.size()));
  Comm& comm = *tp.comm;
  Tensor x = logits.detach();
  LocalIds t = localise(targets, vocab, x.dtype(), x.device(), ignore_index);
  Tensor probs, loss;
  {
    NoGradGuard ng;
    Tensor m = max(x, 1, true).values;  // [N, 1]
    comm.all_reduce(m, ReduceOp::max);
    Tensor e = exp(sub(x, m));
    Tensor s = sum(e, {1}, true);
    comm.all_reduce(s);
    Tensor target_logit = mul(squeeze(gather(x, 1, unsqueeze(t.index, 1)), 1), t.owned);
    comm.all_reduce(target_logit);
    // loss_i = log(sum_j exp(x_ij - m_i)) + m_i - x_i,target over the whole vocabulary.
    Tensor per_token = sub(add(squeeze(log(s), 1), squeeze(m, 1)), target_logit);
    loss = sum(mul(per_token, t.valid));
    probs = div(e, s);
  }
  if (any_requires_grad({&logits})) {
    Tensor index = unsqueeze(t.index, 1), owned = unsqueeze(t.owned, 1), valid = unsqueeze(t.valid, 1);
    auto node = std::make_shared<LambdaNode>("VocabParallelCrossEntropyBackward",
                                             [probs, index, owned, valid](std::vector<Tensor>&& g) {
                                               if (!g[0].defined()) return std::vector<Tensor>{Tensor()};
                                               Tensor d = scatter_add(probs, 1, index, neg(owned));
                                               return std::vector<Tensor>{mul(mul(d, valid), g[0])};
                                             });
    record(node, {logits}, {&loss});
  }
  return loss;
}

}  // namespace loom::parallel
