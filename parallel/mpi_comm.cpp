// mpi_comm.cpp: the MPI backend for CPU tensors. An async operation is MPI's nonblocking form
// (MPI_Iallreduce, MPI_Ialltoallv, MPI_Isend, ...) in an MpiWork whose wait() polls it under
// the group's deadline. A blocking call runs MPI's blocking form under the watchdog's
// deadline, when MPI granted MPI_THREAD_MULTIPLE (otherwise it is the async form and wait()):
// it then matches plain MPI_Allreduce, while Open MPI 4.1's nonblocking all-reduce reaches
// 0.3-0.8x its bandwidth at 2 ranks (bench/bench_comm.cpp).
// bf16/f16 travel as 2-byte MPI types; their reductions are user ops computing in f32 and
// rounding each partial result back (as NCCL does).
#include "parallel/mpi_comm.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <stdexcept>

#include "runtime/autograd.h"
#include "runtime/ops.h"

namespace loom::parallel {
namespace {

using runtime::bf16;
using runtime::f16;

// ---- 16-bit floats --------------------------------------------------------------------------
struct HalfTypes {
  MPI_Datatype bf16 = MPI_DATATYPE_NULL, f16 = MPI_DATATYPE_NULL;
  MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL, min = MPI_OP_NULL;
};
HalfTypes& half_types();

template <class H, class Fn>
void half_reduce(void* in, void* inout, int n, Fn f) {
  const H* a = static_cast<const H*>(in);
  H* b = static_cast<H*>(inout);
  for (int i = 0; i < n; ++i) {
    float x, y;
    if constexpr (std::is_same_v<H, bf16>) {
      x = runtime::bf16_to_float(a[i]), y = runtime::bf16_to_float(b[i]);
      b[i] = runtime::float_to_bf16(f(x, y));
    } else {
      x = runtime::f16_to_float(a[i]), y = runtime::f16_to_float(b[i]);
      b[i] = runtime::float_to_f16(f(x, y));
    }
  }
}
template <class Fn>
void half_dispatch(void* in, void* inout, int* len, MPI_Datatype* dt, Fn f) {
  if (*dt == half_types().bf16)
    half_reduce<bf16>(in, inout, *len, f);
  else
    half_reduce<f16>(in, inout, *len, f);
}
void half_sum(void* in, void* io, int* n, MPI_Datatype* dt) {
  half_dispatch(in, io, n, dt, [](float x, float y) { return x + y; });
}
void half_max(void* in, void* io, int* n, MPI_Datatype* dt) {
  half_dispatch(in, io, n, dt, [](float x, float y) { return x != x || x > y ? x : y; });  // NaN wins
}
void half_min(void* in, void* io, int* n, MPI_Datatype* dt) {
  half_dispatch(in, io, n, dt, [](float x, float y) { return x != x || x < y ? x : y; });
}

HalfTypes& half_types() {
  static HalfTypes h = [] {
    HalfTypes t;
    MPI_Type_contiguous(2, MPI_BYTE, &t.bf16);
    MPI_Type_commit(&t.bf16);
    MPI_Type_contiguous(2, MPI_BYTE, &t.f16);
    MPI_Type_commit(&t.f16);
    MPI_Op_create(half_sum, 1, &t.sum);
    MPI_Op_create(half_max, 1, &t.max);
    MPI_Op_create(half_min, 1, &t.min);
    return t;
  }();
  return h;
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
    case DType::bf16:
      return half_types().bf16;
    case DType::f16:
      return half_types().f16;
  }
  throw std::invalid_argument("MPI backend: unknown dtype");
}

MPI_Op mpi_op(ReduceOp op, DType t) {
  bool half = runtime::is_half(t);
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return half ? half_types().sum : MPI_SUM;
    case ReduceOp::max:
      return half ? half_types().max : MPI_MAX;
    case ReduceOp::min:
      return half ? half_types().min : MPI_MIN;
  }
  return MPI_SUM;
}

// x /= n, exactly rounded (avg = sum, then one division).
void divide_(const Tensor& x, int n) {
  runtime::NoGradGuard ng;
  Tensor y = x;
  y.copy_(runtime::div(x, Tensor::scalar(n, x.dtype(), x.device())));
}

constexpr int64_t kChunk = int64_t(1) << 30;  // elements per MPI call of all_reduce/broadcast

char* bytes(const Tensor& t) { return static_cast<char*>(t.raw_data()); }

// An operation in flight: its requests, the buffers and count arrays MPI reads until
// completion, and what to do once complete (avg's division, recv's size check).
class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiComm> comm, const char* op, int64_t seq, int peer) : comm_(std::move(comm)) {
    info_.group = comm_.get();
    info_.op = op;
    info_.seq = seq;
    info_.peer = peer;
    info_.timeout_s = comm_->timeout();
  }
  ~MpiWork() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (done_ || fin) return;
    try {
      wait();
    } catch (const std::exception& e) {  // no one is left to receive it
      std::fprintf(stderr, "loom: %s (in a Work destroyed without wait())\n", e.what());
    }
  }
  bool test() override {
    if (done_) return true;
    statuses.resize(reqs.size());
    int flag = 0;
    MPI_Testall(int(reqs.size()), reqs.data(), &flag, statuses.data());
    if (flag) {
      done_ = true;
      std::vector<Tensor>().swap(keep);
      if (finish) finish(statuses);
    }
    return done_;
  }
  void wait() override {
    if (!done_) detail::wait_until([this] { return test(); }, info_);
  }
  std::vector<MPI_Request> reqs;
  std::vector<MPI_Status> statuses;
  std::vector<Tensor> keep;
  std::vector<int> counts, displs, counts2, displs2;
  std::function<void(const std::vector<MPI_Status>&)> finish;

  MPI_Request* next() { return &reqs.emplace_back(MPI_REQUEST_NULL); }

 private:
  std::shared_ptr<MpiComm> comm_;
  detail::WaitInfo info_;
  bool done_ = false;
};

// Runs `call` (MPI's blocking form) under the watchdog's deadline when the caller waits at
// once and MPI allows it; false: the caller posts the nonblocking form instead.
template <class Fn>
bool run_blocking(bool blocking, MpiComm* c, const char* op, int64_t seq, int peer, Fn&& call) {
  if (!blocking || !detail::blocking_calls_allowed()) return false;
  detail::WaitInfo info;
  info.group = c;
  info.op = op;
  info.seq = seq;
  info.peer = peer;
  info.timeout_s = c->timeout();
  detail::BlockingOp guard(info);
  call();
  return true;
}

int comm_rank(MPI_Comm c) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}
int comm_size(MPI_Comm c) {
  int n = 0;
  MPI_Comm_size(c, &n);
  return n;
}
std::vector<int> world_ranks_of(MPI_Comm c) {
  const int n = comm_size(c);
  MPI_Group g, wg;
  MPI_Comm_group(c, &g);
  MPI_Comm_group(MPI_COMM_WORLD, &wg);
  std::vector<int> local(n), world(n);
  for (int i = 0; i < n; ++i) local[i] = i;
  MPI_Group_translate_ranks(g, n, local.data(), wg, world.data());
  MPI_Group_free(&g);
  MPI_Group_free(&wg);
  return world;
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm, const std::string& name, double timeout_s)
    : Comm(comm_rank(comm), comm_size(comm), name, world_ranks_of(comm)), comm_(comm) {
  set_timeout(timeout_s);
  detail::register_comm(this);
}

MpiComm::~MpiComm() {
  detail::unregister_comm(this);
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
}

int MpiComm::add_channel(const std::atomic<int64_t>* counter) {
  std::lock_guard lk(channels_mu_);
  channels_.push_back(counter);
  return int(channels_.size());
}

int64_t MpiComm::channel_value(int channel) const {
  if (channel == 0) return entered_.load();
  std::lock_guard lk(channels_mu_);
  if (channel < 0 || channel > int(channels_.size())) return -1;
  return channels_[channel - 1]->load();
}

CommPtr MpiComm::split(int color, int key, const std::string& name) {
  ++entered_;
  MPI_Comm nc = MPI_COMM_NULL;
  {
    detail::BlockingGuard guard("split of group " + this->name() + " into " + name, timeout());
    MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &nc);
  }
  if (nc == MPI_COMM_NULL) return nullptr;
  return std::make_shared<MpiComm>(nc, name, timeout());
}

// The argument checks in Comm already ran; here only MPI's int counts can still fail.
int MpiComm::icount(int64_t n, const char* op) const {
  if (n > INT_MAX)
    throw std::length_error(where(op) + ": " + std::to_string(n) +
                            " elements exceed MPI's int count; split the buffer");
  return int(n);
}

WorkPtr MpiComm::do_all_reduce(const Tensor& x, ReduceOp op, bool blocking) {
  const char* name = "all_reduce";
  const int64_t seq = ++entered_;
  MPI_Datatype dt = mpi_type(x.dtype());
  MPI_Op mop = mpi_op(op, x.dtype());
  const int64_t n = x.numel(), es = x.element_size();
  auto chunk = [&](int64_t off) { return int(std::min(kChunk, n - off)); };
  const bool avg = op == ReduceOp::avg && size() > 1;
  if (run_blocking(blocking, this, name, seq, -1, [&] {
        for (int64_t off = 0; off < n; off += kChunk)
          MPI_Allreduce(MPI_IN_PLACE, bytes(x) + off * es, chunk(off), dt, mop, comm_);
      })) {
    if (avg) divide_(x, size());
    return nullptr;
  }
  auto w = std::make_unique<MpiWork>(self(), name, seq, -1);
  for (int64_t off = 0; off < n; off += kChunk)
    MPI_Iallreduce(MPI_IN_PLACE, bytes(x) + off * es, chunk(off), dt, mop, comm_, w->next());
  w->keep = {x};
  if (avg) w->finish = [x, n = size()](const auto&) { divide_(x, n); };
  return w;
}

WorkPtr MpiComm::do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                                   bool equal, bool blocking) {
  const char* name = "reduce_scatter";
  const int64_t seq = ++entered_;
  MPI_Datatype dt = mpi_type(in.dtype());
  MPI_Op mop = mpi_op(op, in.dtype());
  const int64_t rn = row_numel(in);
  icount(in.numel(), name);
  std::vector<int> counts;
  if (!equal)
    for (int64_t r : rows) counts.push_back(icount(r * rn, name));
  const int c = equal ? icount(rows[0] * rn, name) : 0;
  const bool avg = op == ReduceOp::avg && size() > 1;
  if (run_blocking(blocking, this, name, seq, -1, [&] {
        if (equal)
          MPI_Reduce_scatter_block(in.raw_data(), out.raw_data(), c, dt, mop, comm_);
        else
          MPI_Reduce_scatter(in.raw_data(), out.raw_data(), counts.data(), dt, mop, comm_);
      })) {
    if (avg) divide_(out, size());
    return nullptr;
  }
  auto w = std::make_unique<MpiWork>(self(), name, seq, -1);
  w->counts = std::move(counts);
  if (equal)
    MPI_Ireduce_scatter_block(in.raw_data(), out.raw_data(), c, dt, mop, comm_, w->next());
  else
    MPI_Ireduce_scatter(in.raw_data(), out.raw_data(), w->counts.data(), dt, mop, comm_, w->next());
  w->keep = {in, out};
  if (avg) w->finish = [out, n = size()](const auto&) { divide_(out, n); };
  return w;
}

WorkPtr MpiComm::do_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool equal,
                               bool blocking) {
  const char* name = "all_gather";
  const int64_t seq = ++entered_;
  MPI_Datatype dt = mpi_type(in.dtype());
  const int64_t rn = row_numel(in);
  icount(out.numel(), name);
  const int mine = icount(in.numel(), name);
  std::vector<int> counts, displs;
  if (!equal) {
    int64_t off = 0;
    for (int64_t r : rows) {
      counts.push_back(int(r * rn));
      displs.push_back(int(off));
      off += r * rn;
    }
  }
  if (run_blocking(blocking, this, name, seq, -1, [&] {
        if (equal)
          MPI_Allgather(in.raw_data(), mine, dt, out.raw_data(), mine, dt, comm_);
        else
          MPI_Allgatherv(in.raw_data(), mine, dt, out.raw_data(), counts.data(), displs.data(), dt, comm_);
      }))
    return nullptr;
  auto w = std::make_unique<MpiWork>(self(), name, seq, -1);
  w->counts = std::move(counts);
  w->displs = std::move(displs);
  if (equal)
    MPI_Iallgather(in.raw_data(), mine, dt, out.raw_data(), mine, dt, comm_, w->next());
  else
    MPI_Iallgatherv(in.raw_data(), mine, dt, out.raw_data(), w->counts.data(), w->displs.data(), dt, comm_, w->next());
  w->keep = {in, out};
  return w;
}

WorkPtr MpiComm::do_broadcast(const Tensor& x, int root, bool blocking) {
  const char* name = "broadcast";
  const int64_t seq = ++entered_;
  MPI_Datatype dt = mpi_type(x.dtype());
  const int64_t n = x.numel(), es = x.element_size();
  auto chunk = [&](int64_t off) { return int(std::min(kChunk, n - off)); };
  if (run_blocking(blocking, this, name, seq, -1, [&] {
        for (int64_t off = 0; off < n; off += kChunk) MPI_Bcast(bytes(x) + off * es, chunk(off), dt, root, comm_);
      }))
    return nullptr;
  auto w = std::make_unique<MpiWork>(self(), name, seq, -1);
  for (int64_t off = 0; off < n; off += kChunk) MPI_Ibcast(bytes(x) + off * es, chunk(off), dt, root, comm_, w->next());
  w->keep = {x};
  return w;
}

WorkPtr MpiComm::do_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                               const std::vector<int64_t>& recv_rows, bool equal, bool blocking) {
  const char* name = "all_to_all";
  const int64_t seq = ++entered_;
  MPI_Datatype dt = mpi_type(in.dtype());
  const int64_t rn = row_numel(in);
  icount(in.numel(), name);
  icount(out.numel(), name);
  const int c = int(send_rows[0] * rn);
  std::vector<int> sc, sd, rc, rd;
  if (!equal) {
    int64_t so = 0, ro = 0;
    for (int j = 0; j < size(); ++j) {
      sc.push_back(int(send_rows[j] * rn)), sd.push_back(int(so));
      rc.push_back(int(recv_rows[j] * rn)), rd.push_back(int(ro));
      so += send_rows[j] * rn, ro += recv_rows[j] * rn;
    }
  }
  if (run_blocking(blocking, this, name, seq, -1, [&] {
        if (equal)
          MPI_Alltoall(in.raw_data(), c, dt, out.raw_data(), c, dt, comm_);
        else
          MPI_Alltoallv(in.raw_data(), sc.data(), sd.data(), dt, out.raw_data(), rc.data(), rd.data(), dt, comm_);
      }))
    return nullptr;
  auto w = std::make_unique<MpiWork>(self(), name, seq, -1);
  w->counts = std::move(sc), w->displs = std::move(sd), w->counts2 = std::move(rc), w->displs2 = std::move(rd);
  if (equal)
    MPI_Ialltoall(in.raw_data(), c, dt, out.raw_data(), c, dt, comm_, w->next());
  else
    MPI_Ialltoallv(in.raw_data(), w->counts.data(), w->displs.data(), dt, out.raw_data(), w->counts2.data(),
                   w->displs2.data(), dt, comm_, w->next());
  w->keep = {in, out};
  return w;
}

WorkPtr MpiComm::do_barrier(bool blocking) {
  const int64_t seq = ++entered_;
  if (run_blocking(blocking, this, "barrier", seq, -1, [&] { MPI_Barrier(comm_); })) return nullptr;
  auto w = std::make_unique<MpiWork>(self(), "barrier", seq, -1);
  MPI_Ibarrier(comm_, w->next());
  return w;
}

WorkPtr MpiComm::do_send(const Tensor& x, int dst, int tag, bool blocking) {
  const int c = icount(x.numel(), "send");
  MPI_Datatype dt = mpi_type(x.dtype());
  if (run_blocking(blocking, this, "send", 0, dst, [&] { MPI_Send(x.raw_data(), c, dt, dst, tag, comm_); }))
    return nullptr;
  auto w = std::make_unique<MpiWork>(self(), "send", 0, dst);
  MPI_Isend(x.raw_data(), c, dt, dst, tag, comm_, w->next());
  w->keep = {x};
  return w;
}

WorkPtr MpiComm::do_recv(const Tensor& x, int src, int tag, bool blocking) {
  MPI_Datatype dt = mpi_type(x.dtype());
  const int c = icount(x.numel(), "recv");
  auto check = [this, dt, c, src](const MPI_Status& st) {
    int got = 0;
    MPI_Get_count(&st, dt, &got);
    if (got != c)
      throw std::runtime_error(where("recv") + ": received " + std::to_string(got) + " elements from rank " +
                               std::to_string(src) + ", the buffer holds " + std::to_string(c));
  };
  MPI_Status st;
  if (run_blocking(blocking, this, "recv", 0, src, [&] { MPI_Recv(x.raw_data(), c, dt, src, tag, comm_, &st); })) {
    check(st);
    return nullptr;
  }
  auto w = std::make_unique<MpiWork>(self(), "recv", 0, src);
  MPI_Irecv(x.raw_data(), c, dt, src, tag, comm_, w->next());
  w->keep = {x};
  w->finish = [check](const std::vector<MPI_Status>& s) { check(s[0]); };
  return w;
}

}  // namespace loom::parallel
