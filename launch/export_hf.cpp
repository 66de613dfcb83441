// export_hf.cpp: the Hugging Face checkpoint directory writer (rules in export_hf.h).
#include "launch/export_hf.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/io.h"
#include "data/tokenizer.h"
#include "launch/hf_model.h"
#include "launch/import_hf.h"
#include "runtime/ops.h"
#include "runtime/safetensors.h"

namespace loom::launch {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using runtime::DType;
using runtime::Tensor;

namespace {

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    default: throw std::runtime_error(std::string("export: dtype ") + runtime::dtype_name(d) + " is not f32, bf16 or f16");
  }
}

bool is_hf_export_file(const std::string& f) {
  return f == "config.json" || f == "generation_config.json" || f == "tokenizer.json" ||
         f == "tokenizer_config.json" || f == "special_tokens_map.json" || f == "model.safetensors" ||
         f == "model.safetensors.index.json" || (f.rfind("model-", 0) == 0 && f.size() > 12 &&
                                                 f.compare(f.size() - 12, 12, ".safetensors") == 0);
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string token_text(const data::BpeTokenizer& t, int32_t id) { return id >= 0 ? t.token_bytes(id) : ""; }

}  // namespace

void commit_directory(const std::string& tmp, const std::string& target, bool (*allowed)(const std::string&)) {
  fsync_path(tmp, true);
  if (fs::exists(target)) {
    if (!fs::is_directory(target)) throw std::runtime_error("export: '" + target + "' exists and is not a directory");
    for (const auto& e : fs::directory_iterator(target))
      if (!allowed(e.path().filename().string()))
        throw std::runtime_error("export: '" + target + "' exists and holds '" + e.path().filename().string() +
                                 "', which is not part of an export; choose another --out");
    // Swap in one step, so readers see the old export or the new one, never a mix.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0)
      throw std::runtime_error("export: cannot swap '" + tmp + "' into '" + target + "' (" + std::strerror(errno) + ")");
    fs::remove_all(tmp);  // now the old export
  } else if (::rename(tmp.c_str(), target.c_str()) != 0) {
    throw std::runtime_error("export: cannot rename '" + tmp + "' to '" + target + "' (" + std::strerror(errno) + ")");
  }
  fsync_path(fs::absolute(target).parent_path().string(), true);
}

void write_hf_model(const std::string& out_dir, const models::ModelConfig& m, const std::map<std::string, Tensor>& params,
                    const std::string& tokenizer_json, const HfExportOptions& opt) {
  const char* torch_dtype = torch_dtype_name(opt.dtype);
  HfArch arch = hf_arch_for(m);  // refuses what HF cannot express, before any file is written
  data::BpeTokenizer tok = data::BpeTokenizer::from_json(tokenizer_json, "the checkpoint's tokenizer.json");
  if (tok.vocab_size() > m.vocab_size)
    throw std::runtime_error("export: the tokenizer has " + std::to_string(tok.vocab_size()) + " tokens but the model only " +
                             std::to_string(m.vocab_size));
  SpecialIds ids{tok.bos_id(), tok.eos_id(), tok.pad_id()};

  NamedTensors tensors;
  {
    runtime::NoGradGuard ng;
    for (auto& [name, t] : to_hf_tensors(m, params)) tensors.push_back({name, t.to(opt.dtype).contiguous()});
  }

  fs::path target = fs::absolute(out_dir);
  if (target.filename().empty()) target = target.parent_path();
  fs::create_directories(target.parent_path());
  const std::string tmp = target.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    // Weights: one file, or shards of at most max_shard_bytes (a larger tensor gets its own).
    std::vector<NamedTensors> shards(1);
    uint64_t in_shard = 0, total = 0;
    for (auto& nt : tensors) {
      uint64_t bytes = uint64_t(nt.second.numel()) * nt.second.element_size();
      if (!shards.back().empty() && in_shard + bytes > opt.max_shard_bytes) {
        shards.emplace_back();
        in_shard = 0;
      }
      shards.back().push_back(nt);
      in_shard += bytes;
      total += bytes;
    }
    if (shards.size() == 1) {
      runtime::write_safetensors(tmp + "/model.safetensors", shards[0], {{"format", "pt"}});
    } else {
      ordered_json weight_map = ordered_json::object();
      for (size_t i = 0; i < shards.size(); ++i) {
        char name[64];
        std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
        runtime::write_safetensors(tmp + "/" + name, shards[i], {{"format", "pt"}});
        for (const auto& [n, t] : shards[i]) weight_map[n] = name;
      }
      ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      data::atomic_write_file(tmp + "/model.safetensors.index.json", index.dump(2) + "\n");
    }
    data::atomic_write_file(tmp + "/config.json", hf_config_json(m, ids, torch_dtype).dump(2) + "\n");
    auto id = [](int64_t v) { return v >= 0 ? ordered_json(v) : ordered_json(nullptr); };
    ordered_json gen = {{"bos_token_id", id(ids.bos)}, {"eos_token_id", id(ids.eos)}, {"pad_token_id", id(ids.pad)}};
    data::atomic_write_file(tmp + "/generation_config.json", gen.dump(2) + "\n");
    data::atomic_write_file(tmp + "/tokenizer.json", tokenizer_json);
    auto tok_or_null = [&](int32_t i) { return i >= 0 ? ordered_json(token_text(tok, i)) : ordered_json(nullptr); };
    // Loom adds no BOS/EOS when encoding; tell transformers the same.
    ordered_json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                       {"bos_token", tok_or_null(ids.bos)},
                       {"eos_token", tok_or_null(ids.eos)},
                       {"pad_token", tok_or_null(ids.pad)},
                       {"add_bos_token", false},
                       {"add_eos_token", false},
                       {"clean_up_tokenization_spaces", false},
                       {"model_max_length", m.max_seq_len}};
    data::atomic_write_file(tmp + "/tokenizer_config.json", tc.dump(2) + "\n");

    // Verify after write: read the directory back the way import does and compare.
    HfCheckpoint back = load_hf_checkpoint(tmp);
    if (arch != hf_arch_of(nlohmann::json::parse(data::read_file(tmp + "/config.json")), tmp))
      throw std::runtime_error("export: config.json does not read back as " + std::string(hf_class_name(arch)));
    runtime::NoGradGuard ng;
    for (const auto& [name, t] : params) {
      auto it = back.tensors.find(name);
      if (it == back.tensors.end()) throw std::runtime_error("export: verification: '" + name + "' did not read back");
      Tensor want = t.to(opt.dtype).to(DType::f32).contiguous(), got = it->second.contiguous();
      if (want.shape() != got.shape() || std::memcmp(want.raw_data(), got.raw_data(), size_t(want.numel()) * 4) != 0)
        throw std::runtime_error("export: verification: '" + name + "' reads back different values");
    }
    commit_directory(tmp, target.string(), is_hf_export_file);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace loom::launch
