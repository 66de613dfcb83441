// test_pipeline.cpp: pipeline parallelism. The generated GPipe and 1F1B task lists equal
// hand-written ones; their ideal clock has the (pp - 1) / (M + pp - 1) bubble. Under mpirun,
// every schedule x re-materialisation mode x micro-batch count (M < pp included) trains like
// one process (loss, every owned gradient, parameters after two AdamW steps; tied and untied
// embeddings), the 3-D layout dp 2 x tp 2 x pp 2 too (8 ranks), and the activation memory each
// stage holds follows the schedule: GPipe without re-materialisation grows with M, with it
// stays near one micro-batch's internals plus M stage inputs, 1F1B keeps at most pp - stage
// micro-batches in flight.
#include <gtest/gtest.h>

#include <cmath>

#include "models/pipeline_partition.h"
#include "models/transformer.h"
#include "optim/distributed_optimizer.h"
#include "parallel/mesh.h"
#include "parallel/pipeline.h"
#include "parallel_test_util.h"
#include "parity_util.h"
#include "runtime/allocator.h"

namespace loom::parallel::testing {
namespace {

using models::ModelConfig;
using models::TransformerLM;

// ---- schedules ----------------------------------------------------------------------------

TEST(ParallelUnitPipeline, GPipeTasks) {
  for (int stage = 0; stage < 2; ++stage)
    EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::gpipe, 2, 3, stage)), "F0 F1 F2 B2 B1 B0");
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::gpipe, 4, 1, 3)), "F0 B0");
}

TEST(ParallelUnitPipeline, OneFOneBTasks) {
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::one_f_one_b, 3, 4, 0)), "F0 F1 F2 B0 F3 B1 B2 B3");
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::one_f_one_b, 3, 4, 1)), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::one_f_one_b, 3, 4, 2)), "F0 B0 F1 B1 F2 B2 F3 B3");
  // Fewer micro-batches than stages: warm-up is cut to M.
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::one_f_one_b, 4, 2, 0)), "F0 F1 B0 B1");
  EXPECT_EQ(tasks_str(pipeline_tasks(PipeSchedule::one_f_one_b, 4, 2, 3)), "F0 B0 F1 B1");
  EXPECT_THROW(pipeline_tasks(PipeSchedule::gpipe, 2, 0, 0), std::invalid_argument);
}

TEST(ParallelUnitPipeline, IdealClockHasTheGPipeBubble) {
  for (PipeSchedule s : {PipeSchedule::gpipe, PipeSchedule::one_f_one_b})
    for (int pp : {1, 2, 4})
      for (int M : {1, 2, 4, 8}) {
        int makespan = 0;
        auto slots = pipeline_clock(s, pp, M, makespan);
        // 2 M unit tasks per stage; idle slots / makespan = (pp - 1) / (M + pp - 1).
        EXPECT_EQ(makespan, 2 * (M + pp - 1)) << pipe_schedule_name(s) << " pp " << pp << " M " << M;
        if (s == PipeSchedule::gpipe)  // clock k runs forward i = k - j on stage j
          for (int j = 0; j < pp; ++j)
            for (int i = 0; i < M; ++i) EXPECT_EQ(slots[size_t(j)][size_t(i)], i + j);
      }
}

TEST(ParallelUnitPipeline, OneFOneBKeepsAtMostPpMinusStageInFlight) {
  for (int pp : {2, 3, 4})
    for (int M : {1, 3, 8})
      for (int stage = 0; stage < pp; ++stage) {
        int live = 0, peak = 0;
        for (const PipeTask& t : pipeline_tasks(PipeSchedule::one_f_one_b, pp, M, stage)) {
          live += t.kind == PipeTask::forward ? 1 : -1;
          peak = std::max(peak, live);
        }
        EXPECT_EQ(peak, std::min(pp - stage, M)) << "pp " << pp << " M " << M << " stage " << stage;
      }
}

TEST(ParallelUnitPipeline, BalancedStagesByParameters) {
  ModelConfig c = ModelConfig::llama(1000, 64, 6, 4, 4);
  auto st = models::balanced_stages(models::parameter_costs(c), 2);
  ASSERT_EQ(st.size(), 2u);
  EXPECT_TRUE(st[0].embedding && !st[0].head && !st[1].embedding && st[1].head);
  EXPECT_EQ(st[0].end_layer, st[1].first_layer);
  EXPECT_EQ(st[1].end_layer, 6);
  // Equal embedding and head costs: an even split.
  EXPECT_EQ(st[0].end_layer, 3);
  // A heavy head pushes blocks to the first stage.
  models::StageCosts heavy{{1, 1, 1, 1}, 0, 3};
  auto h = models::balanced_stages(heavy, 2);
  EXPECT_EQ(h[0].end_layer, 3);
  EXPECT_THROW(models::balanced_stages(heavy, 5), std::invalid_argument);
  EXPECT_THROW(models::stages_from_counts({2, 1}, 4), std::invalid_argument);
}

// ---- parity ---------------------------------------------------------------------------------

constexpr int64_t kBatch = 8, kSeq = 8, kSteps = 2;
constexpr uint64_t kSeed = 5;
constexpr double kLr = 1e-2;

ModelConfig config(bool tied) {
  ModelConfig c = ModelConfig::llama(37, 32, 4, 8, 4);
  c.ffn_hidden = 90;
  c.max_seq_len = kSeq;
  c.tie_embeddings = tied;
  return c;
}

std::pair<Tensor, Tensor> batch(int64_t step, int64_t vocab, int64_t rows = kBatch) {
  return token_batch(step, vocab, rows, kSeq, 4);
}

Trace reference(const ModelConfig& cfg) {
  TransformerLM m(cfg, kSeed, DType::f64);
  ReferenceRun run;
  run.steps = kSteps;
  run.lr = kLr;
  run.decay_all = true;
  return reference_trace(m, run, [&](int64_t s) { return batch(s, cfg.vocab_size); });
}

struct PipeLayout {
  int dp = 1, tp = 1, pp = 1, M = 1, zero = 0;
  bool sp = false;
  PipeSchedule schedule = PipeSchedule::gpipe;
  Recompute recompute = Recompute::never;
  std::string str() const {
    static const char* rc[] = {"never", "always", "except_last"};
    return "dp " + std::to_string(dp) + " tp " + std::to_string(tp) + " pp " + std::to_string(pp) + " M " +
           std::to_string(M) + " " + pipe_schedule_name(schedule) + " recompute " + rc[int(recompute)];
  }
};

// One rank's pipeline-parallel model and optimizer, the way the trainer builds them.
struct PipeRank {
  Mesh mesh;
  TensorParallel tp;
  int stage;
  TransformerLM model;
  CommPtr tied;
  std::unique_ptr<optim::DistributedOptimizer> opt;
  PipelineExecutor exec;

  PipeRank(const ModelConfig& cfg, const PipeLayout& l)
      : mesh(world(), ParallelDims{.pp = l.pp, .dp = l.dp, .tp = l.tp}),
        tp{mesh.comm("tp"), l.sp},
        stage(mesh.coord("pp")),
        model(cfg, kSeed, DType::f64, tp, models::balanced_stages(models::parameter_costs(cfg), l.pp)[size_t(stage)]),
        exec(mesh.comm("pp"), l.schedule, l.M, l.recompute) {
    if (l.pp > 1 && cfg.tie_embeddings)
      tied = mesh.comm("pp")->split(stage == 0 || stage == l.pp - 1 ? 0 : -1, stage, "embedding");
    std::vector<optim::ShardedParam> ps;
    for (auto& p : model.parameters()) {
      optim::ShardedParam sp{p.name, p.tensor, true, p.shard};
      if (tied && p.name == "model.embed_tokens.weight") {
        sp.tied = tied;
        sp.primary = stage == 0;
      }
      ps.push_back(sp);
    }
    DataParallelOptions o;
    o.zero_stage = l.zero;
    o.bucket_bytes = 4096;
    opt = std::make_unique<optim::DistributedOptimizer>(
        ps, [](std::vector<optim::ParamRef> r) { return std::make_unique<optim::AdamW>(std::move(r), optim::AdamWOptions{}); },
        o, optim::ParallelGroups{mesh.comm("dp"), tp.comm, mesh.comm("pp"), l.sp});
  }

  // One step on this rank's rows of (ids, tg) in M micro-batches; returns the global loss.
  double step(const Tensor& ids, const Tensor& tg, int M, PipelineStats* stats = nullptr) {
    const Range rows = split_range(ids.size(0), mesh.degree("dp"), mesh.coord("dp"));
    std::vector<std::pair<Tensor, Tensor>> parts;
    for (int m = 0; m < M; ++m) {
      Range r = split_range(rows.size(), M, m);
      parts.push_back({ids.narrow(0, rows.begin + r.begin, r.size()).contiguous(),
                       tg.narrow(0, rows.begin + r.begin, r.size()).contiguous()});
    }
    const double valid = count_valid(tg);
    StageFns f;
    f.forward = [&](int m, const Tensor& in) {
      // As the trainer does: the random state is a function of (micro-batch, stage), so a
      // recomputed forward draws the same dropout masks.
      runtime::default_generator().set_state({runtime::mix64(uint64_t(m) * 131 + uint64_t(stage)), 0});
      Tensor out = model.forward_stage(in);
      return exec.last() ? runtime::mul_scalar(model.loss_sum(out, parts[size_t(m)].second), 1.0 / valid) : out;
    };
    f.first_input = [&](int m) { return parts[size_t(m)].first; };
    const int64_t t_local = tp.sp() ? kSeq / tp.size() : kSeq;
    f.activation_shape = [&](int m) { return runtime::Dims{parts[size_t(m)].first.size(0), t_local, model.config().d_model}; };
    f.dtype = DType::f64;
    f.set_sync = [&](bool on) { opt->set_sync(on); };
    opt->zero_grad();
    PipelineStats st = exec.run(f);
    if (stats) *stats = st;
    opt->finish_backward();
    Tensor loss = Tensor::scalar(st.losses, DType::f64);
    mesh.comm("pp")->all_reduce(loss);
    mesh.comm("dp")->all_reduce(loss);
    return loss.item();
  }
};

void check(const ModelConfig& cfg, const PipeLayout& l, const Trace& ref) {
  const double tol = 1e-10;
  PipeRank r(cfg, l);
  const std::string where = l.str() + " rank " + std::to_string(world()->rank());
  for (int64_t s = 0; s < kSteps; ++s) {
    auto [ids, tg] = batch(s, cfg.vocab_size);
    const double loss = r.step(ids, tg, l.M);
    EXPECT_NEAR(loss, ref.losses[size_t(s)], tol * std::abs(ref.losses[size_t(s)])) << where << " step " << s;
    for (const GradSync::Slice& sl : r.opt->sync().owned()) {
      const optim::ShardedParam& p = r.opt->params()[sl.param];
      Tensor want = take_local(ref.grads[size_t(s)].at(p.name), p.shard, sl.begin, sl.end);
      EXPECT_LE(rel_diff(sl.grad, want), tol) << where << " step " << s << " gradient of " << p.name;
    }
    r.opt->step(kLr);
  }
  for (auto& p : r.model.parameters())
    EXPECT_LE(rel_diff(p.tensor.detach().reshape({-1}), take_local(ref.params.at(p.name), p.shard, 0, p.tensor.numel())),
              tol)
        << where << " parameter " << p.name;
}

TEST(PipelineParity, EveryScheduleRecomputeAndMicroBatchCount) {
  const int n = world()->size();
  if (n != 2 && n != 4) GTEST_SKIP() << "runs pp = world size in {2, 4}";
  for (bool tied : {false, true}) {
    const ModelConfig cfg = config(tied);
    const Trace ref = reference(cfg);
    for (PipeSchedule s : {PipeSchedule::gpipe, PipeSchedule::one_f_one_b})
      for (Recompute rc : {Recompute::never, Recompute::always, Recompute::except_last})
        for (int M : {1, 2, 4, 8}) {
          PipeLayout l;
          l.pp = n;
          l.M = M;
          l.schedule = s;
          l.recompute = rc;
          check(cfg, l, ref);
        }
  }
}

TEST(PipelineParity, ThreeDimensions) {
  if (world()->size() != 8) GTEST_SKIP() << "needs 8 ranks (dp 2 x tp 2 x pp 2)";
  const ModelConfig cfg = config(true);
  const Trace ref = reference(cfg);
  for (int zero : {0, 1, 2})
    for (bool sp : {false, true}) {
      PipeLayout l;
      l.dp = l.tp = l.pp = 2;
      l.M = 2;
      l.zero = zero;
      l.sp = sp;
      l.schedule = zero == 1 ? PipeSchedule::gpipe : PipeSchedule::one_f_one_b;
      l.recompute = sp ? Recompute::always : Recompute::never;
      check(cfg, l, ref);
    }
}

TEST(PipelineParity, RematerialisationReplaysDropout) {
  // With dropout, every re-materialisation mode gives bit-identical losses and gradients.
  const int n = world()->size();
  if (n != 2 && n != 4) GTEST_SKIP() << "runs pp = world size in {2, 4}";
  ModelConfig cfg = config(false);
  cfg.dropout = 0.2;
  std::vector<double> losses;
  std::vector<std::vector<double>> grads;
  for (Recompute rc : {Recompute::never, Recompute::always, Recompute::except_last}) {
    PipeLayout l;
    l.pp = n;
    l.M = 4;
    l.schedule = PipeSchedule::one_f_one_b;
    l.recompute = rc;
    PipeRank r(cfg, l);
    auto [ids, tg] = batch(0, cfg.vocab_size);
    losses.push_back(r.step(ids, tg, l.M));
    std::vector<double> g;
    for (const GradSync::Slice& sl : r.opt->sync().owned())
      for (double v : sl.grad.to_double_vector()) g.push_back(v);
    grads.push_back(g);
  }
  PipeLayout plain;
  plain.pp = n;
  PipeRank without(config(false), plain);
  auto [ids, tg] = batch(0, cfg.vocab_size);
  EXPECT_NE(without.step(ids, tg, 1), losses[0]) << "dropout had no effect";
  for (size_t k = 1; k < losses.size(); ++k) {
    EXPECT_EQ(losses[k], losses[0]) << "mode " << k;
    EXPECT_EQ(grads[k], grads[0]) << "mode " << k;
  }
}

// ---- activation memory ----------------------------------------------------------------------

// Peak bytes allocated above the level before the step, on this stage, and the stats, for M
// micro-batches of 8 rows each (so activations outweigh the gradients allocated in backward).
std::pair<int64_t, PipelineStats> step_peak(const ModelConfig& cfg, PipeLayout l) {
  PipeRank r(cfg, l);
  auto [ids, tg] = batch(0, cfg.vocab_size, 8 * l.M);
  r.step(ids, tg, l.M);  // warm-up: gradients and optimizer state exist from here on
  runtime::Allocator& a = runtime::cpu_allocator();
  world()->barrier();
  const int64_t before = a.stats().live_bytes;
  a.reset_peak();
  PipelineStats st;
  r.step(ids, tg, l.M, &st);
  return {a.stats().peak_bytes - before, st};
}

TEST(PipelineMemory, PeaksFollowTheSchedule) {
  const int n = world()->size();
  if (n != 2 && n != 4) GTEST_SKIP() << "runs pp = world size in {2, 4}";
  ModelConfig cfg = config(false);
  cfg.d_model = 64;  // activations large against the gradients' buffers
  cfg.ffn_hidden = 256;
  PipeLayout g;
  g.pp = n;
  g.schedule = PipeSchedule::gpipe;
  g.M = 4;
  const int64_t gpipe4 = step_peak(cfg, g).first;
  g.M = 8;
  const int64_t gpipe8 = step_peak(cfg, g).first;
  g.recompute = Recompute::always;
  const int64_t remat8 = step_peak(cfg, g).first;
  PipeLayout f = g;
  f.schedule = PipeSchedule::one_f_one_b;
  f.recompute = Recompute::never;
  auto [onef8, onef_stats] = step_peak(cfg, f);
  const int stage = world()->rank();
  std::printf("[rank %d stage %d] activation peak (KiB): gpipe M4 %lld, gpipe M8 %lld, gpipe M8 remat %lld, "
              "1f1b M8 %lld (%lld in flight)\n",
              world()->rank(), stage, (long long)gpipe4 / 1024, (long long)gpipe8 / 1024, (long long)remat8 / 1024,
              (long long)onef8 / 1024, (long long)onef_stats.peak_in_flight);
  // GPipe keeps every micro-batch's graph until the drain: twice the micro-batches, about twice
  // the memory.
  EXPECT_GT(gpipe8, gpipe4 * 1.6) << "stage " << stage;
  // With re-materialisation only inputs are kept between forward and backward.
  EXPECT_LT(remat8, gpipe8 / 2) << "stage " << stage;
  // 1F1B: at most pp - stage micro-batches in flight.
  EXPECT_EQ(onef_stats.peak_in_flight, std::min(n - stage, 8)) << "stage " << stage;
  if (n - stage < 8) EXPECT_LT(onef8, gpipe8) << "stage " << stage;
}

}  // namespace
}  // namespace loom::parallel::testing
