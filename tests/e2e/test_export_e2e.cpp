// test_export_e2e.cpp: `loom export` and `loom score` end to end: help text, an HF export
// scores exactly like the checkpoint it came from, a GGUF export is written, transformers'
// fixtures score through the CLI, and bad input gives one clear error and a non-zero exit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

loom::testing::RunResult loom_cmd(const std::string& args) {
  return loom::testing::run_command(std::string("env OMP_NUM_THREADS=1 ") + LOOM_BINARY + " " + args);
}

// Trains a tiny model for a few steps into dir/run; `model` is the YAML model section.
void train_tiny(const std::string& dir, const std::string& model) {
  std::ofstream(dir + "/t.yaml") << "run: {dir: " << dir << "/run, seed: 3}\n" << model << "\n"
                                 << "data: {seq_len: 16}\n"
                                 << "train: {steps: 3, batch_size: 4, log_every: 1, eval_every: 0, eval_batches: 1}\n";
  auto r = loom_cmd("train " + dir + "/t.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

nlohmann::json score(const std::string& source) {
  auto r = loom_cmd("score " + source + " --ids 1,2,3,40,7 --greedy 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output);
}

TEST(ExportE2E, HelpListsTheOptions) {
  auto r = loom_cmd("export --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--ckpt", "--format", "--out", "--dtype", "hf,gguf", "f32,bf16,f16", "--max-shard-bytes"})
    EXPECT_NE(r.output.find(opt), std::string::npos) << opt << " missing from:\n" << r.output;
  EXPECT_EQ(loom_cmd("--help").output.find("export") != std::string::npos, true);
}

TEST(ExportE2E, HfExportScoresLikeTheCheckpointAndGgufIsWritten) {
  loom::testing::TempDir tmp("expe2e");
  train_tiny(tmp.str(), "model: {d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, vocab_size: 272}");
  auto r = loom_cmd("export --ckpt " + tmp / "run" + " --format hf --out " + tmp / "hf");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("as LlamaForCausalLM (f32)"), std::string::npos) << r.output;
  nlohmann::json a = score("--ckpt " + tmp / "run"), b = score("--hf " + tmp / "hf");
  EXPECT_EQ(a["logprobs"], b["logprobs"]);  // f32 export: bit-identical
  EXPECT_EQ(a["greedy"], b["greedy"]);
  EXPECT_EQ(a["logprobs"].size(), 5u);
  EXPECT_EQ(a["logprobs"][0].size(), 272u);
  r = loom_cmd("export --ckpt " + tmp / "run/checkpoints" + " --format gguf --dtype f16 --out " + tmp / "m.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream g(tmp / "m.gguf", std::ios::binary);
  char magic[4] = {};
  g.read(magic, 4);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
}

TEST(ExportE2E, TransformersFixtureScoresThroughTheCli) {
  nlohmann::json s = score(std::string("--hf ") + LOOM_TEST_DATA_DIR + "/hf/llama_gqa");
  EXPECT_EQ(s["logprobs"][0].size(), 320u);
  EXPECT_EQ(s["greedy"].size(), 4u);
}

TEST(ExportE2E, ClearErrors) {
  loom::testing::TempDir tmp("expe2e");
  auto r = loom_cmd("export --ckpt " + tmp / "absent" + " --format hf --out " + tmp / "x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("loom: error: no checkpoint at '" + tmp / "absent" + "'"), std::string::npos) << r.output;
  r = loom_cmd("export --ckpt x --format onnx --out y");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("onnx"), std::string::npos) << r.output;
  train_tiny(tmp.str(), "model: {preset: gpt2, d_model: 32, n_layers: 1, n_heads: 2}");
  r = loom_cmd("export --ckpt " + tmp / "run" + " --format gguf --out " + tmp / "g.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("GGUF export writes llama.cpp's 'llama' architecture, which needs norm rmsnorm"), std::string::npos)
      << r.output;
  r = loom_cmd("export --ckpt " + tmp / "run" + " --format hf --out " + tmp / "g");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("as GPT2LMHeadModel"), std::string::npos) << r.output;
}

}  // namespace
