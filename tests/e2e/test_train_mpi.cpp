// test_train_mpi.cpp: `mpirun -np N loom train` end to end: layouts (data, tensor, sequence and
// pipeline parallel) reproduce the one-process
// losses (f64), a run checkpointed in one layout resumes in others with the losses of the
// uninterrupted run, a rank killed mid-run ends the whole job quickly with a message, and a
// parallel section that does not fit the job is a clear error.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/e2e/metrics_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

struct RunResult {
  int exit_code;
  std::string output;
  double seconds;
};

// `np` ranks under mpirun (np 0: the binary alone), OMP_NUM_THREADS=1, stdout+stderr captured.
RunResult run(int np, const std::string& args, const std::string& env = "") {
  const std::string vars = "OMP_NUM_THREADS=1 LOOM_COMM_TIMEOUT=20 " + env;
  std::string cmd = "env " + vars + " ";
  if (np > 0) {
    cmd += std::string(LOOM_MPIRUN) + " --allow-run-as-root --oversubscribe -np " + std::to_string(np);
    std::istringstream words(vars);
    for (std::string w; words >> w;) cmd += " -x " + w.substr(0, w.find('='));
    cmd += " ";
  }
  auto t0 = std::chrono::steady_clock::now();
  loom::testing::RunResult r = loom::testing::run_command(cmd + LOOM_BINARY + " " + args);
  return {r.exit_code, r.output, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

// f64, uneven everywhere: vocab 263 (arithmetic's 259 + 4), MLP 90, 6 rows over 4 ranks.
std::string config(const std::string& dir) {
  std::string path = dir + "/c.yaml";
  std::ofstream(path) << "run: {dir: " << dir << "/one, dtype: f64, seed: 7}\n"
                      << "model: {d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_hidden: 90, vocab_size: 263}\n"
                      << "data: {seq_len: 16, arithmetic: {mask_prompt: true}}\n"
                      << "train: {steps: 4, batch_size: 6, grad_accum: 2, log_every: 1, eval_every: 0, eval_batches: 1}\n"
                      << "optim: {lr: 0.01}\n"
                      << "checkpoint: {every: 2, keep: 0}\n";
  return path;
}

std::map<int64_t, double> losses(const std::string& run_dir) { return loom::testing::training_losses(run_dir); }

void expect_same_losses(const std::map<int64_t, double>& got, const std::map<int64_t, double>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (auto& [step, l] : want) EXPECT_NEAR(got.at(step), l, 1e-10 * std::abs(l)) << what << " step " << step;
}

class DistributedE2E : public ::testing::Test {
 protected:
  loom::testing::TempDir tmp{"loom_mpi_e2e"};
  std::string dir = tmp.str();
  std::string cfg = config(dir);
  std::map<int64_t, double> one;
  void SetUp() override {
    RunResult r = run(0, "train " + cfg);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    one = losses(dir + "/one");
    ASSERT_EQ(one.size(), 4u);
  }
};

TEST_F(DistributedE2E, LayoutsReproduceOneProcess) {
  struct L {
    int np;
    std::string set;
  };
  for (const L& l : {L{4, "--set parallel.dp=2 --set parallel.tp=2 --set parallel.zero_stage=1"},
                     L{4, "--set parallel.tp=2 --set parallel.sequence_parallel=true --set parallel.zero_stage=2"},
                     L{2, "--set parallel.tp=2"}, L{3, "--set parallel.zero_stage=2"},
                     L{2, "--set parallel.pp=2 --set parallel.pipeline_schedule=gpipe --set parallel.pipeline_recompute=always"},
                     L{4, "--set parallel.pp=2 --set parallel.tp=2 --set parallel.pipeline_balance=measured"}}) {
    const std::string run_dir = dir + "/np" + std::to_string(l.np) + "_" + std::to_string(std::hash<std::string>{}(l.set));
    RunResult r = run(l.np, "train " + cfg + " --set run.dir=" + run_dir + " " + l.set);
    ASSERT_EQ(r.exit_code, 0) << l.set << "\n" << r.output;
    expect_same_losses(losses(run_dir), one, "np " + std::to_string(l.np) + " " + l.set);
    // The sharded checkpoint holds every parameter once: it loads as a plain model.
    RunResult g = run(0, "eval --ckpt " + run_dir + " --problems 2");
    EXPECT_EQ(g.exit_code, 0) << g.output;
  }
}

TEST_F(DistributedE2E, ResumesInAnotherLayout) {
  // Saved by dp 2 x tp 2 with ZeRO 2 at step 2, resumed by one process, by dp 4 (ZeRO 1) and
  // by tp 2 + SP: steps 3 and 4 match the uninterrupted one-process run.
  const std::string saved = dir + "/saved";
  RunResult r = run(4, "train " + cfg + " --set run.dir=" + saved +
                           " --set parallel.dp=2 --set parallel.tp=2 --set parallel.zero_stage=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(fs::is_directory(saved + "/checkpoints/step_00000002"));
  fs::remove_all(saved + "/checkpoints/step_00000004");
  struct L {
    int np;
    std::string set;
  };
  int k = 0;
  for (const L& l : {L{0, ""}, L{4, "--set parallel.zero_stage=1"},
                     L{2, "--set parallel.tp=2 --set parallel.sequence_parallel=true"}, L{2, "--set parallel.pp=2"}}) {
    const std::string run_dir = dir + "/resumed" + std::to_string(k++);
    fs::copy(saved, run_dir, fs::copy_options::recursive);
    RunResult rr = run(l.np, "train " + cfg + " --resume --set run.dir=" + run_dir + " " + l.set);
    ASSERT_EQ(rr.exit_code, 0) << l.set << "\n" << rr.output;
    EXPECT_NE(rr.output.find("resumed from"), std::string::npos) << rr.output;
    expect_same_losses(losses(run_dir), one, "resumed with np " + std::to_string(l.np) + " " + l.set);
  }
}

TEST_F(DistributedE2E, KilledRankEndsTheJob) {
  RunResult r = run(3, "train " + cfg + " --set run.dir=" + dir + "/killed --set train.steps=50",
                    "LOOM_TEST_KILL_AT_STEP=2 LOOM_TEST_KILL_RANK=1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  EXPECT_TRUE(r.output.find("signal 9") != std::string::npos || r.output.find("Killed") != std::string::npos)
      << r.output;
}

TEST_F(DistributedE2E, LayoutThatDoesNotFitIsAClearError) {
  RunResult r = run(3, "train " + cfg + " --set run.dir=" + dir + "/bad --set parallel.tp=2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("world size 3 does not divide by tp 2"), std::string::npos) << r.output;
}

}  // namespace
