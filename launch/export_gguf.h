// export_gguf.h: a Loom llama-style model as a GGUF v3 file for llama.cpp's `llama`
// architecture (and Ollama), and the inverse reader used to verify exports and in tests.
//
// What goes in (names and value types as llama.cpp's loader requires them):
//   general.architecture "llama", general.name, general.file_type u32 (0 f32, 1 f16, 32 bf16),
//   general.alignment u32 32; llama.context_length, embedding_length, block_count,
//   feed_forward_length, attention.head_count, attention.head_count_kv, rope.dimension_count
//   (= head_dim), vocab_size: all u32; attention.layer_norm_rms_epsilon and rope.freq_base f32.
//   Tensors: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//   ffn_gate, ffn_up, ffn_down}, output_norm, output (absent when tied), with .bias tensors
//   for biased projections; matrices in the chosen dtype, 1-D tensors always f32 (llama.cpp's
//   norms and biases are f32).
//   RoPE: Hugging Face (and Loom) rotate the two halves of each head, (x_i, x_{i+D/2});
//   llama.cpp's `llama` rotates adjacent pairs (x_{2i}, x_{2i+1}). Permuting the rows of each
//   q head (and k head, with the key/value head count) so row 2i+j takes row j*D/2+i makes
//   both compute the same attention scores: q.k is a sum over the same pairs.
//   Tokenizer: tokenizer.ggml.model "gpt2" (byte-level BPE), tokens (byte-to-unicode text,
//   special tokens literal), token_type i32 (1 normal, 3 control for special tokens, 4 user
//   defined for other added tokens, 5 unused for the padding entries "[PADn]" that make the
//   count equal vocab_size), merges ("a b"), bos/eos/padding ids u32, add_bos/add_eos false.
//   tokenizer.ggml.pre "starcoder": single digits, then the GPT-2 pattern. On ASCII text this
//   cuts exactly where Loom's pre-tokenizer does, except GPT-2's contractions: "'s", "'t",
//   "'re", "'ve", "'m", "'ll", "'d" directly before more letters ("'sam" -> "'s" "am"; Loom
//   "'" "sam"). Non-ASCII differs where Unicode letter/digit/space classes differ from
//   Loom's byte classes (every byte >= 0x80 is a letter to Loom).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "models/config.h"
#include "runtime/tensor.h"

namespace loom::launch {

inline constexpr const char* kGgufPreTokenizer = "starcoder";

// Throws std::runtime_error naming what the `llama` architecture cannot express (layernorm,
// gelu, learned positions).
void check_gguf_exportable(const models::ModelConfig& m);

// Writes `path` atomically and verifies it by reading it back (read_gguf_model) and comparing.
void write_gguf_model(const std::string& path, const models::ModelConfig& m,
                      const std::map<std::string, runtime::Tensor>& params, const std::string& tokenizer_json,
                      runtime::DType dtype, const std::string& name);

struct GgufModel {
  models::ModelConfig config;
  std::map<std::string, runtime::Tensor> params;  // Loom names, f32, q/k rows back in HF order
  std::vector<std::string> tokens;
  std::vector<int64_t> token_types;
  std::vector<std::string> merges;
  int64_t bos = -1, eos = -1;
};
// Reads a llama GGUF (as written above) back into Loom terms. Checks every key's type;
// errors name the file and the key or tensor.
GgufModel read_gguf_model(const std::string& path);

// Row permutations between HF rotate-half order and llama.cpp adjacent-pair order for a
// [heads * D, ...] q/k weight or [heads * D] bias.
runtime::Tensor permute_rope_rows(const runtime::Tensor& w, int64_t heads);
runtime::Tensor unpermute_rope_rows(const runtime::Tensor& w, int64_t heads);

}  // namespace loom::launch
