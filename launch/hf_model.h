// hf_model.h: how a Loom model maps onto a Hugging Face transformers model, both ways: the
// config.json fields and the parameter names. Export (export_hf.h) and import (import_hf.h)
// share these tables, so a round trip is the identity by construction and a test of one
// direction against transformers covers the other.
//
// Architectures:
//   LlamaForCausalLM  rmsnorm, swiglu, rope; names are Loom's own (model.layers.N....);
//                     Loom's bias=true is attention_bias=true and mlp_bias=true.
//   Qwen2ForCausalLM  the same with biases on q/k/v only (Loom's qkv_bias).
//   GPT2LMHeadModel   layernorm, GELU(tanh) = "gelu_new", learned positions, biases, no GQA:
//                     transformer.wte/wpe/h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
//                     mlp.c_proj}/ln_f. GPT-2's Conv1D stores weights as [in, out] (the
//                     transpose of Loom's [out, in]) and fuses q, k, v into c_attn [C, 3C].
// Anything else is refused with a message naming what cannot be expressed.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "runtime/tensor.h"

namespace loom::launch {

enum class HfArch { llama, qwen2, gpt2 };
const char* hf_class_name(HfArch a);  // "LlamaForCausalLM", ...

// The class a model exports as; throws std::runtime_error listing every setting that neither
// Llama/Qwen2 nor GPT-2 can express.
HfArch hf_arch_for(const models::ModelConfig& m);

struct SpecialIds {
  int64_t bos = -1, eos = -1, pad = -1;  // -1: none
};

// config.json for `m` (torch_dtype: "float32", "bfloat16" or "float16").
nlohmann::ordered_json hf_config_json(const models::ModelConfig& m, const SpecialIds& ids, const std::string& torch_dtype);

// The Loom model config a config.json describes. Throws std::runtime_error "PATH: key: problem"
// for an unsupported architecture, a missing or mistyped key, or a setting Loom cannot run
// (rope scaling, sliding windows, head_dim != hidden_size / heads, ...).
models::ModelConfig model_config_from_hf(const nlohmann::json& j, const std::string& path);
HfArch hf_arch_of(const nlohmann::json& j, const std::string& path);

// Every parameter TransformerLM(m) registers, with its shape, in registration order.
std::vector<std::pair<std::string, runtime::Dims>> loom_parameter_shapes(const models::ModelConfig& m);

using NamedTensors = std::vector<std::pair<std::string, runtime::Tensor>>;

// Loom parameters (Loom names, full shapes) -> the tensors of the HF checkpoint.
NamedTensors to_hf_tensors(const models::ModelConfig& m, const std::map<std::string, runtime::Tensor>& params);

// HF checkpoint tensors -> Loom parameters. Checks that every parameter is present with its
// shape and that no tensor is left over (buffers HF itself ignores, such as rotary inv_freq,
// are skipped; a tied lm_head.weight is dropped). Errors name `where` and the tensors.
std::map<std::string, runtime::Tensor> from_hf_tensors(const models::ModelConfig& m,
                                                       std::map<std::string, runtime::Tensor> hf,
                                                       const std::string& where);

}  // namespace loom::launch
