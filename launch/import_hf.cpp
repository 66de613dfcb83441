// import_hf.cpp: Hugging Face checkpoint directories into Loom (rules in import_hf.h).
#include "launch/import_hf.h"

#include <filesystem>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/io.h"
#include "launch/hf_model.h"
#include "runtime/safetensors.h"

namespace loom::launch {

namespace fs = std::filesystem;
using nlohmann::json;
using runtime::Tensor;

namespace {

json read_json(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(path + ": no such file");
  std::string text = data::read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(path + ": invalid JSON (" + e.what() + ")");
  }
}

}  // namespace

models::ModelConfig read_hf_config(const std::string& dir) {
  std::string path = dir + "/config.json";
  return model_config_from_hf(read_json(path), path);
}

std::map<std::string, Tensor> read_hf_tensors(const std::string& dir) {
  std::map<std::string, Tensor> out;
  auto add_file = [&](const std::string& path, const std::set<std::string>* expected) {
    runtime::SafetensorsFile f = runtime::read_safetensors(path);
    for (auto& [name, t] : f.tensors) {
      if (expected && !expected->count(name))
        throw std::runtime_error(path + ": tensor '" + name + "' is not listed for this file in model.safetensors.index.json");
      if (!out.emplace(name, t).second) throw std::runtime_error(path + ": tensor '" + name + "' appears in two shards");
    }
  };
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  if (fs::exists(index)) {
    json j = read_json(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw std::runtime_error(index + ": weight_map: missing or not an object");
    std::map<std::string, std::set<std::string>> files;  // shard -> tensor names
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw std::runtime_error(index + ": weight_map: '" + name + "' does not name a file");
      std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        throw std::runtime_error(index + ": weight_map: '" + name + "' names '" + f + "', not a file in the directory");
      files[f].insert(name);
    }
    if (files.empty()) throw std::runtime_error(index + ": weight_map is empty");
    for (const auto& [f, names] : files) add_file(dir + "/" + f, &names);
    for (const auto& [f, names] : files)
      for (const std::string& n : names)
        if (!out.count(n)) throw std::runtime_error(dir + "/" + f + ": tensor '" + n + "' listed in model.safetensors.index.json is not in the file");
    return out;
  }
  if (fs::exists(single)) {
    add_file(single, nullptr);
    return out;
  }
  if (fs::exists(dir + "/pytorch_model.bin") || fs::exists(dir + "/pytorch_model.bin.index.json"))
    throw std::runtime_error(dir + ": only pytorch_model.bin weights found; Loom reads safetensors (convert with "
                             "transformers: model.save_pretrained(dir, safe_serialization=True))");
  throw std::runtime_error(dir + ": no model.safetensors or model.safetensors.index.json");
}

HfCheckpoint load_hf_checkpoint(const std::string& dir) {
  if (!fs::is_directory(dir)) throw std::runtime_error("Hugging Face checkpoint '" + dir + "': not a directory");
  HfCheckpoint c;
  c.config = read_hf_config(dir);
  std::map<std::string, Tensor> hf = read_hf_tensors(dir);
  for (auto& [name, t] : hf) {
    if (!runtime::is_floating(t.dtype()))
      throw std::runtime_error(dir + ": tensor '" + name + "' has dtype " + runtime::dtype_name(t.dtype()) +
                               " (Loom imports f32, bf16, f16 and f64 weights)");
    if (t.dtype() != runtime::DType::f32) t = t.to(runtime::DType::f32);
  }
  c.tensors = from_hf_tensors(c.config, std::move(hf), dir);
  if (fs::exists(dir + "/tokenizer.json")) c.tokenizer_json = data::read_file(dir + "/tokenizer.json");
  return c;
}

void assign_parameters(models::TransformerLM& model, const std::map<std::string, Tensor>& tensors,
                       const std::string& where) {
  runtime::NoGradGuard ng;
  for (auto& p : model.parameters()) {
    auto it = tensors.find(p.name);
    if (it == tensors.end()) throw std::runtime_error(where + ": no tensor for parameter '" + p.name + "'");
    if (it->second.shape() != p.shard.full)
      throw std::runtime_error(where + ": parameter '" + p.name + "' has shape " + it->second.shape().str() +
                               ", the model has " + p.shard.full.str());
    // This rank's part of it (all of it without tensor parallelism).
    p.tensor.detach().view({p.tensor.numel()}).copy_(
        parallel::take_local(it->second.to(p.tensor.dtype()), p.shard, 0, p.tensor.numel()));
  }
  // A pipeline stage holds only some of the parameters; the whole model must use every tensor.
  const models::PipelineStage& st = model.stage();
  const bool whole = st.embedding && st.head && st.first_layer == 0 && st.end_layer == model.config().n_layers;
  if (whole && tensors.size() != model.parameters().size())
    for (const auto& [name, t] : tensors)
      if (!model.has_param(name)) throw std::runtime_error(where + ": tensor '" + name + "' is not a parameter of the model");
}

void apply_init_from(const Config& cfg, models::TransformerLM& model) {
  if (cfg.get_string("init_from.format") != "hf") return;
  const std::string dir = cfg.get_string("init_from.path");
  HfCheckpoint c = load_hf_checkpoint(dir);
  assign_parameters(model, c.tensors, dir);
}

}  // namespace loom::launch
