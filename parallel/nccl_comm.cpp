// nccl_comm.cpp: the NCCL backend for CUDA tensors (built with LOOM_WITH_NCCL).
// Each communicator has its own non-blocking stream; an operation first waits (on the device)
// for the work queued so far on the legacy default stream, where all of Loom's kernels run,
// then records an event that test()/wait() poll under the group's deadline. Buffers are held
// by the Work until that event completes, so the caching allocator never hands them out while
// NCCL still uses them (runtime/cuda/README.md). Forms NCCL lacks are grouped point-to-point
// calls: variable all_to_all (send/recv), variable reduce_scatter (one reduce per root),
// variable all_gather (one broadcast per root).
#include "parallel/comm.h"

#ifndef LOOM_WITH_NCCL

#include <stdexcept>

namespace loom::parallel {
CommPtr make_nccl_comm(const CommPtr& group, int device) {
  if (group && group->size() == 1) return group;
  throw std::runtime_error("make_nccl_comm: Loom was built without NCCL (configure with CUDA and NCCL to use it)");
}
}  // namespace loom::parallel

#else

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "parallel/mpi_comm.h"
#include "runtime/cuda/check.h"

namespace loom::parallel {
namespace {

using runtime::cuda::DeviceGuard;

[[noreturn]] void throw_nccl(ncclResult_t r, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("NCCL error: ") + call + " failed at " + file + ":" + std::to_string(line) +
                           ": " + ncclGetErrorString(r));
}
#define LOOM_NCCL_CHECK(expr)                                         \
  do {                                                                \
    ncclResult_t r_ = (expr);                                         \
    if (r_ != ncclSuccess) throw_nccl(r_, #expr, __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  throw std::invalid_argument("NCCL backend: unknown dtype");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
    case ReduceOp::min:
      return ncclMin;
  }
  return ncclSum;
}

char* bytes(const Tensor& t) { return static_cast<char*>(t.raw_data()); }

class NcclWork final : public Work {
 public:
  NcclWork(CommPtr comm, MpiComm* group, int channel, ncclComm_t nc, int device, const char* op, int64_t seq, int peer,
           cudaEvent_t done, std::vector<Tensor> keep)
      : comm_(std::move(comm)),
        group_(group),
        channel_(channel),
        nc_(nc),
        device_(device),
        op_(op),
        seq_(seq),
        peer_(peer),
        event_(done),
        keep_(std::move(keep)) {}
  ~NcclWork() override {
    try {
      if (!done_) wait();
    } catch (const std::exception& e) {  // no one is left to receive it
      std::fprintf(stderr, "loom: %s (in a Work destroyed without wait())\n", e.what());
    }
    cudaEventDestroy(event_);
  }
  bool test() override {
    if (done_) return true;
    DeviceGuard g(device_);
    cudaError_t e = cudaEventQuery(event_);
    if (e == cudaSuccess) {
      done_ = true;
      keep_.clear();
      return true;
    }
    if (e != cudaErrorNotReady) LOOM_CUDA_CHECK(e);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(nc_, &async);
    if (async != ncclSuccess && async != ncclInProgress)
      detail::abort_job("rank " + std::to_string(comm_->world_rank()) + ": " + op_ + " on group " + comm_->name() +
                        " failed in NCCL: " + ncclGetErrorString(async));
    return false;
  }
  void wait() override {
    if (done_) return;
    detail::WaitInfo info;
    info.group = group_;
    info.channel = channel_;
    info.op = op_;
    info.group_name = &comm_->name();
    info.seq = seq_;
    info.peer = peer_;
    info.timeout_s = comm_->timeout();
    detail::wait_until([this] { return test(); }, info);
  }

 private:
  CommPtr comm_;
  MpiComm* group_;
  int channel_;
  ncclComm_t nc_;
  int device_;
  const char* op_;
  int64_t seq_;
  int peer_;
  cudaEvent_t event_;
  std::vector<Tensor> keep_;
  bool done_ = false;
};

class NcclComm final : public Comm {
 public:
  NcclComm(std::shared_ptr<MpiComm> group, int device)
      : Comm(group->rank(), group->size(), group->name(), group->world_ranks()),
        group_(std::move(group)),
        device_(device) {
    set_timeout(group_->timeout());
    DeviceGuard g(device_);
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank() == 0) LOOM_NCCL_CHECK(ncclGetUniqueId(&id));
    Tensor buf = Tensor::zeros({int64_t(sizeof id)}, DType::u8);
    std::memcpy(buf.raw_data(), &id, sizeof id);
    group_->broadcast(buf, 0);
    std::memcpy(&id, buf.raw_data(), sizeof id);
    channel_ = group_->add_channel(&entered_);
    {
      detail::BlockingGuard guard("NCCL init of group " + name() + " on cuda:" + std::to_string(device_), timeout());
      LOOM_NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
    }
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclComm() override {
    DeviceGuard g(device_);
    if (stream_) cudaStreamSynchronize(stream_), cudaStreamDestroy(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }
  const char* backend() const override { return "nccl"; }
  CommPtr split(int, int, const std::string&) override {
    throw std::logic_error(where("split") + ": split the MPI group and make an NCCL communicator from it");
  }

 protected:
  bool accepts(Device d) const override { return d.is_cuda() && d.index == device_; }

  WorkPtr do_all_reduce(const Tensor& x, ReduceOp op, bool) override {
    return launch("all_reduce", -1, {x}, [&](cudaStream_t s) {
      LOOM_NCCL_CHECK(
          ncclAllReduce(x.raw_data(), x.raw_data(), x.numel(), nccl_type(x.dtype()), nccl_op(op), comm_, s));
    });
  }
  WorkPtr do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op, const std::vector<int64_t>& rows,
                            bool equal, bool) override {
    return launch("reduce_scatter", -1, {in, out}, [&](cudaStream_t s) {
      const ncclDataType_t dt = nccl_type(in.dtype());
      const int64_t rn = row_numel(in), es = in.element_size();
      if (equal) {
        LOOM_NCCL_CHECK(ncclReduceScatter(in.raw_data(), out.raw_data(), rows[0] * rn, dt, nccl_op(op), comm_, s));
        return;
      }
      LOOM_NCCL_CHECK(ncclGroupStart());
      int64_t off = 0;
      for (int j = 0; j < size(); ++j) {
        LOOM_NCCL_CHECK(ncclReduce(bytes(in) + off * es, out.raw_data(), rows[j] * rn, dt, nccl_op(op), j, comm_, s));
        off += rows[j] * rn;
      }
      LOOM_NCCL_CHECK(ncclGroupEnd());
    });
  }
  WorkPtr do_all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& rows, bool equal,
                        bool) override {
    return launch("all_gather", -1, {in, out}, [&](cudaStream_t s) {
      const ncclDataType_t dt = nccl_type(in.dtype());
      const int64_t rn = row_numel(in), es = in.element_size();
      if (equal) {
        LOOM_NCCL_CHECK(ncclAllGather(in.raw_data(), out.raw_data(), in.numel(), dt, comm_, s));
        return;
      }
      LOOM_NCCL_CHECK(ncclGroupStart());
      int64_t off = 0;
      for (int j = 0; j < size(); ++j) {
        LOOM_NCCL_CHECK(ncclBroadcast(in.raw_data(), bytes(out) + off * es, rows[j] * rn, dt, j, comm_, s));
        off += rows[j] * rn;
      }
      LOOM_NCCL_CHECK(ncclGroupEnd());
    });
  }
  WorkPtr do_broadcast(const Tensor& x, int root, bool) override {
    return launch("broadcast", -1, {x}, [&](cudaStream_t s) {
      LOOM_NCCL_CHECK(ncclBroadcast(x.raw_data(), x.raw_data(), x.numel(), nccl_type(x.dtype()), root, comm_, s));
    });
  }
  WorkPtr do_all_to_all(const Tensor& in, const Tensor& out, const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows, bool, bool) override {
    return launch("all_to_all", -1, {in, out}, [&](cudaStream_t s) {
      const ncclDataType_t dt = nccl_type(in.dtype());
      const int64_t rn = row_numel(in), es = in.element_size();
      int64_t so = 0, ro = 0;
      LOOM_NCCL_CHECK(ncclGroupStart());
      for (int j = 0; j < size(); ++j) {
        const int64_t sc = send_rows[j] * rn, rc = recv_rows[j] * rn;
        if (j == rank()) {
          if (sc)
            LOOM_CUDA_CHECK(
                cudaMemcpyAsync(bytes(out) + ro * es, bytes(in) + so * es, sc * es, cudaMemcpyDeviceToDevice, s));
        } else {
          if (sc) LOOM_NCCL_CHECK(ncclSend(bytes(in) + so * es, sc, dt, j, comm_, s));
          if (rc) LOOM_NCCL_CHECK(ncclRecv(bytes(out) + ro * es, rc, dt, j, comm_, s));
        }
        so += sc, ro += rc;
      }
      LOOM_NCCL_CHECK(ncclGroupEnd());
    });
  }
  WorkPtr do_barrier(bool) override {
    Tensor one = Tensor::ones({1}, DType::f32, Device::cuda(device_));
    return launch("barrier", -1, {one}, [&](cudaStream_t s) {
      LOOM_NCCL_CHECK(ncclAllReduce(one.raw_data(), one.raw_data(), 1, ncclFloat32, ncclSum, comm_, s));
    });
  }
  WorkPtr do_send(const Tensor& x, int dst, int tag, bool) override {
    check_tag(tag, "send");
    return launch("send", dst, {x}, [&](cudaStream_t s) {
      LOOM_NCCL_CHECK(ncclSend(x.raw_data(), x.numel(), nccl_type(x.dtype()), dst, comm_, s));
    });
  }
  WorkPtr do_recv(const Tensor& x, int src, int tag, bool) override {
    check_tag(tag, "recv");
    return launch("recv", src, {x}, [&](cudaStream_t s) {
      LOOM_NCCL_CHECK(ncclRecv(x.raw_data(), x.numel(), nccl_type(x.dtype()), src, comm_, s));
    });
  }

 private:
  void check_tag(int tag, const char* op) const {
    if (tag != 0)
      throw std::invalid_argument(where(op) + ": NCCL has no tags (got " + std::to_string(tag) +
                                  "); use tag 0 and rely on the order of the messages");
  }

  // Orders the op after the default stream's queued work, runs `enqueue` on this
  // communicator's stream and returns a Work polling the event recorded after it.
  template <class Fn>
  WorkPtr launch(const char* op, int peer, std::vector<Tensor> keep, Fn&& enqueue) {
    DeviceGuard g(device_);
    cudaEvent_t ready, done;
    LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    LOOM_CUDA_CHECK(cudaEventRecord(ready, cudaStreamLegacy));
    LOOM_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    LOOM_CUDA_CHECK(cudaEventDestroy(ready));
    const int64_t seq = peer < 0 ? ++entered_ : 0;
    enqueue(stream_);
    LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    LOOM_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclWork>(shared_from_this(), group_.get(), channel_, comm_, device_, op, seq, peer, done,
                                      std::move(keep));
  }

  std::shared_ptr<MpiComm> group_;
  int device_;
  int channel_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::atomic<int64_t> entered_{0};
};

}  // namespace

CommPtr make_nccl_comm(const CommPtr& group, int device) {
  if (!group) throw std::invalid_argument("make_nccl_comm: no group");
  auto mpi = std::dynamic_pointer_cast<MpiComm>(group);
  if (!mpi && group->size() == 1) return group;
  if (!mpi)
    throw std::invalid_argument("make_nccl_comm: group " + group->name() + " is a " + group->backend() +
                                " communicator; NCCL communicators are made from MPI ones");
  return std::make_shared<NcclComm>(std::move(mpi), device);
}

}  // namespace loom::parallel

#endif  // LOOM_WITH_NCCL
