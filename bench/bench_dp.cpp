// bench_dp.cpp: how much of data-parallel gradient communication backward hides. Each rank
// trains the same llama-style model on its own batch (dp = world size); steps alternate between
// overlap on (buckets start from gradient hooks during backward) and off (every bucket starts
// after backward), in the same run.
//   comm     = the wait in finish() with overlap off: the whole reduction, nothing hidden
//   exposed  = the wait in finish() with overlap on: what backward did not hide
//   hidden   = 1 - exposed / comm
// Times are the slowest rank's, medians over the timed steps.
// Run: mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS=1 build/bench/bench_dp [--quick] [--zero 0|1|2]
//      [--bucket-mb 4] [--d 256] [--layers 4] [--vocab 8192] [--seq 128] [--batch 4]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "models/transformer.h"
#include "optim/distributed_optimizer.h"
#include "parallel/distributed.h"

using namespace loom;
using runtime::DType;
using runtime::Tensor;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double slowest(double t) {
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t d = 256, layers = 4, vocab = 8192, seq = 128, batch = 4, steps = 6, zero = 0;
  double bucket_mb = 4;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? argv[++i] : "0"; };
    if (a == "--quick") steps = 2;
    else if (a == "--d") d = std::atoll(next());
    else if (a == "--layers") layers = std::atoll(next());
    else if (a == "--vocab") vocab = std::atoll(next());
    else if (a == "--seq") seq = std::atoll(next());
    else if (a == "--batch") batch = std::atoll(next());
    else if (a == "--steps") steps = std::atoll(next());
    else if (a == "--zero") zero = std::atoll(next());
    else if (a == "--bucket-mb") bucket_mb = std::atof(next());
    else {
      std::fprintf(stderr, "bench_dp: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto& dist = parallel::init_distributed();
  if (!dist.uses_mpi()) {
    std::fprintf(stderr, "bench_dp: run under mpirun (e.g. mpirun --oversubscribe -np 2 %s)\n", argv[0]);
    return 2;
  }
  const auto& world = dist.world();
  models::ModelConfig cfg = models::ModelConfig::llama(vocab, d, layers, d / 64, d / 64);
  cfg.max_seq_len = seq;
  models::TransformerLM model(cfg, 1);
  std::vector<optim::ShardedParam> params;
  int64_t numel = 0;
  for (auto& p : model.parameters()) {
    params.push_back({p.name, p.tensor, !p.no_decay, p.shard});
    numel += p.tensor.numel();
  }
  auto make = [](std::vector<optim::ParamRef> r) { return std::make_unique<optim::AdamW>(std::move(r), optim::AdamWOptions{}); };
  parallel::DataParallelOptions on, off;
  on.zero_stage = off.zero_stage = int(zero);
  on.bucket_bytes = off.bucket_bytes = int64_t(bucket_mb * (1 << 20));
  off.overlap = false;
  optim::DistributedOptimizer opt_on(params, make, on, {world});
  optim::DistributedOptimizer opt_off(params, make, off, {world});
  Tensor ids = Tensor::from_vector(std::vector<int64_t>(size_t(batch * seq), 1), {batch, seq});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 7919 + world->rank() * 104729) % vocab;
  std::vector<double> step_on, step_off, wait_on, wait_off, bwd_on;
  for (int64_t s = 0; s < steps + 1; ++s)
    for (int mode = 0; mode < 2; ++mode) {
      optim::DistributedOptimizer& opt = mode == 0 ? opt_on : opt_off;
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = std::chrono::steady_clock::now();
      opt.zero_grad();
      opt.set_sync(true);
      Tensor loss = model.loss_sum(model.forward(ids), ids);
      auto tb = std::chrono::steady_clock::now();
      loss.backward();
      auto te = std::chrono::steady_clock::now();
      double wait = opt.finish_backward();
      opt.step(0.0);  // lr 0: the update runs, the weights stay
      double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      double bwd = std::chrono::duration<double>(te - tb).count();
      if (s == 0) continue;  // warm-up
      (mode == 0 ? step_on : step_off).push_back(slowest(total));
      (mode == 0 ? wait_on : wait_off).push_back(slowest(wait));
      if (mode == 0) bwd_on.push_back(slowest(bwd));
    }
  const double comm = median(wait_off), exposed = median(wait_on);
  const double bytes = double(numel) * 4;
  const int n = world->size();
  if (dist.rank() == 0) {
    std::printf("{\"ranks\": %d, \"params\": %lld, \"zero\": %lld, \"bucket_mb\": %.1f, \"buckets\": %d, "
                "\"step_overlap_s\": %.4f, \"step_no_overlap_s\": %.4f, \"backward_s\": %.4f, "
                "\"comm_s\": %.4f, \"exposed_s\": %.4f, \"hidden_fraction\": %.3f, \"busbw_GBps\": %.3f}\n",
                n, (long long)numel, (long long)zero, bucket_mb, opt_on.sync().num_buckets(), median(step_on),
                median(step_off), median(bwd_on), comm, exposed, comm > 0 ? 1.0 - exposed / comm : 0.0,
                comm > 0 ? 2.0 * (n - 1) / n * bytes / comm / 1e9 : 0.0);
  }
  return 0;
}
