// import_hf.h: loading a Hugging Face checkpoint directory (config.json, model.safetensors or
// sharded model-*.safetensors with model.safetensors.index.json, tokenizer.json) into Loom,
// and the `init_from: {format: hf, path: DIR}` hook the trainer calls.
//
// Rules kept: the model config comes from config.json alone (hf_model.h says what maps and
// what is refused); every parameter must be present with its shape and nothing may be left
// over; f32/bf16/f16 tensors are widened to f32 exactly. Every problem is one
// std::runtime_error naming the file and the key or tensor.
#pragma once
#include <map>
#include <string>

#include "launch/config.h"
#include "models/transformer.h"

namespace loom::launch {

struct HfCheckpoint {
  models::ModelConfig config;
  std::string tokenizer_json;  // tokenizer.json's text ("" when the directory has none)
  std::map<std::string, runtime::Tensor> tensors;  // Loom parameter names, f32, full shapes
};

// config.json of `dir` as a Loom model config.
models::ModelConfig read_hf_config(const std::string& dir);
// Every tensor of the checkpoint under its Hugging Face name, as stored (sharded or not).
std::map<std::string, runtime::Tensor> read_hf_tensors(const std::string& dir);
HfCheckpoint load_hf_checkpoint(const std::string& dir);

// Copies `tensors` (Loom names) into the model's parameters, converting to their dtype; every
// parameter must be present with its shape. `where` names the source in errors.
void assign_parameters(models::TransformerLM& model, const std::map<std::string, runtime::Tensor>& tensors,
                       const std::string& where);

// The trainer's hook: with init_from.format hf, loads init_from.path's weights into `model`
// (built from the same config.json through build_model_config). A no-op otherwise.
void apply_init_from(const Config& cfg, models::TransformerLM& model);

}  // namespace loom::launch
