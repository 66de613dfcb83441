// test_hf_import.cpp: Hugging Face checkpoints made by transformers itself
// (tools/make_hf_fixtures.py -> tests/data/hf/) import into Loom with the logits transformers
// computed (within 1e-5), their tokenizer.json encodes the same ids, bad config.json files
// and checkpoints are refused by name, and `init_from` starts training from the weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/io.h"
#include "data/tokenizer.h"
#include "launch/checkpoint.h"
#include "launch/hf_model.h"
#include "launch/import_hf.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "runtime/safetensors.h"
#include "tests/test_util.h"

namespace loom::launch {
namespace {

namespace fs = std::filesystem;
using runtime::DType;
using runtime::Tensor;

const std::string kHf = std::string(LOOM_TEST_DATA_DIR) + "/hf/";

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

using loom::testing::error_of;

// ---- against transformers ----------------------------------------------------------------------

struct Fixture {
  const char* dir;
  const char* cls;
};

class HfFixture : public ::testing::TestWithParam<Fixture> {};

TEST_P(HfFixture, LogitsMatchTransformers) {
  const std::string dir = kHf + GetParam().dir;
  HfCheckpoint c = load_hf_checkpoint(dir);
  EXPECT_STREQ(hf_class_name(hf_arch_for(c.config)), GetParam().cls);
  models::TransformerLM model(c.config, 0);
  assign_parameters(model, c.tensors, dir);
  model.set_training(false);
  runtime::SafetensorsFile ref = runtime::read_safetensors(dir + "/reference.safetensors");
  runtime::NoGradGuard ng;
  Tensor logits = model.forward(ref.at("ids"));
  ASSERT_EQ(logits.shape(), ref.at("logits").shape());
  double diff = max_abs_diff(logits, ref.at("logits"));
  double scale = runtime::amax(runtime::abs(ref.at("logits"))).item();
  EXPECT_LT(diff, 1e-5) << GetParam().dir << ": max |logit diff| " << diff << " (logits up to " << scale << ")";
  EXPECT_GT(scale, 0.5);  // the reference is not degenerate
}

TEST_P(HfFixture, TokenizerEncodesAsHuggingFace) {
  const std::string dir = kHf + GetParam().dir;
  data::BpeTokenizer tok = data::BpeTokenizer::load(dir + "/tokenizer.json");
  runtime::SafetensorsFile ref = runtime::read_safetensors(dir + "/reference.safetensors");
  std::vector<int32_t> ids = tok.encode(ref.metadata.at("text"));
  std::vector<int64_t> want = ref.at("text_ids").to_vector<int64_t>();
  EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), want);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixture,
                         ::testing::Values(Fixture{"llama_gqa", "LlamaForCausalLM"}, Fixture{"llama_tied", "LlamaForCausalLM"},
                                           Fixture{"qwen2_bf16", "Qwen2ForCausalLM"}, Fixture{"gpt2_f16", "GPT2LMHeadModel"}),
                         [](const auto& info) { return std::string(info.param.dir); });

TEST(HfImport, ConfigFieldsMapped) {
  models::ModelConfig g = read_hf_config(kHf + "llama_gqa");  // transformers 5 rope_parameters
  EXPECT_EQ(g.n_kv_heads, 2);
  EXPECT_EQ(g.vocab_size, 320);  // padded beyond the tokenizer's 300
  EXPECT_DOUBLE_EQ(g.rope_theta, 50000.0);
  EXPECT_DOUBLE_EQ(g.norm_eps, 1e-6);
  EXPECT_FALSE(g.tie_embeddings);
  models::ModelConfig t = read_hf_config(kHf + "llama_tied");
  EXPECT_TRUE(t.tie_embeddings);
  EXPECT_TRUE(t.bias);
  models::ModelConfig q = read_hf_config(kHf + "qwen2_bf16");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.bias);
  EXPECT_EQ(q.n_kv_heads, 1);
  models::ModelConfig p = read_hf_config(kHf + "gpt2_f16");
  EXPECT_EQ(p.norm, "layernorm");
  EXPECT_EQ(p.positions, "learned");
  EXPECT_EQ(p.max_seq_len, 64);
}

// ---- refusals ---------------------------------------------------------------------------------

class HfImportErrors : public ::testing::Test {
 protected:
  loom::testing::TempDir tmp{"hfimp"};
  // A copy of a fixture directory whose config.json is replaced by `config` (when given).
  std::string copy_of(const std::string& fixture, const std::string& config = "") {
    std::string dir = tmp / fixture;
    fs::copy(kHf + fixture, dir, fs::copy_options::recursive);
    if (!config.empty()) std::ofstream(dir + "/config.json", std::ios::trunc) << config;
    return dir;
  }
  std::string base_config() { return data::read_file(kHf + "llama_tied/config.json"); }
  std::string with(const std::string& key, const std::string& value) {
    nlohmann::json j = nlohmann::json::parse(base_config());
    if (value.empty()) j.erase(key);
    else j[key] = nlohmann::json::parse(value);
    return j.dump();
  }
  void expect_config_error(const std::string& config, const std::string& what) {
    std::string dir = copy_of("llama_tied", config);
    std::string msg = error_of([&] { load_hf_checkpoint(dir); });
    EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected \"" << what << "\" in: " << msg;
    fs::remove_all(dir);
  }
};

TEST_F(HfImportErrors, MalformedConfigJson) {
  expect_config_error("{\"model_type\": \"llama\", ", "invalid JSON");
  expect_config_error("[1, 2]", "not a JSON object");
  expect_config_error(with("hidden_size", ""), "hidden_size: missing (required)");
  expect_config_error(with("hidden_size", "\"32\""), "hidden_size: expected an integer, got \"32\"");
  expect_config_error(with("num_attention_heads", "5"), "hidden_size: 32 is not divisible by num_attention_heads 5");
}

TEST_F(HfImportErrors, UnsupportedArchitecturesAndSettings) {
  expect_config_error(with("architectures", "[\"MistralForCausalLM\"]"),
                      "unsupported architecture 'MistralForCausalLM' (Loom imports LlamaForCausalLM, Qwen2ForCausalLM");
  expect_config_error(with("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}"),
                      "rope_scaling: rope type 'llama3' is not supported");
  expect_config_error(with("head_dim", "16"), "head_dim: 16 differs from hidden_size / num_attention_heads = 8");
  expect_config_error(with("hidden_act", "\"gelu\""), "hidden_act: 'gelu' is not supported");
  expect_config_error(with("mlp_bias", "false"), "attention_bias: true with mlp_bias false cannot be expressed");
}

TEST_F(HfImportErrors, TensorsMustMatchTheConfig) {
  // A config with one layer more than the weights: the missing tensors are named.
  std::string dir = copy_of("llama_tied", with("num_hidden_layers", "3"));
  std::string msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find("missing tensors 'model.layers.2.input_layernorm.weight'"), std::string::npos) << msg;
  // One layer fewer: the left-over tensors are named as unsupported.
  dir = copy_of("llama_gqa");
  nlohmann::json j = nlohmann::json::parse(data::read_file(dir + "/config.json"));
  j["num_hidden_layers"] = 1;
  std::ofstream(dir + "/config.json", std::ios::trunc) << j.dump();
  msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find("unsupported tensors 'model.layers.1."), std::string::npos) << msg;
  // Wrong shapes name the tensor and both shapes.
  dir = tmp / "shape";
  fs::copy(kHf + "llama_tied", dir, fs::copy_options::recursive);
  j = nlohmann::json::parse(data::read_file(dir + "/config.json"));
  j["intermediate_size"] = 48;
  std::ofstream(dir + "/config.json", std::ios::trunc) << j.dump();
  msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find("'model.layers.0.mlp.gate_proj.weight' has shape [64, 32], config.json implies [48, 32]"), std::string::npos) << msg;
}

TEST_F(HfImportErrors, TruncatedAndMissingWeightFiles) {
  std::string dir = copy_of("llama_tied");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 100);
  std::string msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find(dir + "/model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outside the"), std::string::npos) << msg;
  fs::remove(dir + "/model.safetensors");
  msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find("no model.safetensors or model.safetensors.index.json"), std::string::npos) << msg;
  // A shard listed in the index that is missing.
  dir = copy_of("llama_gqa");
  fs::remove(dir + "/model-00002-of-00003.safetensors");
  msg = error_of([&] { load_hf_checkpoint(dir); });
  EXPECT_NE(msg.find(dir + "/model-00002-of-00003.safetensors': cannot open"), std::string::npos) << msg;
}

// ---- init_from --------------------------------------------------------------------------------

Config train_config(const std::string& run_dir, const std::string& extra) {
  return load_config_text("run: {dir: " + run_dir + ", seed: 3, threads: 1}\n"
                          "data: {seq_len: 16}\n"
                          "train: {steps: 1, batch_size: 2, log_every: 1, eval_every: 0, eval_batches: 1}\n"
                          "optim: {lr: 0.0, weight_decay: 0.0}\n" + extra,
                          "test.yaml", train_schema());
}

TEST(InitFrom, TrainingStartsFromTheHfWeights) {
  loom::testing::TempDir tmp("initfrom");
  const std::string hf = kHf + "llama_gqa";
  Config cfg = train_config(tmp / "run", "init_from: {format: hf, path: " + hf + "}\n");
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(train(cfg, TrainOptions{}), 0);
  ::testing::internal::GetCapturedStderr();
  ::testing::internal::GetCapturedStdout();
  // lr 0: the checkpoint holds exactly the imported weights, under a config that rebuilds the
  // model without the HF directory, and the HF tokenizer.
  CheckpointState s = load_checkpoint(latest_checkpoint(tmp / "run/checkpoints").value());
  HfCheckpoint c = load_hf_checkpoint(hf);
  for (const auto& [name, t] : c.tensors) {
    Tensor got = s.find("model/" + name);
    ASSERT_TRUE(got.defined()) << name;
    EXPECT_EQ(max_abs_diff(got, t), 0.0) << name;
  }
  Config saved = load_config_text(s.strings.at("config"), "saved", train_schema());
  EXPECT_EQ(saved.get_int("model.n_kv_heads"), 2);
  EXPECT_EQ(saved.get_int("model.vocab_size"), 320);
  EXPECT_DOUBLE_EQ(saved.get_float("model.rope_theta"), 50000.0);
  EXPECT_EQ(s.strings.at("tokenizer.json"), data::BpeTokenizer::load(hf + "/tokenizer.json").to_json());
}

TEST(InitFrom, ConflictingModelKeyIsNamed) {
  loom::testing::TempDir tmp("initfrom");
  Config cfg = train_config(tmp / "run", "model: {d_model: 64}\ninit_from: {format: hf, path: " + kHf + "llama_gqa}\n");
  std::string msg = error_of([&] { resolve_model_keys(cfg); });
  EXPECT_NE(msg.find("test.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.d_model: conflicts with init_from.path"), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.json gives 32"), std::string::npos) << msg;
  // A RoPE model's context length may be chosen shorter; everything else comes from config.json.
  Config shorter = train_config(tmp / "run", "model: {max_seq_len: 32}\ninit_from: {format: hf, path: " + kHf + "llama_gqa}\n");
  Config r = resolve_model_keys(shorter);
  EXPECT_EQ(r.get_int("model.max_seq_len"), 32);
  EXPECT_EQ(r.get_int("model.d_model"), 32);
  EXPECT_EQ(r.get_int("model.ffn_hidden"), 64);
  Config bad = train_config(tmp / "run", "init_from: {format: hf, path: " + tmp / "absent" + "}\n");
  msg = error_of([&] { resolve_model_keys(bad); });
  EXPECT_NE(msg.find("init_from.path"), std::string::npos) << msg;
  EXPECT_NE(msg.find(tmp / "absent/config.json: no such file"), std::string::npos) << msg;
}

TEST(InitFrom, Gpt2PresetDefaultsAreWrittenOut) {
  // A reloaded config has every key set; the preset's defaults must be explicit by then.
  loom::testing::TempDir tmp("preset");
  Config cfg = train_config(tmp / "run", "model: {preset: gpt2, d_model: 32, n_layers: 1, n_heads: 2}\n");
  Config r = resolve_model_keys(cfg);
  Config reloaded = load_config_text(r.to_yaml(), "saved", train_schema());
  models::ModelConfig m = build_model_config(reloaded, 259);
  EXPECT_EQ(m.norm, "layernorm");
  EXPECT_EQ(m.activation, "gelu");
  EXPECT_EQ(m.positions, "learned");
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_TRUE(m.bias);
}

}  // namespace
}  // namespace loom::launch
