// config.h: ModelConfig, the shape of a decoder-only transformer LM, with the llama-style and
// gpt2-style presets, parameter counting and the FLOPs-per-token estimate used for MFU.
#pragma once
#include <cstdint>
#include <string>

namespace loom::models {

struct ModelConfig {
  int64_t vocab_size = 512;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;  // < n_heads: grouped-query attention
  int64_t ffn_hidden = 512;
  std::string norm = "rmsnorm";        // rmsnorm | layernorm
  std::string activation = "swiglu";   // swiglu | gelu
  std::string positions = "rope";      // rope | learned
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  bool bias = false;  // biases on attention and MLP projections
  bool qkv_bias = false;  // biases on q/k/v projections only (Qwen2); implied by bias
  int64_t max_seq_len = 256;
  double dropout = 0.0;
  double init_std = 0.02;

  int64_t head_dim() const { return d_model / n_heads; }
  // Throws std::invalid_argument naming the first inconsistent field.
  void validate() const;
  int64_t num_parameters() const;
  // Training FLOPs per token: 6 N (forward + backward of every weight, PaLM appendix B, with
  // N the non-embedding parameters plus the LM head) + 12 L T C for attention scores and values
  // (halved for causal masking: 6 L T C).
  double train_flops_per_token(int64_t seq_len) const;

  static ModelConfig llama(int64_t vocab, int64_t d_model, int64_t n_layers, int64_t n_heads, int64_t n_kv_heads);
  // GPT-2 style: LayerNorm, GELU(tanh), learned positions, biases, tied embeddings, 4x MLP.
  static ModelConfig gpt2(int64_t vocab, int64_t d_model, int64_t n_layers, int64_t n_heads);
};

}  // namespace loom::models
