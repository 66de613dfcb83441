// hf_model.cpp: the Loom <-> Hugging Face tables (config.json fields, parameter names) for
// LlamaForCausalLM, Qwen2ForCausalLM and GPT2LMHeadModel.
#include "launch/hf_model.h"

#include <cmath>
#include <set>
#include <stdexcept>

#include "runtime/ops.h"

namespace loom::launch {

using models::ModelConfig;
using nlohmann::json;
using nlohmann::ordered_json;
using runtime::Dims;
using runtime::Tensor;

namespace {

std::string layer(int64_t l) { return "model.layers." + std::to_string(l) + "."; }
std::string gpt2_layer(int64_t l) { return "transformer.h." + std::to_string(l) + "."; }

// Why `m` is not a Llama/Qwen2 model ("" when it is).
std::string llama_mismatch(const ModelConfig& m) {
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : ", ") + s; };
  if (m.norm != "rmsnorm") add("norm rmsnorm (this model has " + m.norm + ")");
  if (m.activation != "swiglu") add("activation swiglu (this model has " + m.activation + ")");
  if (m.positions != "rope") add("positions rope (this model has " + m.positions + ")");
  return why;
}

std::string gpt2_mismatch(const ModelConfig& m) {
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : ", ") + s; };
  if (m.norm != "layernorm") add("norm layernorm (this model has " + m.norm + ")");
  if (m.activation != "gelu") add("activation gelu (this model has " + m.activation + ")");
  if (m.positions != "learned") add("positions learned (this model has " + m.positions + ")");
  if (!m.bias) add("bias true");
  if (m.n_kv_heads != m.n_heads) add("n_kv_heads = n_heads (GPT-2 has no grouped-query attention)");
  return why;
}

// ---- reading config.json -------------------------------------------------------------------

struct JsonReader {
  const json& j;
  const std::string& path;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(path + ": " + key + ": " + what);
  }
  bool has(const std::string& key) const { return j.contains(key) && !j[key].is_null(); }
  int64_t integer(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required)");
    if (!j[key].is_number_integer()) fail(key, "expected an integer, got " + j[key].dump());
    int64_t v = j[key].get<int64_t>();
    if (v < 1) fail(key, "must be positive, got " + std::to_string(v));
    return v;
  }
  int64_t integer_or(const std::string& key, int64_t def) const { return has(key) ? integer(key) : def; }
  double number_or(const std::string& key, double def) const {
    if (!has(key)) return def;
    if (!j[key].is_number()) fail(key, "expected a number, got " + j[key].dump());
    return j[key].get<double>();
  }
  bool boolean_or(const std::string& key, bool def) const {
    if (!has(key)) return def;
    if (!j[key].is_boolean()) fail(key, "expected true or false, got " + j[key].dump());
    return j[key].get<bool>();
  }
  std::string string_or(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    if (!j[key].is_string()) fail(key, "expected a string, got " + j[key].dump());
    return j[key].get<std::string>();
  }
};

// rope_theta lives at the top level (transformers 4.x) or in rope_parameters (5.x); any rope
// scaling changes the frequencies, which Loom does not implement.
double rope_theta_of(const JsonReader& r) {
  double theta = r.number_or("rope_theta", 10000.0);
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!r.has(key)) continue;
    const json& p = r.j[key];
    if (!p.is_object()) r.fail(key, "expected an object, got " + p.dump());
    std::string type = p.value("rope_type", p.value("type", std::string("default")));
    if (type != "default")
      r.fail(key, "rope type '" + type + "' is not supported (Loom implements plain RoPE, rope_type default)");
    if (p.contains("rope_theta")) {
      if (!p["rope_theta"].is_number()) r.fail(std::string(key) + ".rope_theta", "expected a number");
      theta = p["rope_theta"].get<double>();
    }
  }
  return theta;
}

}  // namespace

const char* hf_class_name(HfArch a) {
  switch (a) {
    case HfArch::llama: return "LlamaForCausalLM";
    case HfArch::qwen2: return "Qwen2ForCausalLM";
    case HfArch::gpt2: return "GPT2LMHeadModel";
  }
  return "?";
}

HfArch hf_arch_for(const ModelConfig& m) {
  std::string llama = llama_mismatch(m), gpt2 = gpt2_mismatch(m);
  if (llama.empty()) return m.qkv_bias && !m.bias ? HfArch::qwen2 : HfArch::llama;
  if (gpt2.empty()) return HfArch::gpt2;
  throw std::runtime_error("this model cannot be expressed in Hugging Face format: LlamaForCausalLM needs " + llama +
                           "; GPT2LMHeadModel needs " + gpt2);
}

ordered_json hf_config_json(const ModelConfig& m, const SpecialIds& ids, const std::string& torch_dtype) {
  HfArch arch = hf_arch_for(m);
  auto id = [](int64_t v) { return v >= 0 ? ordered_json(v) : ordered_json(nullptr); };
  ordered_json j;
  j["architectures"] = {hf_class_name(arch)};
  if (arch == HfArch::gpt2) {
    j["model_type"] = "gpt2";
    j["vocab_size"] = m.vocab_size;
    j["n_positions"] = m.max_seq_len;
    j["n_embd"] = m.d_model;
    j["n_layer"] = m.n_layers;
    j["n_head"] = m.n_heads;
    j["n_inner"] = m.ffn_hidden;
    j["activation_function"] = "gelu_new";  // GELU, tanh approximation (Loom's gelu)
    j["layer_norm_epsilon"] = m.norm_eps;
    j["resid_pdrop"] = 0.0;
    j["embd_pdrop"] = 0.0;
    j["attn_pdrop"] = 0.0;
    j["scale_attn_weights"] = true;
    j["scale_attn_by_inverse_layer_idx"] = false;
    j["reorder_and_upcast_attn"] = false;
  } else {
    j["model_type"] = arch == HfArch::qwen2 ? "qwen2" : "llama";
    j["vocab_size"] = m.vocab_size;
    j["hidden_size"] = m.d_model;
    j["intermediate_size"] = m.ffn_hidden;
    j["num_hidden_layers"] = m.n_layers;
    j["num_attention_heads"] = m.n_heads;
    j["num_key_value_heads"] = m.n_kv_heads;
    j["head_dim"] = m.head_dim();
    j["hidden_act"] = "silu";
    j["rms_norm_eps"] = m.norm_eps;
    j["rope_theta"] = m.rope_theta;
    j["rope_scaling"] = nullptr;
    j["max_position_embeddings"] = m.max_seq_len;
    if (arch == HfArch::qwen2) {
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["max_window_layers"] = m.n_layers;
    } else {
      j["attention_bias"] = m.bias;
      j["mlp_bias"] = m.bias;
      j["pretraining_tp"] = 1;
    }
    j["attention_dropout"] = 0.0;
  }
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["bos_token_id"] = id(ids.bos);
  j["eos_token_id"] = id(ids.eos);
  j["pad_token_id"] = id(ids.pad);
  j["initializer_range"] = m.init_std;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;  // transformers 4.x
  j["dtype"] = torch_dtype;        // transformers 5.x
  return j;
}

HfArch hf_arch_of(const json& j, const std::string& path) {
  if (!j.is_object()) throw std::runtime_error(path + ": not a JSON object");
  std::string type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  std::string cls;
  if (j.contains("architectures")) {
    if (!j["architectures"].is_array() || j["architectures"].size() != 1 || !j["architectures"][0].is_string())
      throw std::runtime_error(path + ": architectures: expected one class name, got " + j["architectures"].dump());
    cls = j["architectures"][0].get<std::string>();
  }
  for (HfArch a : {HfArch::llama, HfArch::qwen2, HfArch::gpt2}) {
    const std::string mt = a == HfArch::llama ? "llama" : a == HfArch::qwen2 ? "qwen2" : "gpt2";
    if (cls == hf_class_name(a) || (cls.empty() && type == mt)) return a;
  }
  throw std::runtime_error(path + ": unsupported architecture '" + (cls.empty() ? "model_type " + type : cls) +
                           "' (Loom imports LlamaForCausalLM, Qwen2ForCausalLM and GPT2LMHeadModel)");
}

ModelConfig model_config_from_hf(const json& j, const std::string& path) {
  HfArch arch = hf_arch_of(j, path);
  JsonReader r{j, path};
  ModelConfig m;
  if (arch == HfArch::gpt2) {
    m = ModelConfig::gpt2(r.integer("vocab_size"), r.integer("n_embd"), r.integer("n_layer"), r.integer("n_head"));
    m.ffn_hidden = r.integer_or("n_inner", 4 * m.d_model);
    m.max_seq_len = r.integer("n_positions");
    m.norm_eps = r.number_or("layer_norm_epsilon", 1e-5);
    m.tie_embeddings = r.boolean_or("tie_word_embeddings", true);
    std::string act = r.string_or("activation_function", "gelu_new");
    if (act != "gelu_new" && act != "gelu_pytorch_tanh")
      r.fail("activation_function", "'" + act + "' is not supported (Loom's GPT-2 uses the tanh GELU, gelu_new)");
    if (r.boolean_or("scale_attn_by_inverse_layer_idx", false))
      r.fail("scale_attn_by_inverse_layer_idx", "true is not supported");
    if (!r.boolean_or("scale_attn_weights", true)) r.fail("scale_attn_weights", "false is not supported");
    if (r.boolean_or("add_cross_attention", false)) r.fail("add_cross_attention", "true is not supported");
  } else {
    m = ModelConfig::llama(r.integer("vocab_size"), r.integer("hidden_size"), r.integer("num_hidden_layers"),
                           r.integer("num_attention_heads"), 0);
    m.n_kv_heads = r.integer_or("num_key_value_heads", m.n_heads);
    m.ffn_hidden = r.integer("intermediate_size");
    m.norm_eps = r.number_or("rms_norm_eps", 1e-6);
    m.rope_theta = rope_theta_of(r);
    m.max_seq_len = r.integer_or("max_position_embeddings", 2048);
    m.tie_embeddings = r.boolean_or("tie_word_embeddings", false);
    if (m.d_model % m.n_heads)
      r.fail("hidden_size", std::to_string(m.d_model) + " is not divisible by num_attention_heads " + std::to_string(m.n_heads));
    if (r.has("head_dim") && r.integer("head_dim") != m.d_model / m.n_heads)
      r.fail("head_dim", std::to_string(r.integer("head_dim")) + " differs from hidden_size / num_attention_heads = " +
                             std::to_string(m.d_model / m.n_heads) + " (Loom derives head_dim from them)");
    std::string act = r.string_or("hidden_act", "silu");
    if (act != "silu") r.fail("hidden_act", "'" + act + "' is not supported (Loom's gated MLP uses silu)");
    if (arch == HfArch::qwen2) {
      m.qkv_bias = true;
      if (r.boolean_or("use_sliding_window", false)) r.fail("use_sliding_window", "sliding-window attention is not supported");
    } else {
      bool attn_bias = r.boolean_or("attention_bias", false), mlp_bias = r.boolean_or("mlp_bias", false);
      if (attn_bias != mlp_bias)
        r.fail(attn_bias ? "attention_bias" : "mlp_bias",
               std::string("true with ") + (attn_bias ? "mlp_bias" : "attention_bias") +
                   " false cannot be expressed (Loom's bias puts biases on attention and MLP together)");
      m.bias = attn_bias;
    }
  }
  try {
    m.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  return m;
}

std::vector<std::pair<std::string, Dims>> loom_parameter_shapes(const ModelConfig& m) {
  const int64_t C = m.d_model, D = m.head_dim(), H = m.n_heads, Hkv = m.n_kv_heads, F = m.ffn_hidden;
  const bool ln = m.norm == "layernorm", qkv_bias = m.bias || m.qkv_bias;
  std::vector<std::pair<std::string, Dims>> out;
  auto norm = [&](const std::string& p) {
    out.push_back({p + ".weight", {C}});
    if (ln) out.push_back({p + ".bias", {C}});
  };
  auto linear = [&](const std::string& p, int64_t o, int64_t i, bool bias) {
    out.push_back({p + ".weight", {o, i}});
    if (bias) out.push_back({p + ".bias", {o}});
  };
  out.push_back({"model.embed_tokens.weight", {m.vocab_size, C}});
  if (m.positions == "learned") out.push_back({"model.embed_positions.weight", {m.max_seq_len, C}});
  for (int64_t l = 0; l < m.n_layers; ++l) {
    std::string p = layer(l);
    norm(p + "input_layernorm");
    linear(p + "self_attn.q_proj", H * D, C, qkv_bias);
    linear(p + "self_attn.k_proj", Hkv * D, C, qkv_bias);
    linear(p + "self_attn.v_proj", Hkv * D, C, qkv_bias);
    linear(p + "self_attn.o_proj", C, H * D, m.bias);
    norm(p + "post_attention_layernorm");
    if (m.activation == "swiglu") linear(p + "mlp.gate_proj", F, C, m.bias);
    linear(p + "mlp.up_proj", F, C, m.bias);
    linear(p + "mlp.down_proj", C, F, m.bias);
  }
  norm("model.norm");
  if (!m.tie_embeddings) out.push_back({"lm_head.weight", {m.vocab_size, C}});
  return out;
}

namespace {

// GPT-2 name of a Loom tensor that maps one-to-one (norms, embeddings, c_proj, c_fc); the
// flag says whether the weight is stored transposed (Conv1D). Empty for q/k/v (fused).
std::pair<std::string, bool> gpt2_name(const std::string& loom) {
  static const std::vector<std::pair<std::string, std::string>> top = {
      {"model.embed_tokens.weight", "transformer.wte.weight"},
      {"model.embed_positions.weight", "transformer.wpe.weight"},
      {"model.norm.weight", "transformer.ln_f.weight"},
      {"model.norm.bias", "transformer.ln_f.bias"},
      {"lm_head.weight", "lm_head.weight"}};
  for (const auto& [a, b] : top)
    if (a == loom) return {b, false};
  static const std::vector<std::pair<std::string, std::string>> per_layer = {
      {"input_layernorm.", "ln_1."}, {"post_attention_layernorm.", "ln_2."}, {"self_attn.o_proj.", "attn.c_proj."},
      {"mlp.up_proj.", "mlp.c_fc."}, {"mlp.down_proj.", "mlp.c_proj."}};
  const std::string pre = "model.layers.";
  if (loom.rfind(pre, 0) != 0) return {"", false};
  size_t dot = loom.find('.', pre.size());
  std::string l = loom.substr(pre.size(), dot - pre.size()), rest = loom.substr(dot + 1);
  for (const auto& [a, b] : per_layer)
    if (rest.rfind(a, 0) == 0) {
      std::string leaf = rest.substr(a.size());
      bool conv = leaf == "weight" && a.find("norm") == std::string::npos;
      return {"transformer.h." + l + "." + b + leaf, conv};
    }
  return {"", false};
}

Tensor transposed(const Tensor& t) { return t.transpose(0, 1).contiguous(); }

}  // namespace

NamedTensors to_hf_tensors(const ModelConfig& m, const std::map<std::string, Tensor>& params) {
  HfArch arch = hf_arch_for(m);
  auto get = [&](const std::string& name) -> const Tensor& {
    auto it = params.find(name);
    if (it == params.end()) throw std::runtime_error("export: the checkpoint has no parameter '" + name + "'");
    return it->second;
  };
  NamedTensors out;
  if (arch != HfArch::gpt2) {
    for (const auto& [name, shape] : loom_parameter_shapes(m)) out.push_back({name, get(name)});
    return out;
  }
  runtime::NoGradGuard ng;
  for (const auto& [name, shape] : loom_parameter_shapes(m)) {
    if (name.find(".self_attn.k_proj.") != std::string::npos || name.find(".self_attn.v_proj.") != std::string::npos)
      continue;  // fused into c_attn with q
    size_t q = name.find(".self_attn.q_proj.");
    if (q != std::string::npos) {
      std::string base = name.substr(0, q) + ".self_attn.", leaf = name.substr(q + 18);
      Tensor fused = runtime::concat({get(base + "q_proj." + leaf), get(base + "k_proj." + leaf), get(base + "v_proj." + leaf)}, 0);
      std::string l = name.substr(13, q - 13);
      out.push_back({gpt2_layer(std::stoll(l)) + "attn.c_attn." + leaf, leaf == "weight" ? transposed(fused) : fused});
      continue;
    }
    auto [hf, conv] = gpt2_name(name);
    if (hf.empty()) throw std::logic_error("to_hf_tensors: no GPT-2 name for '" + name + "'");
    out.push_back({hf, conv ? transposed(get(name)) : get(name)});
  }
  return out;
}

std::map<std::string, Tensor> from_hf_tensors(const ModelConfig& m, std::map<std::string, Tensor> hf,
                                              const std::string& where) {
  // Buffers some checkpoints carry that are not parameters; transformers ignores them too.
  auto ignorable = [&](const std::string& n) {
    auto ends = [&](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
    return ends(".rotary_emb.inv_freq") || ends(".attn.masked_bias") || ends(".attn.bias") ||
           (m.tie_embeddings && n == "lm_head.weight");
  };
  const bool gpt2 = hf_arch_for(m) == HfArch::gpt2;
  std::map<std::string, Tensor> out;
  std::vector<std::string> missing, wrong;
  runtime::NoGradGuard ng;
  auto take = [&](const std::string& name) -> Tensor {
    auto it = hf.find(name);
    if (it == hf.end()) {
      missing.push_back(name);
      return Tensor();
    }
    Tensor t = it->second;
    hf.erase(it);
    return t;
  };
  auto check = [&](const std::string& loom, const std::string& hf_name, Tensor t, const Dims& shape) {
    if (!t.defined()) return;
    if (t.shape() != shape) {
      wrong.push_back("'" + hf_name + "' has shape " + t.shape().str() + ", config.json implies " + shape.str());
      return;
    }
    out[loom] = t;
  };
  const int64_t C = m.d_model;
  for (const auto& [name, shape] : loom_parameter_shapes(m)) {
    if (!gpt2) {
      check(name, name, take(name), shape);
      continue;
    }
    if (name.find(".self_attn.k_proj.") != std::string::npos || name.find(".self_attn.v_proj.") != std::string::npos)
      continue;
    size_t q = name.find(".self_attn.q_proj.");
    if (q != std::string::npos) {
      std::string leaf = name.substr(q + 18), l = name.substr(13, q - 13);
      std::string hf_name = gpt2_layer(std::stoll(l)) + "attn.c_attn." + leaf;
      Tensor t = take(hf_name);
      Dims fused_shape = leaf == "weight" ? Dims{C, 3 * C} : Dims{3 * C};
      if (!t.defined()) continue;
      if (t.shape() != fused_shape) {
        wrong.push_back("'" + hf_name + "' has shape " + t.shape().str() + ", config.json implies " + fused_shape.str());
        continue;
      }
      Tensor f = leaf == "weight" ? transposed(t) : t;  // [3C, C] or [3C]
      std::string base = name.substr(0, q) + ".self_attn.";
      out[base + "q_proj." + leaf] = f.narrow(0, 0, C).contiguous();
      out[base + "k_proj." + leaf] = f.narrow(0, C, C).contiguous();
      out[base + "v_proj." + leaf] = f.narrow(0, 2 * C, C).contiguous();
      continue;
    }
    auto [hf_name, conv] = gpt2_name(name);
    Tensor t = take(hf_name);
    if (t.defined() && conv) {
      Dims stored{shape[1], shape[0]};
      if (t.shape() != stored) {
        wrong.push_back("'" + hf_name + "' has shape " + t.shape().str() + ", config.json implies " + stored.str());
        continue;
      }
      t = transposed(t);
    }
    check(name, hf_name, t, shape);
  }
  std::vector<std::string> unknown;
  for (const auto& [name, t] : hf)
    if (!ignorable(name)) unknown.push_back(name);
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + (v[i].front() == '\'' ? v[i] : "'" + v[i] + "'");
    if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  if (!wrong.empty()) throw std::runtime_error(where + ": tensor shapes do not match config.json: " + list(wrong));
  if (!missing.empty()) throw std::runtime_error(where + ": missing tensors " + list(missing));
  if (!unknown.empty())
    throw std::runtime_error(where + ": unsupported tensors " + list(unknown) + " (not part of a " +
                             hf_class_name(hf_arch_for(m)) + " that Loom can run)");
  return out;
}

}  // namespace loom::launch
