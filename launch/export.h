// export.h: `loom export`: the newest good checkpoint of a run -> a Hugging Face directory
// (export_hf.h) or a GGUF file (export_gguf.h). Checkpoints store every parameter as
// "model/<HF name>" with its full global shape whatever the parallel layout that wrote them,
// so the export of any layout is the same file set; only that is relied on here.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "models/config.h"
#include "runtime/tensor.h"

namespace loom::launch {

// --ckpt as the CLI takes it: a checkpoint file, a checkpoints/ directory or a run directory
// (then the newest checkpoint that verifies; a corrupt newer one is skipped with a warning).
std::string resolve_checkpoint(const std::string& where);

struct ExportSource {
  std::string checkpoint;                          // the file read
  std::string name;                                // the run's name (its directory), for general.name
  models::ModelConfig config;
  std::string tokenizer_json;
  std::map<std::string, runtime::Tensor> params;   // Loom names, full shapes
};
ExportSource load_export_source(const std::string& where);

struct ExportOptions {
  std::string format = "hf";                       // hf | gguf
  std::string out;                                 // hf: a directory; gguf: a file
  runtime::DType dtype = runtime::DType::f32;      // f32 | bf16 | f16
  uint64_t max_shard_bytes = 5'000'000'000ull;     // hf: shard above this size
};
// Writes the export; returns a one-line summary for the CLI.
std::string export_model(const ExportSource& src, const ExportOptions& opt);

}  // namespace loom::launch
