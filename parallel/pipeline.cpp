// pipeline.cpp: the executor.
#include "parallel/pipeline.h"

#include <chrono>
#include <map>
#include <stdexcept>

#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::parallel {

using Clock = std::chrono::steady_clock;

Recompute recompute_from_name(const std::string& name) {
  if (name == "never") return Recompute::never;
  if (name == "always") return Recompute::always;
  if (name == "except_last") return Recompute::except_last;
  throw std::invalid_argument("unknown re-materialisation mode '" + name + "' (expected never, always or except_last)");
}

PipelineExecutor::PipelineExecutor(CommPtr pp, PipeSchedule schedule, int micro_batches, Recompute recompute)
    : pp_(std::move(pp)), micro_batches_(micro_batches), recompute_(recompute) {
  if (micro_batches_ > Comm::kMaxTag / 2)
    throw std::invalid_argument("pipeline: at most " + std::to_string(Comm::kMaxTag / 2) + " micro-batches");
  tasks_ = pipeline_tasks(schedule, pp_->size(), micro_batches_, pp_->rank());
}

PipelineStats PipelineExecutor::run(const StageFns& fns) {
  PipelineStats st;
  const auto t0 = Clock::now();
  struct InFlight {
    Tensor input;   // the stage input (a leaf requiring grad, except on the first stage)
    Tensor output;  // the graph's output, undefined when it will be recomputed
    bool empty = false;
  };
  std::map<int, InFlight> live;
  std::vector<std::pair<WorkPtr, Tensor>> sends;  // kept alive until complete
  int last_forward = -1;
  for (const PipeTask& t : tasks_)
    if (t.kind == PipeTask::forward) last_forward = t.micro;
  size_t last_backward = 0;
  for (size_t k = 0; k < tasks_.size(); ++k)
    if (tasks_[k].kind == PipeTask::backward) last_backward = k;

  auto receive = [&](const runtime::Dims& shape, int src, int tag) {
    Tensor buf = Tensor::empty(shape, fns.dtype);
    const auto w0 = Clock::now();
    pp_->recv(buf, src, tag);
    st.blocked_s += std::chrono::duration<double>(Clock::now() - w0).count();
    return buf;
  };
  auto send = [&](const Tensor& x, int dst, int tag) {
    Tensor c = x.contiguous();
    sends.push_back({pp_->send_async(c, dst, tag), c});
  };

  for (size_t k = 0; k < tasks_.size(); ++k) {
    const PipeTask& t = tasks_[k];
    if (t.kind == PipeTask::forward) {
      InFlight f;
      if (first()) {
        f.input = fns.first_input(t.micro);
        if (!f.input.defined()) {  // an empty micro-batch (single stage only)
          f.empty = true;
          live[t.micro] = std::move(f);
          continue;
        }
      } else {
        f.input = receive(fns.activation_shape(t.micro), stage() - 1, 2 * t.micro);
        f.input.set_requires_grad(true);
      }
      const bool keep = recompute_ == Recompute::never ||
                        (recompute_ == Recompute::except_last && t.micro == last_forward);
      Tensor out;
      if (keep) {
        out = fns.forward(t.micro, f.input);
        f.output = out;
      } else {
        runtime::NoGradGuard ng;
        out = fns.forward(t.micro, f.input);
      }
      if (last()) st.losses += out.item();
      else send(out.detach(), stage() + 1, 2 * t.micro);
      live[t.micro] = std::move(f);
      st.peak_in_flight = std::max<int64_t>(st.peak_in_flight, int64_t(live.size()));
    } else {
      auto it = live.find(t.micro);
      if (it == live.end()) throw std::logic_error("pipeline: backward of micro-batch " + std::to_string(t.micro) + " before its forward");
      InFlight f = std::move(it->second);
      live.erase(it);
      if (fns.set_sync) fns.set_sync(k == last_backward);
      if (f.empty) continue;
      Tensor out = f.output.defined() ? f.output : fns.forward(t.micro, f.input);  // recompute
      if (last()) {
        out.backward();
      } else {
        Tensor g = receive(out.shape(), stage() + 1, 2 * t.micro + 1);
        out.backward(g);
      }
      if (!first()) {
        Tensor g = f.input.grad();
        if (!g.defined()) g = Tensor::zeros(f.input.shape(), fns.dtype);
        send(g, stage() - 1, 2 * t.micro + 1);
      }
    }
    // Retire completed sends so their buffers go back early.
    for (auto& s : sends)
      if (s.first && s.first->test()) {
        s.first->wait();
        s.first.reset();
        s.second = Tensor();
      }
  }
  for (auto& s : sends)
    if (s.first) s.first->wait();
  st.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return st;
}

double PipelineExecutor::run_forward(const StageFns& fns, int micro_batches) {
  runtime::NoGradGuard ng;
  double losses = 0;
  std::vector<std::pair<WorkPtr, Tensor>> sends;
  for (int i = 0; i < micro_batches; ++i) {
    Tensor input;
    if (first()) {
      input = fns.first_input(i);
      if (!input.defined()) continue;  // empty micro-batch (single stage)
    } else {
      input = Tensor::empty(fns.activation_shape(i), fns.dtype);
      pp_->recv(input, stage() - 1, 2 * i);
    }
    Tensor out = fns.forward(i, input);
    if (last()) {
      losses += out.item();
    } else {
      Tensor c = out.contiguous();
      sends.push_back({pp_->send_async(c, stage() + 1, 2 * i), c});
    }
  }
  for (auto& s : sends) s.first->wait();
  return losses;
}

}  // namespace loom::parallel
