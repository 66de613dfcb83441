// bench_pipeline.cpp: the pipeline bubble, measured. pp = world size stages of a llama-style
// model train one step of M micro-batches per schedule; each stage's bubble is the fraction of
// the step it spent blocked in receives, reported beside GPipe's ideal (pp - 1) / (M + pp - 1),
// and the step time beside one process training the same global batch (rank 0 alone, the
// others waiting), in the same run. Medians over the timed steps; the bubble is the mean over
// stages.
// Run: mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS=1 build/bench/bench_pipeline [--quick]
//      [--d 256] [--layers-per-stage 2] [--seq 128] [--rows 2] [--steps 3]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "models/pipeline_partition.h"
#include "models/transformer.h"
#include "parallel/distributed.h"
#include "parallel/pipeline.h"

using namespace loom;
using runtime::DType;
using runtime::Tensor;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t d = 256, per_stage = 2, seq = 128, rows = 2, steps = 3, vocab = 4096;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? argv[++i] : "0"; };
    if (a == "--quick") steps = 1;
    else if (a == "--d") d = std::atoll(next());
    else if (a == "--layers-per-stage") per_stage = std::atoll(next());
    else if (a == "--seq") seq = std::atoll(next());
    else if (a == "--rows") rows = std::atoll(next());
    else if (a == "--steps") steps = std::atoll(next());
    else {
      std::fprintf(stderr, "bench_pipeline: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto& dist = parallel::init_distributed();
  const auto& world = dist.world();
  const int pp = world->size(), stage = world->rank();
  models::ModelConfig cfg = models::ModelConfig::llama(vocab, d, per_stage * pp, d / 64, d / 64);
  cfg.max_seq_len = seq;
  const auto stages = models::stages_from_counts(std::vector<int64_t>(size_t(pp), per_stage), cfg.n_layers);
  models::TransformerLM model(cfg, 1, DType::f32, {}, stages[size_t(stage)]);
  if (stage == 0)
    std::printf("pipeline bench: %d stages x %lld blocks, d %lld, seq %lld, %lld rows per micro-batch, %s\n", pp,
                (long long)per_stage, (long long)d, (long long)seq, (long long)rows,
                dist.uses_mpi() ? "mpirun" : "one process");
  std::vector<Tensor> ids;
  for (int m = 0; m < 8; ++m) {
    std::vector<int64_t> v(size_t(rows * seq));
    for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t((i * 7919 + size_t(m) * 104729) % size_t(vocab));
    ids.push_back(Tensor::from_vector(v, {rows, seq}));
  }
  for (int M : {1, 2, 4, 8}) {
    // One process, the same global batch (M micro-batches accumulated), on rank 0.
    double solo = 0;
    if (stage == 0) {
      models::TransformerLM whole(cfg, 1);
      std::vector<double> ts;
      for (int64_t s = 0; s <= steps; ++s) {
        auto t0 = std::chrono::steady_clock::now();
        for (int m = 0; m < M; ++m) whole.loss_sum(whole.forward(ids[size_t(m)]), ids[size_t(m)]).backward();
        if (s) ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      solo = median(ts);
    }
    world->barrier();
    for (parallel::PipeSchedule sched : {parallel::PipeSchedule::gpipe, parallel::PipeSchedule::one_f_one_b}) {
      parallel::PipelineExecutor exec(world, sched, M, parallel::Recompute::never);
      parallel::StageFns f;
      f.forward = [&](int m, const Tensor& in) {
        Tensor out = model.forward_stage(in);
        return exec.last() ? runtime::mul_scalar(model.loss_sum(out, ids[size_t(m)]), 1e-3) : out;
      };
      f.first_input = [&](int m) { return ids[size_t(m)]; };
      f.activation_shape = [&](int) { return runtime::Dims{rows, seq, d}; };
      std::vector<double> totals, bubbles;
      for (int64_t s = 0; s <= steps; ++s) {
        for (auto& p : model.parameters()) p.tensor.zero_grad();
        world->barrier();
        parallel::PipelineStats st = exec.run(f);
        double b = st.total_s > 0 ? st.blocked_s / st.total_s : 0, t = st.total_s;
        if (dist.uses_mpi()) {
          MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
          MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        }
        if (s) {
          bubbles.push_back(b / pp);
          totals.push_back(t);
        }
      }
      if (stage == 0)
        std::printf("{\"pp\": %d, \"M\": %d, \"schedule\": \"%s\", \"bubble\": %.3f, \"ideal_bubble\": %.3f, "
                    "\"step_s\": %.4f, \"one_process_step_s\": %.4f, \"speedup\": %.2f}\n",
                    pp, M, parallel::pipe_schedule_name(sched), median(bubbles), double(pp - 1) / double(M + pp - 1),
                    median(totals), solo, solo / median(totals));
    }
  }
  return 0;
}
