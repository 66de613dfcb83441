// parity_util.h: shared by the parity suites (test_train_parity.cpp, test_pipeline.cpp): a
// deterministic token batch with some ignored targets, the count of counted targets, the
// one-process reference run, and the relative difference used against it.
#pragma once
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/transformer.h"
#include "optim/optimizer.h"
#include "runtime/ops.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace loom::parallel::testing {

// Step `step`'s batch [rows, seq]: ids and targets, one target in `ignore_every` set to -100.
inline std::pair<runtime::Tensor, runtime::Tensor> token_batch(int64_t step, int64_t vocab, int64_t rows, int64_t seq,
                                                               uint64_t ignore_every) {
  std::vector<int64_t> ids(static_cast<size_t>(rows * seq)), tg(static_cast<size_t>(rows * seq));
  for (size_t i = 0; i < ids.size(); ++i) {
    uint64_t h = runtime::mix64(uint64_t(step) * 1000003u + i);
    ids[i] = int64_t(h % uint64_t(vocab));
    tg[i] = (h >> 20) % ignore_every == 0 ? -100 : int64_t((h >> 32) % uint64_t(vocab));
  }
  return {runtime::Tensor::from_vector(ids, {rows, seq}), runtime::Tensor::from_vector(tg, {rows, seq})};
}

inline double count_valid(const runtime::Tensor& targets) {
  double n = 0;
  for (int64_t t : targets.to_vector<int64_t>()) n += t != -100;
  return n;
}

// Max abs difference relative to the largest reference value, floored at 1e-3: some gradients
// are exactly zero in exact arithmetic (a key bias shifts every score of a row equally) and
// are rounding noise on both sides.
// What one process records while training with plain AdamW: the reference of every layout.
struct Trace {
  std::vector<double> losses, norms;                 // norms only when clipping
  std::vector<std::map<std::string, runtime::Tensor>> grads;  // per step, full shapes
  std::map<std::string, runtime::Tensor> params;             // after the last step
};

struct ReferenceRun {
  int64_t steps = 3;
  double lr = 1e-2;
  optim::AdamWOptions adamw;
  bool decay_all = false;  // weight decay on every tensor, ignoring the model's no_decay marks
  double clip = 0;         // max gradient norm; 0: no clipping
};

// Trains m for run.steps steps on batch(step) -> (ids, targets), the loss being the token sum
// over the count of counted targets, as the layouts do.
template <class BatchFn> Trace reference_trace(models::TransformerLM& m, const ReferenceRun& run, BatchFn&& batch) {
  std::vector<optim::ParamRef> refs;
  for (auto& p : m.parameters()) refs.push_back({p.name, p.tensor, run.decay_all || !p.no_decay});
  optim::AdamW opt(refs, run.adamw);
  Trace tr;
  for (int64_t s = 0; s < run.steps; ++s) {
    opt.zero_grad();
    auto [ids, tg] = batch(s);
    runtime::Tensor loss = runtime::mul_scalar(m.loss_sum(m.forward(ids), tg), 1.0 / count_valid(tg));
    loss.backward();
    tr.losses.push_back(loss.item());
    std::map<std::string, runtime::Tensor> g;
    for (auto& p : m.parameters()) g[p.name] = p.tensor.grad().clone();
    tr.grads.push_back(g);
    if (run.clip > 0) tr.norms.push_back(optim::clip_grad_norm(refs, run.clip));
    opt.step(run.lr);
  }
  for (auto& p : m.parameters()) tr.params[p.name] = p.tensor.detach().clone();
  return tr;
}

inline double rel_diff(const runtime::Tensor& got, const runtime::Tensor& want) {
  std::vector<double> a = got.to_double_vector(), b = want.to_double_vector();
  double num = 0, den = 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

}  // namespace loom::parallel::testing
