// test_train_e2e.cpp: the `loom` binary end to end: learning, exact resume after SIGKILL
// (also mid-checkpoint), and the clear errors for bad configs, checkpoints and data.
#include <gtest/gtest.h>
#include <sys/wait.h>

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

using loom::testing::RunResult;

// Runs the loom binary with `args` (and env assignments in `env`), capturing stdout+stderr.
RunResult run_loom(const std::string& args, const std::string& env = "") {
  return loom::testing::run_command("env OMP_NUM_THREADS=1 " + env + " " + LOOM_BINARY + " " + args);
}

// A small, fast config (the quickstart's shape, shrunk) on the arithmetic corpus.
std::string small_config(const std::string& dir, int steps, const std::string& extra = "") {
  std::string path = dir + "/small.yaml";
  std::ofstream(path) << "run: {dir: " << dir << "/run, seed: 7}\n"
                      << "model: {d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_hidden: 128}\n"
                      << "data: {source: arithmetic, seq_len: 32, arithmetic: {min_digits: 1, max_digits: 2}}\n"
                      << "train: {steps: " << steps << ", batch_size: 16, grad_accum: 2, log_every: 1, eval_every: 0, eval_batches: 2}\n"
                      << "optim: {lr: 3.0e-3, warmup_steps: 5}\n" << extra;
  return path;
}

std::map<int64_t, double> losses(const std::string& run_dir) { return loom::testing::training_losses(run_dir); }

double last_val_loss(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  double v = -1;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) v = j["val_loss"];
  }
  return v;
}

}  // namespace

TEST(TrainE2E, ConfigErrorsNameFileLineAndKey) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::string path = dir + "/bad.yaml";
  std::ofstream(path) << "model:\n  n_layer: 4\n  d_model: big\ntrain: {steps: -3}\n";
  RunResult r = run_loom("train " + path);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(path + ":2:3: unknown key 'model.n_layer' (did you mean 'model.n_layers'?)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(path + ":3:12: model.d_model"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.steps"), std::string::npos) << r.output;
  RunResult o = run_loom("train --set optim.lr=fast --set train.stepz=3");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.output.find("--set optim.lr=fast"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("train.stepz"), std::string::npos) << o.output;
  EXPECT_EQ(run_loom("train --list-keys").exit_code, 0);
  EXPECT_EQ(run_loom("--version").exit_code, 0);
  for (const char* sub : {"train", "generate", "eval", "data prepare", "tokenizer train"})
    EXPECT_EQ(run_loom(std::string(sub) + " --help").exit_code, 0) << sub;
}

TEST(TrainE2E, LearnsArithmeticAndResumesBitExactlyAfterSigkill) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::string cfg = small_config(dir, 24, "checkpoint: {every: 4, keep: 2}\n");
  // Reference: one uninterrupted run.
  RunResult full = run_loom("train " + cfg + " --set run.dir=" + dir + "/full");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  auto ref = losses(dir + "/full");
  ASSERT_EQ(ref.size(), 24u);
  // Learning: the validation loss falls from ln(259) = 5.56 at init to below 2.8 in 24 steps
  // (measured 2.63; the digits of random operands keep it well above 0).
  EXPECT_LT(last_val_loss(dir + "/full"), 2.8);
  EXPECT_LT(ref[24], ref[1] - 2.0);
  // Throughput records: MFU's denominator is written with it and only ever rises (the best GEMM
  // rate measured so far), and mfu * peak / tokens_per_s is the model's FLOPs per token, the
  // same in every record.
  {
    std::ifstream in(dir + "/full/metrics.jsonl");
    std::string line;
    double last_peak = 0, flops_per_token = 0;
    int records = 0;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (!j.contains("tokens_per_s")) continue;
      ++records;
      const double peak = j.at("gemm_peak_gflops"), mfu = j.at("mfu"), tps = j.at("tokens_per_s");
      EXPECT_GT(peak, 0.0);
      EXPECT_GE(peak, last_peak);
      last_peak = peak;
      const double fpt = mfu * peak * 1e9 / tps;
      if (flops_per_token == 0) flops_per_token = fpt;
      EXPECT_NEAR(fpt, flops_per_token, 1e-9 * flops_per_token);
    }
    EXPECT_EQ(records, 24);
    EXPECT_GT(flops_per_token, 0.0);
  }
  // Killed after step 10 (last checkpoint: 8), resumed.
  RunResult killed = run_loom("train " + cfg + " --set run.dir=" + dir + "/k", "LOOM_TEST_KILL_AT_STEP=10");
  EXPECT_EQ(killed.exit_code, 128 + 9) << killed.output;
  RunResult resumed = run_loom("train " + cfg + " --set run.dir=" + dir + "/k --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos);
  EXPECT_EQ(losses(dir + "/k"), ref);  // bit-identical, every step
  // Killed in the middle of writing the step-16 checkpoint: the step-12 one stays good.
  RunResult torn = run_loom("train " + cfg + " --set run.dir=" + dir + "/t --set train.steps=16",
                        "LOOM_TEST_KILL_IN_SAVE=5");
  EXPECT_NE(torn.exit_code, 0);
  // The first save (step 4) is the one killed; nothing good exists yet, so it starts over.
  RunResult again = run_loom("train " + cfg + " --set run.dir=" + dir + "/t --resume");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(losses(dir + "/t"), ref);
}

TEST(TrainE2E, CorruptCheckpointIsRefusedOrSkippedWithFallback) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::string cfg = small_config(dir, 8, "checkpoint: {every: 4, keep: 3}\n");
  ASSERT_EQ(run_loom("train " + cfg).exit_code, 0);
  std::string newest = dir + "/run/checkpoints/step_00000008.h5";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);  // truncated
  RunResult r = run_loom("train " + cfg + " --resume --set train.steps=10");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("step_00000008.h5"), std::string::npos) << r.output;
  RunResult f = run_loom("train " + cfg + " --resume --fallback --set train.steps=10");
  EXPECT_EQ(f.exit_code, 0) << f.output;
  EXPECT_NE(f.output.find("step_00000004.h5"), std::string::npos) << f.output;
  RunResult g = run_loom("generate --ckpt " + dir + "/run --prompt 12+ --max-new-tokens 4 --temperature 0");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_EQ(g.output.rfind("12+", 0), 0u) << g.output;
}

TEST(TrainE2E, BadDataFilesGiveClearErrors) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::ofstream(dir + "/a.jsonl") << "{\"text\": \"hello world\"}\n{\"text\": 3}\n";
  RunResult r = run_loom("data prepare " + dir + "/a.jsonl --out " + dir + "/shards");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(dir + "/a.jsonl:2"), std::string::npos) << r.output;
  // A good corpus trains from shards; a corrupted shard is named when training starts.
  std::ofstream t(dir + "/b.txt");
  for (int i = 0; i < 400; ++i) t << "the quick brown fox " << i << " jumps over the lazy dog.\n";
  t.close();
  RunResult p = run_loom("data prepare " + dir + "/b.txt --lines --vocab-size 300 --val-fraction 0.1 --out " + dir + "/shards");
  ASSERT_EQ(p.exit_code, 0) << p.output;
  std::string cfg = small_config(dir, 3);
  RunResult ok = run_loom("train " + cfg + " --set data.source=shards --set data.path=" + dir + "/shards");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  {
    std::fstream f(dir + "/shards/train_000.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  RunResult bad = run_loom("train " + cfg + " --set data.source=shards --set data.path=" + dir + "/shards --set run.dir=" + dir + "/run2");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("train_000.bin"), std::string::npos) << bad.output;
}

TEST(TrainE2E, NonFiniteStepsStopWithCheckpointOrAreSkipped) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  // A learning rate of 1e30 blows the parameters up, so a later loss is not finite.
  std::string cfg = small_config(dir, 6, "");
  RunResult stop = run_loom("train " + cfg + " --set optim.lr=1e30 --set optim.warmup_steps=0 --set optim.grad_clip=0");
  EXPECT_EQ(stop.exit_code, 3) << stop.output;
  EXPECT_NE(stop.output.find("non-finite"), std::string::npos) << stop.output;
  EXPECT_NE(stop.output.find("Last good state saved to"), std::string::npos) << stop.output;
  EXPECT_FALSE(fs::is_empty(dir + "/run/checkpoints"));
  RunResult skip = run_loom("train " + cfg + " --set run.dir=" + dir + "/skip --set optim.lr=1e30 --set optim.warmup_steps=0 "
                        "--set optim.grad_clip=0 --set optim.nan_policy=skip");
  EXPECT_EQ(skip.exit_code, 0) << skip.output;
  EXPECT_NE(skip.output.find("step skipped"), std::string::npos) << skip.output;
}

TEST(TrainE2E, Gpt2PresetTrains) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::string cfg = small_config(dir, 6, "");
  RunResult r = run_loom("train " + cfg + " --set model.preset=gpt2 --set model.dropout=0.1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto l = losses(dir + "/run");
  EXPECT_LT(l[6], l[1]);
  std::ifstream in(dir + "/run/config.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("preset: gpt2"), std::string::npos);
}

// run.matmul_precision=bf16 (AMX): the same run in mixed precision follows the f32 run's losses
// to bf16's rounding and still learns; without AMX the key is refused by name.
TEST(TrainE2E, Bf16MatmulPrecisionFollowsTheF32Run) {
  loom::testing::TempDir tmp("loom_e2e");
  std::string dir = tmp.str();
  std::string cfg = small_config(dir, 30, "");
  RunResult f32 = run_loom("train " + cfg + " --set run.dir=" + dir + "/f32");
  ASSERT_EQ(f32.exit_code, 0) << f32.output;
  RunResult bf16 = run_loom("train " + cfg + " --set run.dir=" + dir + "/bf16 --set run.matmul_precision=bf16");
  if (bf16.exit_code != 0 && bf16.output.find("AMX-BF16") != std::string::npos) {
    EXPECT_NE(bf16.output.find("run.matmul_precision"), std::string::npos) << bf16.output;
    GTEST_SKIP() << "no AMX-BF16 here: " << bf16.output;
  }
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  auto a = losses(dir + "/f32"), b = losses(dir + "/bf16");
  ASSERT_EQ(a.size(), 30u);
  ASSERT_EQ(b.size(), 30u);
  // Same initialisation and data: the first loss differs only by the forward's rounding.
  EXPECT_NEAR(b[1], a[1], 2e-3 * a[1]);
  EXPECT_NE(b[1], a[1]);  // the products really were rounded to bf16
  EXPECT_LT(b[30], 0.8 * b[1]);
  EXPECT_NEAR(b[30], a[30], 0.05 * a[30]);
}
