// export.cpp: checkpoint -> export (see export.h).
#include "launch/export.h"

#include <filesystem>
#include <stdexcept>

#include "data/tokenizer.h"
#include "launch/checkpoint.h"
#include "launch/export_gguf.h"
#include "launch/export_hf.h"
#include "launch/hf_model.h"
#include "launch/train_config.h"

namespace loom::launch {

namespace fs = std::filesystem;

std::string resolve_checkpoint(const std::string& where) {
  if (!fs::exists(where)) throw std::runtime_error("no checkpoint at '" + where + "': no such file or directory");
  if (!fs::is_directory(where)) return where;
  std::string dir = fs::exists(where + "/checkpoints") ? where + "/checkpoints" : where;
  auto latest = latest_checkpoint(dir, true);
  if (!latest) throw std::runtime_error("no checkpoint found in '" + dir + "'");
  return *latest;
}

ExportSource load_export_source(const std::string& where) {
  ExportSource src;
  src.checkpoint = resolve_checkpoint(where);
  CheckpointState s = load_checkpoint(src.checkpoint);
  for (const char* key : {"config", "tokenizer.json"})
    if (!s.strings.count(key)) throw CheckpointError("checkpoint '" + src.checkpoint + "': no '" + key + "' string");
  Config cfg = load_config_text(s.strings.at("config"), src.checkpoint + ":config", train_schema());
  src.tokenizer_json = s.strings.at("tokenizer.json");
  data::BpeTokenizer tok = data::BpeTokenizer::from_json(src.tokenizer_json, src.checkpoint + ":tokenizer.json");
  src.config = build_model_config(cfg, tok.vocab_size());
  src.name = fs::path(cfg.get_string("run.dir")).filename().string();
  if (src.name.empty()) src.name = "loom";
  for (const auto& [name, shape] : loom_parameter_shapes(src.config)) {
    runtime::Tensor t = s.find("model/" + name);
    if (!t.defined()) throw CheckpointError("checkpoint '" + src.checkpoint + "': missing parameter '" + name + "'");
    if (t.shape() != shape)
      throw CheckpointError("checkpoint '" + src.checkpoint + "': parameter '" + name + "' has shape " + t.shape().str() +
                            ", its config gives " + shape.str());
    src.params[name] = t;
  }
  return src;
}

std::string export_model(const ExportSource& src, const ExportOptions& opt) {
  if (opt.out.empty()) throw std::runtime_error("export: --out is empty");
  const std::string dt = runtime::dtype_name(opt.dtype);
  if (opt.format == "hf") {
    HfExportOptions h;
    h.dtype = opt.dtype;
    h.max_shard_bytes = opt.max_shard_bytes;
    write_hf_model(opt.out, src.config, src.params, src.tokenizer_json, h);
    return "exported " + src.checkpoint + " as " + hf_class_name(hf_arch_for(src.config)) + " (" + dt + ") to " + opt.out;
  }
  if (opt.format == "gguf") {
    if (fs::is_directory(opt.out)) throw std::runtime_error("export: --out '" + opt.out + "' is a directory; GGUF export writes a file");
    if (fs::path(opt.out).has_parent_path()) fs::create_directories(fs::path(opt.out).parent_path());
    write_gguf_model(opt.out, src.config, src.params, src.tokenizer_json, opt.dtype, src.name);
    return "exported " + src.checkpoint + " as GGUF llama (" + dt + ") to " + opt.out;
  }
  throw std::runtime_error("export: unknown format '" + opt.format + "' (hf or gguf)");
}

}  // namespace loom::launch
