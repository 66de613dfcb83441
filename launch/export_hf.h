// export_hf.h: writes a Loom model as a Hugging Face checkpoint directory that transformers,
// vLLM and SGLang load: config.json (hf_model.h), generation_config.json, tokenizer.json,
// tokenizer_config.json, and model.safetensors, or model-0000i-of-0000n.safetensors shards
// with model.safetensors.index.json when the weights exceed max_shard_bytes.
//
// Rules kept: the directory appears complete or not at all (written beside the target, read
// back and compared tensor by tensor, then renamed into place; an existing export is swapped
// out atomically); a directory holding anything but an export's files is never replaced.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "models/config.h"
#include "runtime/tensor.h"

namespace loom::launch {

struct HfExportOptions {
  runtime::DType dtype = runtime::DType::f32;   // f32, bf16 or f16
  uint64_t max_shard_bytes = 5'000'000'000ull;  // transformers' default shard size
};

// `params`: Loom parameter names with full shapes. Throws std::runtime_error naming the
// directory (or what the model cannot express) on failure.
void write_hf_model(const std::string& out_dir, const models::ModelConfig& m,
                    const std::map<std::string, runtime::Tensor>& params, const std::string& tokenizer_json,
                    const HfExportOptions& opt = {});

// Replaces `target` by the finished directory `tmp` in one rename (an existing target is
// swapped out and removed; `target` must hold only files named in `allowed`, else an error).
void commit_directory(const std::string& tmp, const std::string& target, bool (*allowed)(const std::string& file));

}  // namespace loom::launch
