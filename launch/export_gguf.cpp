// export_gguf.cpp: Loom llama-style models to and from llama.cpp GGUF files (what goes in,
// and why the q/k rows are permuted, in export_gguf.h).
#include "launch/export_gguf.h"

#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "launch/gguf.h"
#include "launch/hf_model.h"
#include "runtime/ops.h"

namespace loom::launch {

using runtime::DType;
using runtime::Tensor;

namespace {

// Loom (HF Llama) per-layer names -> GGUF names, and the top-level ones.
const std::vector<std::pair<std::string, std::string>>& layer_names() {
  static const std::vector<std::pair<std::string, std::string>> t = {
      {"input_layernorm", "attn_norm"},     {"self_attn.q_proj", "attn_q"},    {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},       {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},        {"mlp.up_proj", "ffn_up"},         {"mlp.down_proj", "ffn_down"}};
  return t;
}

std::string gguf_name(const std::string& loom) {
  if (loom == "model.embed_tokens.weight") return "token_embd.weight";
  if (loom == "model.norm.weight") return "output_norm.weight";
  if (loom == "lm_head.weight") return "output.weight";
  const std::string pre = "model.layers.";
  if (loom.rfind(pre, 0) == 0) {
    size_t dot = loom.find('.', pre.size());
    std::string l = loom.substr(pre.size(), dot - pre.size()), rest = loom.substr(dot + 1);
    size_t leaf = rest.rfind('.');
    std::string module = rest.substr(0, leaf), kind = rest.substr(leaf + 1);
    for (const auto& [a, b] : layer_names())
      if (module == a) return "blk." + l + "." + b + "." + kind;
  }
  throw std::logic_error("gguf_name: no GGUF name for '" + loom + "'");
}

uint32_t file_type_of(DType d) {
  switch (d) {
    case DType::f32: return 0;
    case DType::f16: return 1;
    case DType::bf16: return 32;
    default: throw std::runtime_error(std::string("export: dtype ") + runtime::dtype_name(d) + " is not f32, bf16 or f16");
  }
}

struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<std::string> merges;
};

// tokenizer.json (Hugging Face BPE) -> llama.cpp's gpt2 vocabulary, padded to `vocab_size`.
GgufVocab vocab_from_tokenizer_json(const std::string& text, int64_t vocab_size) {
  auto fail = [](const std::string& what) { throw std::runtime_error("export: tokenizer.json: " + what); };
  nlohmann::json j = nlohmann::json::parse(text);
  const auto& model = j.at("model");
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<bool> seen;
  auto put = [&](int64_t id, const std::string& s, int64_t type) {
    if (id < 0 || id >= vocab_size)
      fail("token id " + std::to_string(id) + " is outside the model's vocabulary of " + std::to_string(vocab_size));
    if (size_t(id) >= tokens.size()) {
      tokens.resize(size_t(id) + 1);
      types.resize(size_t(id) + 1);
      seen.resize(size_t(id) + 1);
    }
    tokens[size_t(id)] = s;
    types[size_t(id)] = type;
    seen[size_t(id)] = true;
  };
  for (const auto& [tok, id] : model.at("vocab").items()) put(id.get<int64_t>(), tok, 1);  // normal
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& a : j["added_tokens"]) put(a.at("id").get<int64_t>(), a.at("content").get<std::string>(), a.value("special", false) ? 3 : 4);
  for (size_t i = 0; i < seen.size(); ++i)
    if (!seen[i]) fail("no token has id " + std::to_string(i));
  GgufVocab v;
  v.tokens = std::move(tokens);
  v.types = std::move(types);
  for (int64_t id = int64_t(v.tokens.size()); id < vocab_size; ++id) {  // padded vocabulary
    v.tokens.push_back("[PAD" + std::to_string(id) + "]");
    v.types.push_back(5);  // unused
  }
  if (model.contains("merges"))
    for (const auto& m : model["merges"])
      v.merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  return v;
}

}  // namespace

Tensor permute_rope_rows(const Tensor& w, int64_t heads) {
  const int64_t D = w.size(0) / heads;
  runtime::Dims in{heads, 2, D / 2}, order{0, 2, 1};
  if (w.dim() == 2) {
    in.push_back(w.size(1));
    order.push_back(3);
  }
  return w.contiguous().view(in).permute(order).contiguous().view(w.shape());
}

Tensor unpermute_rope_rows(const Tensor& w, int64_t heads) {
  const int64_t D = w.size(0) / heads;
  runtime::Dims in{heads, D / 2, 2}, order{0, 2, 1};
  if (w.dim() == 2) {
    in.push_back(w.size(1));
    order.push_back(3);
  }
  return w.contiguous().view(in).permute(order).contiguous().view(w.shape());
}

void check_gguf_exportable(const models::ModelConfig& m) {
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : ", ") + s; };
  if (m.norm != "rmsnorm") add("norm rmsnorm (this model has " + m.norm + ")");
  if (m.activation != "swiglu") add("activation swiglu (this model has " + m.activation + ")");
  if (m.positions != "rope") add("positions rope (this model has " + m.positions + ")");
  if (!why.empty())
    throw std::runtime_error("GGUF export writes llama.cpp's 'llama' architecture, which needs " + why +
                             "; export this model with --format hf");
}

void write_gguf_model(const std::string& path, const models::ModelConfig& m, const std::map<std::string, Tensor>& params,
                      const std::string& tokenizer_json, DType dtype, const std::string& name) {
  check_gguf_exportable(m);
  const uint32_t file_type = file_type_of(dtype);
  GgufVocab vocab = vocab_from_tokenizer_json(tokenizer_json, m.vocab_size);
  data::BpeTokenizer tok = data::BpeTokenizer::from_json(tokenizer_json, "the checkpoint's tokenizer.json");
  const int64_t bos = tok.bos_id(), eos = tok.eos_id(), pad = tok.pad_id();

  using V = GgufValue;
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", V::str("llama")},
      {"general.name", V::str(name)},
      {"general.file_type", V::u32(file_type)},
      {"llama.context_length", V::u32(uint32_t(m.max_seq_len))},
      {"llama.embedding_length", V::u32(uint32_t(m.d_model))},
      {"llama.block_count", V::u32(uint32_t(m.n_layers))},
      {"llama.feed_forward_length", V::u32(uint32_t(m.ffn_hidden))},
      {"llama.attention.head_count", V::u32(uint32_t(m.n_heads))},
      {"llama.attention.head_count_kv", V::u32(uint32_t(m.n_kv_heads))},
      {"llama.attention.layer_norm_rms_epsilon", V::f32(float(m.norm_eps))},
      {"llama.rope.freq_base", V::f32(float(m.rope_theta))},
      {"llama.rope.dimension_count", V::u32(uint32_t(m.head_dim()))},
      {"llama.vocab_size", V::u32(uint32_t(m.vocab_size))},
      {"tokenizer.ggml.model", V::str("gpt2")},
      {"tokenizer.ggml.pre", V::str(kGgufPreTokenizer)},
      {"tokenizer.ggml.tokens", V::string_array(vocab.tokens)},
      {"tokenizer.ggml.token_type", V::i32_array(vocab.types)},
      {"tokenizer.ggml.merges", V::string_array(vocab.merges)},
  };
  if (bos >= 0) kv.push_back({"tokenizer.ggml.bos_token_id", V::u32(uint32_t(bos))});
  if (eos >= 0) kv.push_back({"tokenizer.ggml.eos_token_id", V::u32(uint32_t(eos))});
  if (pad >= 0) kv.push_back({"tokenizer.ggml.padding_token_id", V::u32(uint32_t(pad))});
  kv.push_back({"tokenizer.ggml.add_bos_token", V::boolean(false)});  // Loom adds none when encoding
  kv.push_back({"tokenizer.ggml.add_eos_token", V::boolean(false)});

  std::vector<std::pair<std::string, Tensor>> tensors;
  runtime::NoGradGuard ng;
  for (const auto& [loom, shape] : loom_parameter_shapes(m)) {
    auto it = params.find(loom);
    if (it == params.end()) throw std::runtime_error("export: the checkpoint has no parameter '" + loom + "'");
    Tensor t = it->second;
    if (loom.find(".self_attn.q_proj.") != std::string::npos) t = permute_rope_rows(t, m.n_heads);
    if (loom.find(".self_attn.k_proj.") != std::string::npos) t = permute_rope_rows(t, m.n_kv_heads);
    tensors.push_back({gguf_name(loom), t.to(t.dim() == 1 ? DType::f32 : dtype).contiguous()});
  }
  write_gguf(path, kv, tensors, 32);

  // Verify after write: read it back the way a test would and compare every tensor bit for bit.
  GgufModel back = read_gguf_model(path);
  for (const auto& [loom, shape] : loom_parameter_shapes(m)) {
    Tensor want = params.at(loom).to(shape.size() == 1 ? DType::f32 : dtype).to(DType::f32).contiguous();
    const Tensor& got = back.params.at(loom);
    if (got.shape() != want.shape() || std::memcmp(want.raw_data(), got.raw_data(), size_t(want.numel()) * 4) != 0)
      throw std::runtime_error("export: verification of '" + path + "': '" + loom + "' reads back different values");
  }
}

GgufModel read_gguf_model(const std::string& path) {
  GgufFile g = read_gguf(path);
  auto fail = [&](const std::string& what) -> void { throw std::runtime_error("gguf '" + path + "': " + what); };
  auto typed = [&](const std::string& key, GgufType type) -> const GgufValue& {
    if (!g.contains(key)) fail("missing key " + key);
    const GgufValue& v = g.at(key);
    if (v.type != type)
      fail(key + " has type " + gguf_type_name(v.type) + ", llama.cpp expects " + gguf_type_name(type));
    return v;
  };
  auto u32 = [&](const std::string& key) { return typed(key, GgufType::u32).i; };
  if (typed("general.architecture", GgufType::string).s != "llama")
    fail("general.architecture is '" + g.at("general.architecture").s + "', Loom reads 'llama'");
  GgufModel out;
  models::ModelConfig& m = out.config;
  m.d_model = u32("llama.embedding_length");
  m.n_layers = u32("llama.block_count");
  m.ffn_hidden = u32("llama.feed_forward_length");
  m.n_heads = u32("llama.attention.head_count");
  m.n_kv_heads = u32("llama.attention.head_count_kv");
  m.max_seq_len = u32("llama.context_length");
  m.norm_eps = typed("llama.attention.layer_norm_rms_epsilon", GgufType::f32).f;
  m.rope_theta = typed("llama.rope.freq_base", GgufType::f32).f;
  if (m.n_heads < 1 || m.d_model % m.n_heads) fail("llama.embedding_length is not a multiple of llama.attention.head_count");
  if (u32("llama.rope.dimension_count") != m.d_model / m.n_heads) fail("llama.rope.dimension_count is not the head dimension");
  if (typed("tokenizer.ggml.model", GgufType::string).s != "gpt2") fail("tokenizer.ggml.model is not gpt2");
  const GgufValue& toks = typed("tokenizer.ggml.tokens", GgufType::array);
  const GgufValue& types = typed("tokenizer.ggml.token_type", GgufType::array);
  const GgufValue& merges = typed("tokenizer.ggml.merges", GgufType::array);
  if (toks.elem != GgufType::string || merges.elem != GgufType::string || types.elem != GgufType::i32)
    fail("tokenizer arrays have the wrong element types (tokens/merges string, token_type int32)");
  if (types.ints.size() != toks.strings.size()) fail("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length");
  out.tokens = toks.strings;
  out.token_types = types.ints;
  out.merges = merges.strings;
  if (g.contains("tokenizer.ggml.bos_token_id")) out.bos = u32("tokenizer.ggml.bos_token_id");
  if (g.contains("tokenizer.ggml.eos_token_id")) out.eos = u32("tokenizer.ggml.eos_token_id");
  m.vocab_size = int64_t(out.tokens.size());
  if (g.contains("llama.vocab_size") && u32("llama.vocab_size") != m.vocab_size)
    fail("llama.vocab_size differs from the number of tokens");
  auto has = [&](const std::string& n) {
    for (const auto& [name, t] : g.tensors)
      if (name == n) return true;
    return false;
  };
  m.tie_embeddings = !has("output.weight");
  m.bias = has("blk.0.attn_output.bias");
  m.qkv_bias = !m.bias && has("blk.0.attn_q.bias");
  try {
    m.validate();
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  std::map<std::string, bool> used;
  runtime::NoGradGuard ng;
  for (const auto& [loom, shape] : loom_parameter_shapes(m)) {
    std::string n = gguf_name(loom);
    if (!has(n)) fail("missing tensor " + n);
    Tensor t = g.tensor(n).to(DType::f32);
    if (t.shape() != shape) fail("tensor " + n + " has shape " + t.shape().str() + ", the metadata implies " + shape.str());
    if (loom.find(".self_attn.q_proj.") != std::string::npos) t = unpermute_rope_rows(t, m.n_heads);
    if (loom.find(".self_attn.k_proj.") != std::string::npos) t = unpermute_rope_rows(t, m.n_kv_heads);
    out.params[loom] = t.contiguous();
    used[n] = true;
  }
  for (const auto& [name, t] : g.tensors)
    if (!used.count(name)) fail("unexpected tensor " + name);
  return out;
}

}  // namespace loom::launch
