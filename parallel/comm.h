// comm.h: Comm, the one communication interface of Loom, and Work, the handle of an
// asynchronous operation. Backends: MPI for CPU tensors (mpi_comm.cpp), NCCL for CUDA tensors
// (nccl_comm.cpp), and a local one for groups of one rank (any device, no MPI needed).
//
// Rules every backend keeps:
//  - All members of a group call its collectives in the same order (MPI's rule; the timeout
//    diagnosis counts collectives per group to say who did not arrive).
//  - Buffers are tensors on the backend's device. Inputs may be strided (a contiguous copy is
//    sent); outputs, and all_reduce/broadcast/recv buffers, must be contiguous.
//  - "Rows" are the extent of dim 0: reduce_scatter, all_gather and all_to_all split along
//    dim 0, equally by default, or by per-rank row counts (the variable forms).
//  - A wait that does not complete within the group's timeout aborts the whole job with a
//    message naming the operation, the group and the ranks that did not arrive.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace loom::parallel {

using runtime::Device;
using runtime::DType;
using runtime::Tensor;

enum class ReduceOp { sum, avg, max, min };
const char* reduce_op_name(ReduceOp op);

// The handle of an asynchronous operation. Its buffers stay alive (and must not be touched)
// until test() returns true or wait() returns; destroying an unfinished Work waits for it.
class Work {
 public:
  virtual ~Work() = default;
  // Drives progress; true once the operation has completed and its outputs may be read.
  virtual bool test() = 0;
  // Blocks until completion. The group's timeout counts from the start of the wait.
  virtual void wait() = 0;
};
using WorkPtr = std::unique_ptr<Work>;

class Comm;
using CommPtr = std::shared_ptr<Comm>;

// Default timeout of collectives, in seconds: $LOOM_COMM_TIMEOUT if set, else 600.
double default_comm_timeout();

class Comm : public std::enable_shared_from_this<Comm> {
 public:
  virtual ~Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }  // in this group
  int size() const { return size_; }
  const std::string& name() const { return name_; }                     // "world", "tp", "dp,sp", ...
  const std::vector<int>& world_ranks() const { return world_ranks_; }  // member i's world rank
  int world_rank() const { return world_ranks_[rank_]; }
  virtual const char* backend() const = 0;  // "mpi", "nccl", "self"
  double timeout() const { return timeout_s_; }
  void set_timeout(double seconds);

  // ---- collectives (blocking) --------------------------------------------------------------
  // x <- op over the group of x (in place).
  void all_reduce(const Tensor& x, ReduceOp op = ReduceOp::sum) { complete(post_all_reduce(x, op, true)); }
  // out <- rows [off_r, off_r + rows[r]) of op(in) over the group; in [sum(rows), ...].
  // Equal split (rows empty): in [size * N, ...], out [N, ...].
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::sum,
                      const std::vector<int64_t>& rows = {}) {
    complete(post_reduce_scatter(in, out, op, rows, true));
  }
  // out <- the members' `in` concatenated along dim 0 in rank order; in [rows[r], ...].
  void all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows = {}) {
    complete(post_all_gather(in, out, rows, true));
  }
  // x <- root's x.
  void broadcast(const Tensor& x, int root) { complete(post_broadcast(x, root, true)); }
  // Block j of `in` (send_rows[j] rows) goes to rank j; block j of `out` (recv_rows[j] rows)
  // comes from rank j. Equal split (both empty): in and out [size * N, ...].
  void all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows = {},
                  const std::vector<int64_t>& recv_rows = {}) {
    complete(post_all_to_all(in, out, send_rows, recv_rows, true));
  }
  void barrier() { complete(do_barrier(true)); }
  // Point to point; tags in [0, kMaxTag). Matching pairs must agree on size and dtype.
  static constexpr int kMaxTag = 32000;
  void send(const Tensor& x, int dst, int tag = 0) { complete(post_send(x, dst, tag, true)); }
  void recv(const Tensor& x, int src, int tag = 0) { complete(post_recv(x, src, tag, true)); }

  // ---- the same, asynchronous --------------------------------------------------------------
  WorkPtr all_reduce_async(const Tensor& x, ReduceOp op = ReduceOp::sum) { return post_all_reduce(x, op, false); }
  WorkPtr reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::sum,
                               const std::vector<int64_t>& rows = {}) {
    return post_reduce_scatter(in, out, op, rows, false);
  }
  WorkPtr all_gather_async(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows = {}) {
    return post_all_gather(in, out, rows, false);
  }
  WorkPtr broadcast_async(const Tensor& x, int root) { return post_broadcast(x, root, false); }
  WorkPtr all_to_all_async(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows = {},
                           const std::vector<int64_t>& recv_rows = {}) {
    return post_all_to_all(in, out, send_rows, recv_rows, false);
  }
  WorkPtr barrier_async() { return ensure(do_barrier(false)); }
  WorkPtr send_async(const Tensor& x, int dst, int tag = 0) { return post_send(x, dst, tag, false); }
  WorkPtr recv_async(const Tensor& x, int src, int tag = 0) { return post_recv(x, src, tag, false); }

  // A new group of the members passing the same color, ordered by key (then rank); collective
  // over this group. Members may pass color < 0 to join no group (they get nullptr).
  virtual CommPtr split(int color, int key, const std::string& name) = 0;

 protected:
  Comm(int rank, int size, std::string name, std::vector<int> world_ranks);

  // Backends implement these; arguments are validated, inputs contiguous, row counts filled
  // in (one per rank) for the variable forms. `blocking`: the caller waits right away, so a
  // backend may run its blocking form (MPI's blocking collectives use other, often faster,
  // algorithms than the nonblocking ones) and return nullptr once it is complete.
  virtual bool accepts(Device d) const = 0;
  virtual WorkPtr do_all_reduce(const Tensor& x, ReduceOp op, bool blocking) = 0;
  virtual WorkPtr do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                                    bool equal, bool blocking) = 0;
  virtual WorkPtr do_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool equal,
                                bool blocking) = 0;
  virtual WorkPtr do_broadcast(const Tensor& x, int root, bool blocking) = 0;
  virtual WorkPtr do_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                                const std::vector<int64_t>& recv_rows, bool equal, bool blocking) = 0;
  virtual WorkPtr do_barrier(bool blocking) = 0;
  virtual WorkPtr do_send(const Tensor& x, int dst, int tag, bool blocking) = 0;
  virtual WorkPtr do_recv(const Tensor& x, int src, int tag, bool blocking) = 0;

  // "<op> on group <name>": the prefix of every error message.
  std::string where(const char* op) const;

 private:
  static void complete(WorkPtr w) {
    if (w) w->wait();
  }
  static WorkPtr ensure(WorkPtr w);  // a DoneWork for nullptr
  // Check the arguments (std::invalid_argument naming the collective and group), then do_*.
  WorkPtr post_all_reduce(const Tensor& x, ReduceOp op, bool blocking);
  WorkPtr post_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                              bool blocking);
  WorkPtr post_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool blocking);
  WorkPtr post_broadcast(const Tensor& x, int root, bool blocking);
  WorkPtr post_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                          const std::vector<int64_t>& recv_rows, bool blocking);
  WorkPtr post_send(const Tensor& x, int dst, int tag, bool blocking);
  WorkPtr post_recv(const Tensor& x, int src, int tag, bool blocking);
  void check_tensor(const Tensor& t, const char* op, const char* what, bool output) const;
  // Send/recv arguments: the peer is a rank of the group and the tag is in [0, kMaxTag).
  void check_peer(const char* op, const char* role, int peer, int tag) const;
  std::vector<int64_t> check_rows(const std::vector<int64_t>& rows, const char* op, const char* what) const;

  int rank_, size_;
  std::string name_;
  std::vector<int> world_ranks_;
  double timeout_s_;
};

// A Work that is already complete (size-1 groups, empty transfers).
class DoneWork final : public Work {
 public:
  bool test() override { return true; }
  void wait() override {}
};

// A group of one rank (the world without a launcher, or a mesh dimension of degree 1): every
// collective is a local copy; works for any device.
CommPtr make_self_comm(int world_rank, const std::string& name = "self");

// An NCCL communicator over the members of `group` (an MPI communicator) for tensors on
// cuda:device: rank 0 makes the NCCL unique id and broadcasts it over `group`; collective over
// the group. Waits block the host until the operation completes on its stream (ordered after
// the work already queued on the device's default stream), under the same timeout; the timeout
// diagnosis asks around over `group`. A one-rank group that is not MPI's (no launcher) is
// returned as is. Throws when Loom was built without NCCL.
CommPtr make_nccl_comm(const CommPtr& group, int device);

// Elements in one dim-0 row of t (1 for a 0-d tensor).
int64_t row_numel(const Tensor& t);

}  // namespace loom::parallel
