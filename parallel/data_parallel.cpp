// data_parallel.cpp: buckets, gradient hooks and the ZeRO slices.
#include "parallel/data_parallel.h"

#include <chrono>
#include <stdexcept>

#include "parallel/shard.h"
#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::parallel {

using runtime::NoGradGuard;

struct GradSync::State {
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each parameter in buf
    int64_t numel = 0;
    Tensor buf;                    // the gradients, then (zero >= 1) the gathered parameters
    Tensor shard;                  // zero 2: this rank's reduced slice
    std::vector<int64_t> rows;     // elements per rank
    Range mine;
    int pending = 0;
    bool started = false;
    WorkPtr work;
  };
  std::vector<Tensor> params;
  std::vector<PartialSum> partial;
  CommPtr dp;
  DataParallelOptions opt;
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of;
  std::vector<int64_t> offset_of;
  std::vector<bool> ready;
  bool sync = false;

  bool communicates() const { return dp->size() > 1; }

  void start(Bucket& b) {
    b.started = true;
    if (!communicates()) return;
    if (opt.zero_stage == 2) b.work = dp->reduce_scatter_async(b.buf, b.shard, ReduceOp::sum, b.rows);
    else b.work = dp->all_reduce_async(b.buf, ReduceOp::sum);
  }

  const PartialSum* partial_of(size_t i) const {
    return i < partial.size() && partial[i].group && partial[i].group->size() > 1 ? &partial[i] : nullptr;
  }

  void on_grad(size_t i, const Tensor& g) {
    if (!sync) return;
    if (ready[i])
      throw std::logic_error("data parallel: the gradient of parameter " + std::to_string(i) +
                             " was accumulated twice in the synchronising backward pass; its bucket was already "
                             "reduced (a parameter used in two re-materialised regions?)");
    ready[i] = true;
    const PartialSum* ps = partial_of(i);
    if (ps && ps->after_backward) return;  // completed by finish()
    complete(i, g);
  }

  // Parameter i's gradient is final on this rank (up to the partial sum): sum it over its
  // partial group and hand it to its bucket.
  void complete(size_t i, const Tensor& g) {
    NoGradGuard ng;
    if (const PartialSum* ps = partial_of(i)) ps->group->all_reduce(g);
    if (!communicates()) return;
    Bucket& b = buckets[size_t(bucket_of[i])];
    b.buf.narrow(0, offset_of[i], g.numel()).copy_(g.reshape({g.numel()}));
    // ZeRO keeps only the reduced slices: the full local gradient is not needed any more.
    if (opt.zero_stage >= 1) params[i].zero_grad();
    if (--b.pending == 0 && opt.overlap) start(b);
    // MPI progresses a nonblocking collective only inside MPI calls: poll the ones in flight at
    // every gradient, so they advance while backward computes (no progress thread).
    for (Bucket& other : buckets)
      if (other.work && other.work->test()) {
        other.work->wait();
        other.work.reset();
      }
  }
};

GradSync::GradSync(std::vector<Tensor> params, CommPtr dp, DataParallelOptions opt, std::vector<PartialSum> partial)
    : s_(std::make_shared<State>()), opt_(opt), dp_(std::move(dp)) {
  if (opt.zero_stage < 0 || opt.zero_stage > 2)
    throw std::invalid_argument("data parallel: zero_stage must be 0, 1 or 2, got " + std::to_string(opt.zero_stage));
  if (!dp_) throw std::invalid_argument("data parallel: no communicator");
  State& s = *s_;
  s.params = std::move(params);
  s.partial = std::move(partial);
  s.dp = dp_;
  s.opt = opt;
  const size_t n = s.params.size();
  s.bucket_of.assign(n, -1);
  s.offset_of.assign(n, 0);
  s.ready.assign(n, false);
  if (s.communicates()) {
    // Reverse registration order: the order backward produces the gradients.
    for (size_t k = n; k-- > 0;) {
      const Tensor& p = s.params[k];
      if (!s.params.empty() && (p.dtype() != s.params[0].dtype() || p.device() != s.params[0].device()))
        throw std::invalid_argument("data parallel: parameters must share one dtype and device");
      if (s.buckets.empty() ||
          s.buckets.back().numel * int64_t(runtime::dtype_size(p.dtype())) >= opt.bucket_bytes)
        s.buckets.emplace_back();
      State::Bucket& b = s.buckets.back();
      s.bucket_of[k] = int(s.buckets.size() - 1);
      s.offset_of[k] = b.numel;
      b.params.push_back(k);
      b.offsets.push_back(b.numel);
      b.numel += p.numel();
    }
    const int size = dp_->size(), rank = dp_->rank();
    for (State::Bucket& b : s.buckets) {
      const Tensor& p0 = s.params[b.params[0]];
      b.buf = Tensor::zeros({b.numel}, p0.dtype(), p0.device());
      for (int r = 0; r < size; ++r) b.rows.push_back(split_range(b.numel, size, r).size());
      b.mine = split_range(b.numel, size, rank);
      if (opt.zero_stage == 2) b.shard = Tensor::zeros({b.mine.size()}, p0.dtype(), p0.device());
    }
  }
  std::weak_ptr<State> weak = s_;
  for (size_t i = 0; i < n; ++i)
    s.params[i].register_post_accumulate_hook([weak, i](const Tensor& g) {
      if (auto st = weak.lock()) st->on_grad(i, g);
    });
  // Owned slices that live in bucket buffers are fixed; the others are refreshed by finish().
  if (s.communicates() && opt.zero_stage >= 1)
    for (State::Bucket& b : s.buckets)
      for (size_t j = 0; j < b.params.size(); ++j) {
        const int64_t lo = std::max(b.offsets[j], b.mine.begin);
        const int64_t hi = std::min(b.offsets[j] + s.params[b.params[j]].numel(), b.mine.end);
        if (hi <= lo) continue;
        Tensor g = opt.zero_stage == 2 ? b.shard.narrow(0, lo - b.mine.begin, hi - lo) : b.buf.narrow(0, lo, hi - lo);
        owned_.push_back({b.params[j], lo - b.offsets[j], hi - b.offsets[j], g});
      }
}

GradSync::~GradSync() {
  for (State::Bucket& b : s_->buckets)
    if (b.work) b.work->wait();
}

int GradSync::num_buckets() const { return int(s_->buckets.size()); }

void GradSync::set_sync(bool on) {
  State& s = *s_;
  s.sync = on;
  if (!on) return;
  std::fill(s.ready.begin(), s.ready.end(), false);
  for (State::Bucket& b : s.buckets) {
    b.pending = int(b.params.size());
    b.started = false;
  }
}

double GradSync::finish() {
  State& s = *s_;
  NoGradGuard ng;
  auto t0 = std::chrono::steady_clock::now();
  started_early_ = 0;
  for (const State::Bucket& b : s.buckets) started_early_ += b.started;
  auto grad_or_zeros = [&](size_t i) {
    if (!s.params[i].grad().defined())
      s.params[i].set_grad(Tensor::zeros(s.params[i].shape(), s.params[i].dtype(), s.params[i].device()));
    return s.params[i].grad();
  };
  for (size_t i = 0; i < s.params.size(); ++i)
    if (!s.ready[i] && s.sync) {
      // No gradient reached this parameter in the synchronising pass: it contributes zeros
      // (and still takes part in the collectives every rank runs).
      s.on_grad(i, grad_or_zeros(i));
    }
  // Partial sums deferred to after backward, in parameter order on every member.
  for (size_t i = 0; i < s.params.size(); ++i)
    if (const PartialSum* ps = s.partial_of(i); ps && ps->after_backward && s.sync) s.complete(i, grad_or_zeros(i));
  for (State::Bucket& b : s.buckets)
    if (!b.started) s.start(b);
  for (State::Bucket& b : s.buckets)
    if (b.work) {
      b.work->wait();
      b.work.reset();
    }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.sync = false;
  if (!s.communicates() || opt_.zero_stage == 0) {
    owned_.clear();
    for (size_t i = 0; i < s.params.size(); ++i) {
      if (s.communicates()) {
        State::Bucket& b = s.buckets[size_t(s.bucket_of[i])];
        s.params[i].set_grad(b.buf.narrow(0, s.offset_of[i], s.params[i].numel()).view(s.params[i].shape()));
      }
      Tensor g = s.params[i].grad();
      owned_.push_back({i, 0, s.params[i].numel(), g.defined() ? g.reshape({g.numel()}) : Tensor()});
    }
  }
  return waited;
}

void GradSync::all_gather_params() {
  State& s = *s_;
  if (!s.communicates() || opt_.zero_stage == 0) return;
  NoGradGuard ng;
  std::vector<Tensor> sends(s.buckets.size());
  for (size_t k = 0; k < s.buckets.size(); ++k) {
    State::Bucket& b = s.buckets[k];
    sends[k] = Tensor::empty({b.mine.size()}, b.buf.dtype(), b.buf.device());
    for (size_t j = 0; j < b.params.size(); ++j) {
      const int64_t lo = std::max(b.offsets[j], b.mine.begin);
      const int64_t hi = std::min(b.offsets[j] + s.params[b.params[j]].numel(), b.mine.end);
      if (hi <= lo) continue;
      Tensor flat = s.params[b.params[j]].detach().view({-1});
      sends[k].narrow(0, lo - b.mine.begin, hi - lo).copy_(flat.narrow(0, lo - b.offsets[j], hi - lo));
    }
    b.work = dp_->all_gather_async(sends[k], b.buf, b.rows);
  }
  for (State::Bucket& b : s.buckets) {
    b.work->wait();
    b.work.reset();
    for (size_t j = 0; j < b.params.size(); ++j) {
      Tensor p = s.params[b.params[j]].detach();
      p.view({-1}).copy_(b.buf.narrow(0, b.offsets[j], p.numel()));
    }
  }
}

}  // namespace loom::parallel
