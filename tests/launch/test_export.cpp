// test_export.cpp: `loom export` in-process: Hugging Face and GGUF exports of random models
// import back to identical parameters and logits; the files follow their formats exactly
// (safetensors header, shards and index, GGUF keys with their types, ggml dimension order,
// alignment, tensor order, the RoPE row permutation, the tokenizer); malformed GGUF files
// are refused by name; what an engine cannot express is refused with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/io.h"
#include "data/tokenizer.h"
#include "launch/checkpoint.h"
#include "launch/export.h"
#include "launch/export_gguf.h"
#include "launch/export_hf.h"
#include "launch/gguf.h"
#include "launch/hf_model.h"
#include "launch/import_hf.h"
#include "launch/train_config.h"
#include "runtime/safetensors.h"
#include "tests/test_util.h"

namespace loom::launch {
namespace {

namespace fs = std::filesystem;
using models::ModelConfig;
using models::TransformerLM;
using runtime::DType;
using runtime::Tensor;

using loom::testing::error_of;

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), size_t(ca.numel()) * ca.element_size()) == 0;
}

// A tokenizer smaller than the models' vocabulary of 300 (so exports pad it).
std::string tokenizer_json() {
  static const std::string j = [] {
    std::string text;
    for (int i = 0; i < 10; ++i) text += "hello world, hello loom 12+34=46\nthe quick brown fox jumps over the lazy dog\n";
    return data::BpeTokenizer::train({text}, 270, {"<|bos|>", "<|eos|>", "<|pad|>"}).to_json();
  }();
  return j;
}
const data::BpeTokenizer& tokenizer() {
  static const data::BpeTokenizer t = data::BpeTokenizer::from_json(tokenizer_json());
  return t;
}

std::map<std::string, Tensor> params_of(const TransformerLM& m) {
  std::map<std::string, Tensor> p;
  for (const auto& np : m.parameters()) p[np.name] = np.tensor.detach();
  return p;
}

Tensor logits_of(const TransformerLM& m) {
  runtime::NoGradGuard ng;
  std::vector<int64_t> ids{5, 17, 42, 0, 299, 256, 7, 3, 100, 12};
  return m.forward(Tensor::from_vector(ids, {1, 10}));
}

struct Case {
  const char* name;
  ModelConfig cfg;
};

ModelConfig llama(int64_t kv, bool tied, bool bias, bool qkv_bias) {
  ModelConfig c = ModelConfig::llama(300, 32, 2, 4, kv);
  c.ffn_hidden = 48;
  c.max_seq_len = 64;
  c.tie_embeddings = tied;
  c.bias = bias;
  c.qkv_bias = qkv_bias;
  c.rope_theta = 50000;
  c.init_std = 0.2;  // wide weights: any mapping mistake shows in the logits
  return c;
}

std::vector<Case> llama_cases() {
  return {{"gqa", llama(2, false, false, false)}, {"tied", llama(4, true, false, false)},
          {"bias", llama(1, false, true, false)}, {"qkv_bias", llama(2, true, false, true)}};
}

// loom_parameter_shapes is the export/import side's list of what TransformerLM registers; it
// must stay equal to the model's own, in order, for every kind of config.
TEST(ExportTables, ParameterShapesMatchTheModel) {
  std::vector<Case> cases = llama_cases();
  ModelConfig g = ModelConfig::gpt2(300, 32, 2, 4);
  cases.push_back({"gpt2", g});
  g.tie_embeddings = false;
  cases.push_back({"gpt2_untied", g});
  ModelConfig mix = llama(2, false, false, true);
  mix.activation = "gelu";
  mix.norm = "layernorm";
  cases.push_back({"mix", mix});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TransformerLM m(c.cfg, 1);
    auto shapes = loom_parameter_shapes(c.cfg);
    ASSERT_EQ(shapes.size(), m.parameters().size());
    int64_t n = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_EQ(shapes[i].first, m.parameters()[i].name);
      EXPECT_EQ(shapes[i].second, m.parameters()[i].tensor.shape()) << shapes[i].first;
      n += m.parameters()[i].tensor.numel();
    }
    EXPECT_EQ(n, c.cfg.num_parameters());
  }
  // Qwen2 style: q/k/v biases, none on o_proj or the MLP.
  TransformerLM q(llama(2, false, false, true), 1);
  EXPECT_TRUE(q.has_param("model.layers.0.self_attn.k_proj.bias"));
  EXPECT_FALSE(q.has_param("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_FALSE(q.has_param("model.layers.0.mlp.up_proj.bias"));
}

// ---- Hugging Face ------------------------------------------------------------------------------

TEST(ExportHf, RoundTripGivesIdenticalParametersAndLogits) {
  loom::testing::TempDir tmp("exphf");
  std::vector<Case> cases = llama_cases();
  ModelConfig g = ModelConfig::gpt2(300, 32, 2, 4);
  g.max_seq_len = 64;
  g.init_std = 0.2;
  cases.push_back({"gpt2", g});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TransformerLM m(c.cfg, 11);
    std::string out = tmp / c.name;
    write_hf_model(out, c.cfg, params_of(m), tokenizer_json());
    HfCheckpoint back = load_hf_checkpoint(out);
    EXPECT_EQ(back.tokenizer_json, tokenizer_json());
    TransformerLM m2(back.config, 99);
    assign_parameters(m2, back.tensors, out);
    for (const auto& p : m.parameters()) EXPECT_TRUE(same_bytes(p.tensor.detach(), m2.param(p.name).detach())) << p.name;
    EXPECT_TRUE(same_bytes(logits_of(m), logits_of(m2)));
  }
}

TEST(ExportHf, ConfigAndFilesFollowTheFormat) {
  loom::testing::TempDir tmp("exphf");
  ModelConfig c = llama(2, false, false, false);
  TransformerLM m(c, 1);
  std::string out = tmp / "hf";
  write_hf_model(out, c, params_of(m), tokenizer_json(), {DType::bf16});
  nlohmann::json j = nlohmann::json::parse(data::read_file(out + "/config.json"));
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 32);
  EXPECT_EQ(j["intermediate_size"], 48);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 8);
  EXPECT_EQ(j["rope_theta"], 50000.0);
  EXPECT_EQ(j["max_position_embeddings"], 64);
  EXPECT_EQ(j["vocab_size"], 300);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["bos_token_id"], tokenizer().bos_id());
  EXPECT_EQ(j["eos_token_id"], tokenizer().eos_id());
  EXPECT_EQ(j["pad_token_id"], tokenizer().pad_id());
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  for (const char* f : {"generation_config.json", "tokenizer.json", "tokenizer_config.json"}) EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  nlohmann::json tc = nlohmann::json::parse(data::read_file(out + "/tokenizer_config.json"));
  EXPECT_EQ(tc["eos_token"], "<|eos|>");
  // model.safetensors: 8-byte LE length, JSON padded with spaces to a multiple of 8,
  // __metadata__ {"format": "pt"} first, contiguous offsets in order, BF16.
  std::string bytes = data::read_file(out + "/model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"},", 0), 0u) << header.substr(0, 60);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  nlohmann::ordered_json h = nlohmann::ordered_json::parse(header);
  uint64_t at = 0;
  for (const auto& [name, e] : h.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(e["dtype"], "BF16") << name;
    EXPECT_EQ(e["data_offsets"][0].get<uint64_t>(), at) << name;
    at = e["data_offsets"][1].get<uint64_t>();
  }
  EXPECT_EQ(8 + n + at, bytes.size());
}

TEST(ExportHf, ShardsAboveTheThresholdWithIndex) {
  loom::testing::TempDir tmp("exphf");
  ModelConfig c = llama(2, false, false, false);
  TransformerLM m(c, 1);
  std::string out = tmp / "hf";
  write_hf_model(out, c, params_of(m), tokenizer_json(), {DType::f32, 40'000});
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  nlohmann::json idx = nlohmann::json::parse(data::read_file(out + "/model.safetensors.index.json"));
  std::set<std::string> files;
  uint64_t total = 0;
  for (const auto& [name, f] : idx["weight_map"].items()) files.insert(f.get<std::string>());
  for (const auto& p : m.parameters()) total += uint64_t(p.tensor.numel()) * 4;
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_GE(files.size(), 3u);
  EXPECT_TRUE(files.count("model-00001-of-0000" + std::to_string(files.size()) + ".safetensors"));
  for (const std::string& f : files) {
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
    // Each shard stays under the threshold unless it holds a single larger tensor.
    runtime::SafetensorsFile sf = runtime::read_safetensors(out + "/" + f);
    uint64_t bytes = fs::file_size(out + "/" + f);
    EXPECT_TRUE(bytes < 40'000 + 1000 || sf.tensors.size() == 1) << f << " " << bytes;
  }
  HfCheckpoint back = load_hf_checkpoint(out);
  for (const auto& p : m.parameters()) EXPECT_TRUE(same_bytes(p.tensor.detach(), back.tensors.at(p.name))) << p.name;
}

TEST(ExportHf, ReplacesAnExportButNotOtherDirectories) {
  loom::testing::TempDir tmp("exphf");
  ModelConfig c = llama(2, false, false, false);
  TransformerLM a(c, 1), b(c, 2);
  std::string out = tmp / "hf";
  write_hf_model(out, c, params_of(a), tokenizer_json());
  write_hf_model(out, c, params_of(b), tokenizer_json(), {DType::f32, 40'000});  // now sharded
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));  // the old single file went with the old export
  HfCheckpoint back = load_hf_checkpoint(out);
  EXPECT_TRUE(same_bytes(back.tensors.at("lm_head.weight"), b.param("lm_head.weight").detach()));
  fs::create_directories(tmp / "other");
  std::ofstream(tmp / "other/notes.txt") << "mine";
  std::string msg = error_of([&] { write_hf_model(tmp / "other", c, params_of(a), tokenizer_json()); });
  EXPECT_NE(msg.find("holds 'notes.txt', which is not part of an export"), std::string::npos) << msg;
  EXPECT_EQ(data::read_file(tmp / "other/notes.txt"), "mine");
  for (const auto& e : fs::directory_iterator(tmp.path))  // no temporary directory left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(ExportHf, InexpressibleModelsAreRefusedWithTheReason) {
  loom::testing::TempDir tmp("exphf");
  ModelConfig c = llama(2, false, false, false);
  c.activation = "gelu";  // a Llama with a plain GELU MLP: neither Llama nor GPT-2
  TransformerLM m(c, 1);
  std::string msg = error_of([&] { write_hf_model(tmp / "x", c, params_of(m), tokenizer_json()); });
  EXPECT_NE(msg.find("cannot be expressed in Hugging Face format: LlamaForCausalLM needs activation swiglu (this model has gelu)"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("GPT2LMHeadModel needs norm layernorm (this model has rmsnorm)"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp / "x"));
  ModelConfig g = ModelConfig::gpt2(300, 32, 2, 4);
  g.n_kv_heads = 2;
  EXPECT_NE(error_of([&] { hf_arch_for(g); }).find("n_kv_heads = n_heads (GPT-2 has no grouped-query attention)"), std::string::npos);
}

// ---- GGUF -------------------------------------------------------------------------------------

TEST(ExportGguf, RoundTripGivesIdenticalParametersAndLogits) {
  loom::testing::TempDir tmp("expgguf");
  for (const Case& c : llama_cases()) {
    SCOPED_TRACE(c.name);
    TransformerLM m(c.cfg, 5);
    std::string out = tmp / (std::string(c.name) + ".gguf");
    write_gguf_model(out, c.cfg, params_of(m), tokenizer_json(), DType::f32, "test");
    GgufModel back = read_gguf_model(out);
    EXPECT_EQ(back.config.tie_embeddings, c.cfg.tie_embeddings);
    EXPECT_EQ(back.config.bias, c.cfg.bias);
    EXPECT_EQ(back.config.qkv_bias, c.cfg.qkv_bias);
    // GGUF stores epsilon as f32 (llama.cpp's type); the model keeps the double it had.
    EXPECT_EQ(float(back.config.norm_eps), float(c.cfg.norm_eps));
    back.config.norm_eps = c.cfg.norm_eps;
    TransformerLM m2(back.config, 99);
    assign_parameters(m2, back.params, out);
    for (const auto& p : m.parameters()) EXPECT_TRUE(same_bytes(p.tensor.detach(), m2.param(p.name).detach())) << p.name;
    EXPECT_TRUE(same_bytes(logits_of(m), logits_of(m2)));
  }
}

TEST(ExportGguf, HalfPrecisionKeepsVectorsF32) {
  loom::testing::TempDir tmp("expgguf");
  ModelConfig c = llama(2, false, false, true);
  TransformerLM m(c, 5);
  for (DType dt : {DType::f16, DType::bf16}) {
    std::string out = tmp / "m.gguf";
    write_gguf_model(out, c, params_of(m), tokenizer_json(), dt, "test");
    GgufFile g = read_gguf(out);
    EXPECT_EQ(g.at("general.file_type").i, dt == DType::f16 ? 1 : 32);
    for (const GgufTensorInfo& t : g.infos)
      EXPECT_EQ(t.ggml_type, t.ne.size() == 1 ? kGgmlF32 : (dt == DType::f16 ? kGgmlF16 : kGgmlBF16)) << t.name;
    GgufModel back = read_gguf_model(out);
    const Tensor& w = m.param("model.layers.1.mlp.down_proj.weight");
    EXPECT_TRUE(same_bytes(back.params.at("model.layers.1.mlp.down_proj.weight"), w.detach().to(dt).to(DType::f32)));
  }
}

TEST(ExportGguf, KeysTypesTensorsAndLayout) {
  loom::testing::TempDir tmp("expgguf");
  ModelConfig c = llama(2, false, false, false);
  TransformerLM m(c, 5);
  std::string out = tmp / "m.gguf";
  write_gguf_model(out, c, params_of(m), tokenizer_json(), DType::f32, "tiny");
  GgufFile g = read_gguf(out);
  EXPECT_EQ(g.version, 3u);
  auto expect = [&](const std::string& key, GgufType type, double value) {
    ASSERT_TRUE(g.contains(key)) << key;
    const GgufValue& v = g.at(key);
    EXPECT_EQ(v.type, type) << key;
    EXPECT_EQ(type == GgufType::f32 ? v.f : double(v.i), value) << key;
  };
  expect("general.alignment", GgufType::u32, 32);
  expect("general.file_type", GgufType::u32, 0);
  expect("llama.context_length", GgufType::u32, 64);
  expect("llama.embedding_length", GgufType::u32, 32);
  expect("llama.block_count", GgufType::u32, 2);
  expect("llama.feed_forward_length", GgufType::u32, 48);
  expect("llama.attention.head_count", GgufType::u32, 4);
  expect("llama.attention.head_count_kv", GgufType::u32, 2);
  expect("llama.rope.dimension_count", GgufType::u32, 8);
  expect("llama.vocab_size", GgufType::u32, 300);
  expect("llama.attention.layer_norm_rms_epsilon", GgufType::f32, double(float(1e-5)));
  expect("llama.rope.freq_base", GgufType::f32, 50000.0);
  const data::BpeTokenizer& tok = tokenizer();
  ASSERT_EQ(tok.vocab_size(), 270);
  expect("tokenizer.ggml.bos_token_id", GgufType::u32, tok.bos_id());
  expect("tokenizer.ggml.eos_token_id", GgufType::u32, tok.eos_id());
  expect("tokenizer.ggml.padding_token_id", GgufType::u32, tok.pad_id());
  EXPECT_EQ(g.at("general.architecture").s, "llama");
  EXPECT_EQ(g.at("general.name").s, "tiny");
  EXPECT_EQ(g.at("tokenizer.ggml.model").s, "gpt2");
  EXPECT_EQ(g.at("tokenizer.ggml.pre").s, "starcoder");
  EXPECT_EQ(g.at("tokenizer.ggml.add_bos_token").type, GgufType::boolean);
  // Tokens: byte-level text, special tokens control (3), padding unused (5) up to 300.
  const GgufValue& toks = g.at("tokenizer.ggml.tokens");
  const GgufValue& types = g.at("tokenizer.ggml.token_type");
  ASSERT_EQ(toks.strings.size(), 300u);
  EXPECT_EQ(types.elem, GgufType::i32);
  EXPECT_EQ(toks.strings[32], "\xC4\xA0");  // byte 0x20 (space) is "Ġ" in the byte-to-unicode alphabet
  EXPECT_EQ(toks.strings[size_t(tok.eos_id())], "<|eos|>");
  EXPECT_EQ(types.ints[size_t(tok.eos_id())], 3);
  EXPECT_EQ(types.ints[10], 1);
  EXPECT_EQ(toks.strings[299], "[PAD299]");
  EXPECT_EQ(types.ints[270], 5);
  const GgufValue& merges = g.at("tokenizer.ggml.merges");
  ASSERT_EQ(merges.strings.size(), 11u);
  EXPECT_NE(merges.strings[0].find(' '), std::string::npos);
  // Tensor names in order, dims in ggml order, offsets aligned, contiguous in info order.
  std::vector<std::string> want = {"token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                                   "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight",
                                   "blk.0.ffn_norm.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
                                   "blk.0.ffn_down.weight"};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(g.infos[i].name, want[i]);
  EXPECT_EQ(g.infos.back().name, "output.weight");
  EXPECT_EQ(g.infos[g.infos.size() - 2].name, "output_norm.weight");
  EXPECT_EQ(g.infos[0].ne, (std::vector<int64_t>{32, 300}));  // [V, C] row-major -> ne {C, V}
  EXPECT_EQ(g.infos[3].ne, (std::vector<int64_t>{32, 16}));   // attn_k: Hkv * D = 16 rows
  EXPECT_EQ(g.data_start % 32, 0u);
  uint64_t expect_offset = 0;
  for (const GgufTensorInfo& t : g.infos) {
    EXPECT_EQ(t.offset, expect_offset) << t.name;
    uint64_t bytes = 4;
    for (int64_t n : t.ne) bytes *= uint64_t(n);
    expect_offset = (t.offset + bytes + 31) / 32 * 32;
  }
  // RoPE rows: q head h, row 2i+j of the GGUF weight is row j*D/2+i of the HF weight.
  const Tensor& q = m.param("model.layers.0.self_attn.q_proj.weight");
  Tensor gq = g.tensor("blk.0.attn_q.weight");
  const int64_t D = 8;
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        EXPECT_TRUE(same_bytes(gq.narrow(0, h * D + 2 * i + j, 1), q.detach().narrow(0, h * D + j * D / 2 + i, 1)));
  // k uses the key/value head count: with 2 heads of 8 rows, GGUF row 1 is HF row 4.
  Tensor gk = g.tensor("blk.0.attn_k.weight");
  const Tensor& k = m.param("model.layers.0.self_attn.k_proj.weight");
  EXPECT_TRUE(same_bytes(gk.narrow(0, 1, 1), k.detach().narrow(0, 4, 1)));
  EXPECT_TRUE(same_bytes(gk.narrow(0, 9, 1), k.detach().narrow(0, 12, 1)));
  // Tied: no output tensor.
  ModelConfig t = llama(4, true, false, false);
  TransformerLM mt(t, 1);
  write_gguf_model(out, t, params_of(mt), tokenizer_json(), DType::f32, "tied");
  for (const GgufTensorInfo& i : read_gguf(out, false).infos) EXPECT_NE(i.name, "output.weight");
}

TEST(ExportGguf, Gpt2StyleIsRefused) {
  loom::testing::TempDir tmp("expgguf");
  ModelConfig g = ModelConfig::gpt2(300, 32, 2, 4);
  TransformerLM m(g, 1);
  std::string msg = error_of([&] { write_gguf_model(tmp / "g.gguf", g, params_of(m), tokenizer_json(), DType::f32, "g"); });
  EXPECT_NE(msg.find("GGUF export writes llama.cpp's 'llama' architecture, which needs norm rmsnorm (this model has layernorm), "
                     "activation swiglu (this model has gelu), positions rope (this model has learned); export this model with --format hf"),
            std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp / "g.gguf"));
}

// ---- from checkpoints ---------------------------------------------------------------------------

// Everything in the export dir, file name -> bytes.
std::map<std::string, std::string> files_of(const std::string& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(dir)) m[e.path().filename().string()] = data::read_file(e.path().string());
  return m;
}

TEST(ExportCheckpoint, SameFilesWhateverElseTheCheckpointHolds) {
  // Two checkpoints of one model, as two layouts might write them: parameters in another
  // order, other optimizer state, another step. The exports depend only on model/<name>.
  loom::testing::TempDir tmp("expckpt");
  const std::string yaml = "run: {dir: " + tmp / "run" + "}\nmodel: {d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, vocab_size: 300}\n";
  Config cfg = load_config_text(yaml, "t.yaml", train_schema());
  ModelConfig mc = build_model_config(cfg, 270);
  TransformerLM m(mc, 4);
  CheckpointState a, b;
  for (const auto& p : m.parameters()) a.tensors.push_back({"model/" + p.name, p.tensor.detach()});
  for (auto it = m.parameters().rbegin(); it != m.parameters().rend(); ++it) {
    b.tensors.push_back({"optim/" + it->name + "/exp_avg", Tensor::ones(it->tensor.shape())});
    b.tensors.push_back({"model/" + it->name, it->tensor.detach()});
  }
  a.step = 10;
  b.step = 20;
  for (CheckpointState* s : {&a, &b}) {
    s->strings["config"] = cfg.to_yaml();
    s->strings["tokenizer.json"] = tokenizer_json();
  }
  std::string ca = save_checkpoint(tmp / "a", a), cb = save_checkpoint(tmp / "b", b);
  for (const char* fmt : {"hf", "gguf"}) {
    ExportOptions o;
    o.format = fmt;
    o.out = tmp / (std::string("ea.") + fmt);
    export_model(load_export_source(ca), o);
    o.out = tmp / (std::string("eb.") + fmt);
    export_model(load_export_source(tmp / "b"), o);  // a checkpoints directory: its newest
  }
  EXPECT_EQ(files_of(tmp / "ea.hf"), files_of(tmp / "eb.hf"));
  EXPECT_EQ(data::read_file(tmp / "ea.gguf"), data::read_file(tmp / "eb.gguf"));
  EXPECT_EQ(read_gguf(tmp / "ea.gguf").at("general.name").s, "run");
  // A checkpoint missing a parameter is refused by name.
  CheckpointState c = a;
  c.tensors.erase(c.tensors.begin() + 3);
  std::string cc = save_checkpoint(tmp / "c", c);
  std::string msg = error_of([&] { load_export_source(cc); });
  EXPECT_NE(msg.find("checkpoint '" + cc + "': missing parameter 'model.layers.0.self_attn.k_proj.weight'"), std::string::npos) << msg;
}

// ---- malformed GGUF ---------------------------------------------------------------------------

class GgufErrors : public ::testing::Test {
 protected:
  loom::testing::TempDir tmp{"ggufbad"};
  std::string good;
  void SetUp() override {
    ModelConfig c = llama(2, false, false, false);
    TransformerLM m(c, 5);
    write_gguf_model(tmp / "good.gguf", c, params_of(m), tokenizer_json(), DType::f32, "tiny");
    good = data::read_file(tmp / "good.gguf");
  }
  void expect_error(const std::string& bytes, const std::string& what, bool model = false) {
    std::string p = tmp / "bad.gguf";
    data::atomic_write_file(p, bytes);
    std::string msg = error_of([&] { model ? (void)read_gguf_model(p) : (void)read_gguf(p); });
    EXPECT_NE(msg.find("gguf '" + p + "'"), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected \"" << what << "\" in: " << msg;
  }
  // Offset of the first occurrence of `s` in the good file.
  size_t at(const std::string& s) { return good.find(s); }
};

TEST_F(GgufErrors, BadMagicAndVersion) {
  expect_error("GGU", "too short for the GGUF magic");
  std::string b = good;
  b[0] = 'X';
  expect_error(b, "not a GGUF file");
  b = good;
  b[4] = 9;
  expect_error(b, "unsupported GGUF version 9");
}

TEST_F(GgufErrors, TruncatedAnywhere) {
  expect_error(good.substr(0, 20), "truncated: metadata count");
  expect_error(good.substr(0, at("llama.block_count") + 5), "truncated: metadata key #");
  expect_error(good.substr(0, at("tokenizer.ggml.tokens") + 40), "truncated: metadata 'tokenizer.ggml.tokens'");
  expect_error(good.substr(0, at("blk.1.ffn_up.weight") + 10), "truncated: tensor name #");
  expect_error(good.substr(0, at("blk.1.ffn_up.weight") + 25), "truncated: tensor 'blk.1.ffn_up.weight' dimensions");
  expect_error(good.substr(0, good.size() - 4), "truncated: tensor 'output.weight' needs bytes");
}

TEST_F(GgufErrors, HostileCountsAndTypes) {
  std::string b = good;
  uint64_t huge = uint64_t(1) << 60;
  std::memcpy(b.data() + 16, &huge, 8);  // metadata count
  expect_error(b, "cannot fit in");
  b = good;
  uint32_t bad_type = 99;
  size_t key = at("general.architecture");
  std::memcpy(b.data() + key + 20, &bad_type, 4);  // the value type after the 20-byte key
  expect_error(b, "metadata 'general.architecture': unknown value type 99");
  b = good;
  size_t tok = at("tokenizer.ggml.tokens") + 21 + 8;  // key, value type, element type
  std::memcpy(b.data() + tok, &huge, 8);               // element count
  expect_error(b, "claims 1152921504606846976 elements");
  b = good;
  size_t info = at("token_embd.weight") + 17 + 4 + 16;  // name, n_dims, ne[2]
  uint32_t q4 = 2;                                      // GGML_TYPE_Q4_0
  std::memcpy(b.data() + info, &q4, 4);
  expect_error(b, "tensor 'token_embd.weight': ggml type 2 is not supported");
  b = good;
  uint64_t off = 4;
  std::memcpy(b.data() + info + 4, &off, 8);
  expect_error(b, "tensor 'token_embd.weight': data offset 4 is not a multiple of the alignment 32");
}

TEST_F(GgufErrors, WrongKeyTypesForLlama) {
  // llama.block_count written as an int32 instead of a uint32.
  std::string b = good;
  size_t key = at("llama.block_count");
  uint32_t i32 = uint32_t(GgufType::i32);
  std::memcpy(b.data() + key + 17, &i32, 4);
  expect_error(b, "llama.block_count has type int32, llama.cpp expects uint32", true);
}

}  // namespace
}  // namespace loom::launch
