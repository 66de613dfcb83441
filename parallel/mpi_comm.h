// mpi_comm.h (internal to parallel/): the MPI backend, and the timeout machinery that the MPI
// and NCCL backends share. Users get communicators from Distributed and Mesh, not from here.
//
// Timeout rule: every wait polls its requests against a deadline (the group's timeout from the
// start of the wait). On the deadline the waiting rank asks each member of the group, over
// the group's MPI communicator with reserved tags, how many collectives it has entered on
// that group; ranks waiting anywhere in Loom answer from their wait loops. Members that answer
// with a smaller count, or not at all within a grace period, are the ranks that did not arrive.
// The message names them, and MPI_Abort ends every rank.
// Blocking calls (Comm's blocking collectives, which use MPI's blocking algorithms when
// MPI_THREAD_MULTIPLE is granted, and setup calls: split, NCCL init, finalize) cannot poll:
// a watchdog thread checks their deadlines every few milliseconds, and answers queries for
// them.
#pragma once
#include <mpi.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace loom::parallel {

class MpiComm final : public Comm {
 public:
  // Wraps `comm`; frees it on destruction unless it is MPI_COMM_WORLD.
  MpiComm(MPI_Comm comm, const std::string& name, double timeout_s);
  ~MpiComm() override;
  const char* backend() const override { return "mpi"; }
  CommPtr split(int color, int key, const std::string& name) override;
  MPI_Comm handle() const { return comm_; }

  // Diagnosis channels: counters of operations entered; 0 is this communicator's own
  // collectives. A backend over the same group (NCCL) adds its counter, in the same order on
  // every member (its creation is collective).
  int add_channel(const std::atomic<int64_t>* counter);
  int64_t channel_value(int channel) const;

 protected:
  bool accepts(Device d) const override { return d.is_cpu(); }
  WorkPtr do_all_reduce(const Tensor& x, ReduceOp op, bool blocking) override;
  WorkPtr do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                            bool equal, bool blocking) override;
  WorkPtr do_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool equal,
                        bool blocking) override;
  WorkPtr do_broadcast(const Tensor& x, int root, bool blocking) override;
  WorkPtr do_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows, bool equal, bool blocking) override;
  WorkPtr do_barrier(bool blocking) override;
  WorkPtr do_send(const Tensor& x, int dst, int tag, bool blocking) override;
  WorkPtr do_recv(const Tensor& x, int src, int tag, bool blocking) override;

 private:
  int icount(int64_t n, const char* op) const;  // n as MPI's int count, or a clear error
  std::shared_ptr<MpiComm> self() { return std::static_pointer_cast<MpiComm>(shared_from_this()); }
  MPI_Comm comm_;
  std::atomic<int64_t> entered_{0};  // collectives entered on this communicator (channel 0)
  mutable std::mutex channels_mu_;   // add_channel may race a watchdog's diagnosis reply
  std::vector<const std::atomic<int64_t>*> channels_;
};

namespace detail {

// What a wait is for: the op, the group whose MPI communicator carries the diagnosis, the
// channel and sequence number of the op there (seq 0 for point to point, with peer set).
struct WaitInfo {
  MpiComm* group = nullptr;
  int channel = 0;
  const char* op = "";
  const std::string* group_name = nullptr;  // the name to report (an NCCL group's own name)
  int64_t seq = 0;
  int peer = -1;  // group rank of the peer of send/recv
  double timeout_s = 600;
};

// Polls done() until it returns true; answers diagnosis queries meanwhile; at the deadline
// diagnoses (see above) and aborts the job.
void wait_until(const std::function<bool()>& done, const WaitInfo& info);
// Answers pending diagnosis queries on every live MPI communicator.
void service_queries();
// Prints "loom: <msg>" to stderr and ends every rank (MPI_Abort on the world).
[[noreturn]] void abort_job(const std::string& msg);

// Marks this thread as inside a blocking MPI call for its scope: a watchdog thread enforces
// the deadline (diagnosis and abort as for polled waits) and answers diagnosis queries while
// the call lasts. Needs MPI_THREAD_MULTIPLE (see blocking_calls_allowed).
class BlockingOp {
 public:
  explicit BlockingOp(const WaitInfo& info);
  ~BlockingOp();
  BlockingOp(const BlockingOp&) = delete;
  BlockingOp& operator=(const BlockingOp&) = delete;

 private:
  struct Slot* slot_;
};
// True when MPI granted MPI_THREAD_MULTIPLE and $LOOM_COMM_POLL is not 1: blocking calls run
// MPI's blocking collectives under BlockingOp; otherwise everything is polled.
bool blocking_calls_allowed();

// Aborts the job with "rank R: <what> timed out after Ns" if its scope is not left within
// timeout_s (for blocking setup calls: communicator split, NCCL init, finalize).
class BlockingGuard {
 public:
  BlockingGuard(std::string what, double timeout_s);
  ~BlockingGuard();
  BlockingGuard(const BlockingGuard&) = delete;
  BlockingGuard& operator=(const BlockingGuard&) = delete;

 private:
  uint64_t id_;
};

// Live MPI communicators, whose diagnosis queries wait loops answer.
void register_comm(MpiComm* c);
void unregister_comm(MpiComm* c);
// Stops answering queries (called before MPI_Finalize).
void prepare_finalize();

// The thread support MPI granted (set by Distributed).
void set_mpi_thread_level(int level);
int mpi_thread_level();
// This process's rank in MPI_COMM_WORLD (0 without MPI), for messages.
int world_rank_for_messages();

}  // namespace detail
}  // namespace loom::parallel
