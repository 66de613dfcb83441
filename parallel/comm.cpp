// comm.cpp: the backend-independent half of Comm (argument checks, so every backend reports
// the same errors) and the one-rank backend.
#include "parallel/comm.h"

#include <cmath>
#include <cstdlib>
#include <deque>
#include <numeric>
#include <stdexcept>

#include "runtime/autograd.h"

namespace loom::parallel {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
    case ReduceOp::min:
      return "min";
  }
  return "?";
}

double default_comm_timeout() {
  const char* s = std::getenv("LOOM_COMM_TIMEOUT");
  if (!s || !*s) return 600.0;
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || *end != '\0' || !(v > 0) || !std::isfinite(v))
    throw std::invalid_argument(std::string("LOOM_COMM_TIMEOUT: expected a positive number of seconds, got '") + s +
                                "'");
  return v;
}

int64_t row_numel(const Tensor& t) {
  int64_t n = 1;
  for (int d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

Comm::Comm(int rank, int size, std::string name, std::vector<int> world_ranks)
    : rank_(rank),
      size_(size),
      name_(std::move(name)),
      world_ranks_(std::move(world_ranks)),
      timeout_s_(default_comm_timeout()) {}

void Comm::set_timeout(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds))
    throw std::invalid_argument("Comm::set_timeout on group " + name_ + ": needs a positive number of seconds");
  timeout_s_ = seconds;
}

std::string Comm::where(const char* op) const { return std::string(op) + " on group " + name_; }

void Comm::check_tensor(const Tensor& t, const char* op, const char* what, bool output) const {
  if (!t.defined()) throw std::invalid_argument(where(op) + ": " + what + " is an undefined tensor");
  if (!accepts(t.device()))
    throw std::invalid_argument(where(op) + ": the " + backend() + " backend cannot take " + what + " on " +
                                t.device().str());
  if (output && !t.is_contiguous())
    throw std::invalid_argument(where(op) + ": " + what + " must be contiguous (it is written in place)");
}

std::vector<int64_t> Comm::check_rows(const std::vector<int64_t>& rows, const char* op, const char* what) const {
  if (int(rows.size()) != size_)
    throw std::invalid_argument(where(op) + ": " + what + " has " + std::to_string(rows.size()) +
                                " entries, expected one per rank (" + std::to_string(size_) + ")");
  for (int64_t r : rows)
    if (r < 0) throw std::invalid_argument(where(op) + ": " + what + " has a negative row count");
  return rows;
}

namespace {
// Blocking callers may get nullptr (complete); async callers always get a Work.
WorkPtr ensure_unless(bool blocking, WorkPtr w) { return blocking || w ? std::move(w) : std::make_unique<DoneWork>(); }
}  // namespace

WorkPtr Comm::ensure(WorkPtr w) { return ensure_unless(false, std::move(w)); }

namespace {
std::string rows_str(const Tensor& t) { return std::to_string(t.dim() ? t.size(0) : 1); }
int64_t total(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t(0)); }
}  // namespace

WorkPtr Comm::post_all_reduce(const Tensor& x, ReduceOp op, bool blocking) {
  const char* name = "all_reduce";
  check_tensor(x, name, "x", true);
  if (op == ReduceOp::avg && !runtime::is_floating(x.dtype()))
    throw std::invalid_argument(where(name) + ": avg needs a floating dtype, got " + dtype_name(x.dtype()));
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_all_reduce(x, op, blocking));
}

WorkPtr Comm::post_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                                  bool blocking) {
  const char* name = "reduce_scatter";
  check_tensor(in, name, "in", false);
  check_tensor(out, name, "out", true);
  if (in.dim() < 1 || out.dim() < 1) throw std::invalid_argument(where(name) + ": in and out need a dim 0 to split");
  if (in.dtype() != out.dtype() || row_numel(in) != row_numel(out))
    throw std::invalid_argument(where(name) + ": in " + in.shape().str() + " " + dtype_name(in.dtype()) + " and out " +
                                out.shape().str() + " " + dtype_name(out.dtype()) + " differ in dtype or row size");
  if (op == ReduceOp::avg && !runtime::is_floating(in.dtype()))
    throw std::invalid_argument(where(name) + ": avg needs a floating dtype, got " + dtype_name(in.dtype()));
  bool equal = rows.empty();
  std::vector<int64_t> r = equal ? std::vector<int64_t>(size_, out.size(0)) : check_rows(rows, name, "rows");
  if (total(r) != in.size(0) || r[rank_] != out.size(0))
    throw std::invalid_argument(where(name) + ": in has " + rows_str(in) + " rows and out " + rows_str(out) +
                                "; expected in = sum of the ranks' rows (" + std::to_string(total(r)) +
                                ") and out = this rank's rows (" + std::to_string(r[rank_]) + ")");
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_reduce_scatter(in.contiguous(), out, op, r, equal, blocking));
}

WorkPtr Comm::post_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool blocking) {
  const char* name = "all_gather";
  check_tensor(in, name, "in", false);
  check_tensor(out, name, "out", true);
  if (in.dim() < 1 || out.dim() < 1)
    throw std::invalid_argument(where(name) + ": in and out need a dim 0 to concatenate");
  if (in.dtype() != out.dtype() || row_numel(in) != row_numel(out))
    throw std::invalid_argument(where(name) + ": in " + in.shape().str() + " " + dtype_name(in.dtype()) + " and out " +
                                out.shape().str() + " " + dtype_name(out.dtype()) + " differ in dtype or row size");
  bool equal = rows.empty();
  std::vector<int64_t> r = equal ? std::vector<int64_t>(size_, in.size(0)) : check_rows(rows, name, "rows");
  if (total(r) != out.size(0) || r[rank_] != in.size(0))
    throw std::invalid_argument(where(name) + ": in has " + rows_str(in) + " rows and out " + rows_str(out) +
                                "; expected in = this rank's rows (" + std::to_string(r[rank_]) +
                                ") and out = sum of the ranks' rows (" + std::to_string(total(r)) + ")");
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_all_gather(in.contiguous(), out, r, equal, blocking));
}

WorkPtr Comm::post_broadcast(const Tensor& x, int root, bool blocking) {
  const char* name = "broadcast";
  check_tensor(x, name, "x", true);
  if (root < 0 || root >= size_)
    throw std::invalid_argument(where(name) + ": root " + std::to_string(root) + " is not a rank of the group (size " +
                                std::to_string(size_) + ")");
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_broadcast(x, root, blocking));
}

WorkPtr Comm::post_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                              const std::vector<int64_t>& recv_rows, bool blocking) {
  const char* name = "all_to_all";
  check_tensor(in, name, "in", false);
  check_tensor(out, name, "out", true);
  if (in.dim() < 1 || out.dim() < 1) throw std::invalid_argument(where(name) + ": in and out need a dim 0 to split");
  if (in.dtype() != out.dtype() || row_numel(in) != row_numel(out))
    throw std::invalid_argument(where(name) + ": in " + in.shape().str() + " " + dtype_name(in.dtype()) + " and out " +
                                out.shape().str() + " " + dtype_name(out.dtype()) + " differ in dtype or row size");
  if (send_rows.empty() != recv_rows.empty())
    throw std::invalid_argument(where(name) + ": give both send_rows and recv_rows, or neither (equal split)");
  bool equal = send_rows.empty();
  std::vector<int64_t> s, r;
  if (equal) {
    if (in.size(0) % size_ != 0 || out.size(0) != in.size(0))
      throw std::invalid_argument(where(name) + ": the equal split needs in and out of the same rows, a multiple of " +
                                  std::to_string(size_) + "; got " + rows_str(in) + " and " + rows_str(out));
    s = r = std::vector<int64_t>(size_, in.size(0) / size_);
  } else {
    s = check_rows(send_rows, name, "send_rows");
    r = check_rows(recv_rows, name, "recv_rows");
    if (total(s) != in.size(0) || total(r) != out.size(0))
      throw std::invalid_argument(where(name) + ": in has " + rows_str(in) + " rows and out " + rows_str(out) +
                                  "; send_rows sum to " + std::to_string(total(s)) + " and recv_rows to " +
                                  std::to_string(total(r)));
  }
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_all_to_all(in.contiguous(), out, s, r, equal, blocking));
}

void Comm::check_peer(const char* op, const char* role, int peer, int tag) const {
  if (peer < 0 || peer >= size_)
    throw std::invalid_argument(where(op) + ": " + role + " " + std::to_string(peer) + " is not a rank of the group");
  if (tag < 0 || tag >= kMaxTag)
    throw std::invalid_argument(where(op) + ": tag " + std::to_string(tag) + " outside [0, " +
                                std::to_string(kMaxTag) + ")");
}

WorkPtr Comm::post_send(const Tensor& x, int dst, int tag, bool blocking) {
  const char* name = "send";
  check_tensor(x, name, "x", false);
  check_peer(name, "destination", dst, tag);
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_send(x.contiguous(), dst, tag, blocking));
}

WorkPtr Comm::post_recv(const Tensor& x, int src, int tag, bool blocking) {
  const char* name = "recv";
  check_tensor(x, name, "x", true);
  check_peer(name, "source", src, tag);
  runtime::NoGradGuard ng;
  return ensure_unless(blocking, do_recv(x, src, tag, blocking));
}

// ---- the one-rank group ---------------------------------------------------------------------
namespace {

// Copies src into dst, which has the same number of elements (shapes may differ).
void copy_rows(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  dst.view(src.shape()).copy_(src);
}

class SelfComm final : public Comm {
 public:
  SelfComm(int world_rank, const std::string& name) : Comm(0, 1, name, {world_rank}) {}
  const char* backend() const override { return "self"; }
  CommPtr split(int color, int key, const std::string& name) override {
    if (color < 0) return nullptr;
    auto c = make_self_comm(world_rank(), name);
    c->set_timeout(timeout());
    return c;
  }

 protected:
  bool accepts(Device) const override { return true; }
  WorkPtr do_all_reduce(const Tensor&, ReduceOp, bool) override { return done(); }
  WorkPtr do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp, const std::vector<int64_t>&, bool,
                            bool) override {
    copy_rows(out, in);
    return done();
  }
  WorkPtr do_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>&, bool, bool) override {
    copy_rows(out, in);
    return done();
  }
  WorkPtr do_broadcast(const Tensor&, int, bool) override { return done(); }
  WorkPtr do_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>&, const std::vector<int64_t>&,
                        bool, bool) override {
    copy_rows(out, in);
    return done();
  }
  WorkPtr do_barrier(bool) override { return done(); }
  WorkPtr do_send(const Tensor& x, int, int tag, bool) override {
    mailbox_.push_back({tag, x.clone()});
    return done();
  }
  WorkPtr do_recv(const Tensor& x, int, int tag, bool) override {
    for (auto it = mailbox_.begin(); it != mailbox_.end(); ++it) {
      if (it->first != tag) continue;
      if (it->second.numel() != x.numel() || it->second.dtype() != x.dtype())
        throw std::invalid_argument(where("recv") + ": the message sent has " + it->second.shape().str() + " " +
                                    dtype_name(it->second.dtype()) + ", the buffer " + x.shape().str() + " " +
                                    dtype_name(x.dtype()));
      copy_rows(x, it->second);
      mailbox_.erase(it);
      return done();
    }
    throw std::invalid_argument(where("recv") + ": no message with tag " + std::to_string(tag) +
                                " (a group of one rank receives only what it sent itself before)");
  }

 private:
  static WorkPtr done() { return std::make_unique<DoneWork>(); }
  std::deque<std::pair<int, Tensor>> mailbox_;
};

}  // namespace

CommPtr make_self_comm(int world_rank, const std::string& name) { return std::make_shared<SelfComm>(world_rank, name); }

}  // namespace loom::parallel
