// bench_comm.cpp: all-reduce bus bandwidth of Loom's MPI backend (Comm::all_reduce: a
// nonblocking MPI_Iallreduce polled under the timeout deadline) against plain blocking
// MPI_Allreduce, and MPI_Iallreduce + MPI_Wait (same algorithm as Loom, no deadline loop), in
// one run, f32 sum in place, 1 KiB .. 64 MiB.
//   busbw = 2 (n - 1) / n * bytes / t   (nccl-tests' convention: the ring's per-link traffic)
// t is the slowest rank's mean time per call, best of 4 rounds (interleaved, Loom and MPI
// taking turns to go first).
// Run: mpirun --oversubscribe -np 4 build/bench/bench_comm [--quick]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>

#include "parallel/distributed.h"

using loom::parallel::init_distributed;
using loom::runtime::DType;
using loom::runtime::Tensor;

namespace {

// Slowest rank's seconds per call of fn over `iters` calls, after a barrier.
double seconds_per_call(int iters, const std::function<void()>& fn) {
  MPI_Barrier(MPI_COMM_WORLD);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 2 : 4;
  auto& dist = init_distributed();
  if (!dist.uses_mpi()) {
    std::fprintf(stderr, "bench_comm: run under mpirun (e.g. mpirun --oversubscribe -np 2 %s)\n", argv[0]);
    return 2;
  }
  const auto& world = dist.world();
  const int n = world->size();
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  if (char* nl = std::strchr(version, ',')) *nl = '\0';
  if (dist.rank() == 0) {
    std::printf("all_reduce f32 sum in place, %d ranks, %s; busbw = 2(n-1)/n * bytes / t, GB/s\n", n, version);
    std::printf("%9s %11s %10s %11s %10s %8s %13s\n", "size", "loom us", "loom busbw", "MPI us", "MPI busbw",
                "loom/MPI", "Iallreduce bw");
  }
  const double bus = 2.0 * (n - 1) / n;
  for (int64_t bytes = 1024; bytes <= (int64_t(64) << 20); bytes *= 4) {
    const int64_t count = bytes / 4;
    Tensor x = Tensor::zeros({count}, DType::f32);  // zeros stay zeros: same data every call
    float* p = x.data<float>();
    int iters = int(std::clamp<int64_t>((int64_t(quick ? 32 : 256) << 20) / bytes, 3, quick ? 50 : 300));
    double loom = 1e30, mpi = 1e30, nb = 1e30;
    world->all_reduce(x);  // warm-up of all three paths
    MPI_Allreduce(MPI_IN_PLACE, p, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    auto run_loom = [&] { loom = std::min(loom, seconds_per_call(iters, [&] { world->all_reduce(x); })); };
    auto run_mpi = [&] {
      mpi = std::min(mpi, seconds_per_call(iters, [&] {
                       MPI_Allreduce(MPI_IN_PLACE, p, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                     }));
    };
    for (int round = 0; round < rounds; ++round) {  // alternate who goes first
      if (round % 2 == 0)
        run_loom(), run_mpi();
      else
        run_mpi(), run_loom();
      nb = std::min(nb, seconds_per_call(iters, [&] {
                      MPI_Request req;
                      MPI_Iallreduce(MPI_IN_PLACE, p, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
                      MPI_Wait(&req, MPI_STATUS_IGNORE);
                    }));
    }
    if (dist.rank() == 0) {
      char size[16];
      if (bytes >= (1 << 20))
        std::snprintf(size, sizeof size, "%lld MiB", (long long)(bytes >> 20));
      else
        std::snprintf(size, sizeof size, "%lld KiB", (long long)(bytes >> 10));
      std::printf("%9s %11.1f %10.3f %11.1f %10.3f %8.2f %13.3f\n", size, loom * 1e6, bus * bytes / loom / 1e9,
                  mpi * 1e6, bus * bytes / mpi / 1e9, mpi / loom, bus * bytes / nb / 1e9);
      std::fflush(stdout);
    }
  }
  return 0;
}
