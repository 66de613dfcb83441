// config.cpp: ModelConfig validation, presets and counts.
#include "models/config.h"

#include <stdexcept>

namespace loom::models {

void ModelConfig::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument("model config: " + m); };
  if (vocab_size < 1) bad("vocab_size must be positive");
  if (d_model < 1 || n_layers < 1 || n_heads < 1 || n_kv_heads < 1 || ffn_hidden < 1)
    bad("d_model, n_layers, n_heads, n_kv_heads and ffn_hidden must be positive");
  if (d_model % n_heads) bad("d_model (" + std::to_string(d_model) + ") must be divisible by n_heads (" + std::to_string(n_heads) + ")");
  if (n_heads % n_kv_heads) bad("n_heads (" + std::to_string(n_heads) + ") must be divisible by n_kv_heads (" + std::to_string(n_kv_heads) + ")");
  if (norm != "rmsnorm" && norm != "layernorm") bad("norm must be rmsnorm or layernorm, not '" + norm + "'");
  if (activation != "swiglu" && activation != "gelu") bad("activation must be swiglu or gelu, not '" + activation + "'");
  if (positions != "rope" && positions != "learned") bad("positions must be rope or learned, not '" + positions + "'");
  if (positions == "rope" && head_dim() % 2) bad("rope needs an even head_dim");
  if (dropout < 0 || dropout >= 1) bad("dropout must be in [0, 1)");
  if (max_seq_len < 1) bad("max_seq_len must be positive");
}

int64_t ModelConfig::num_parameters() const {
  int64_t C = d_model, D = head_dim(), kv = n_kv_heads * D;
  int64_t norm_params = norm == "layernorm" ? 2 * C : C;
  int64_t attn = C * C + 2 * C * kv + C * C + (bias ? C + 2 * kv + C : qkv_bias ? C + 2 * kv : 0);
  int64_t mlp = activation == "swiglu" ? 3 * C * ffn_hidden + (bias ? 2 * ffn_hidden + C : 0)
                                       : 2 * C * ffn_hidden + (bias ? ffn_hidden + C : 0);
  int64_t per_layer = attn + mlp + 2 * norm_params;
  int64_t emb = vocab_size * C + (positions == "learned" ? max_seq_len * C : 0);
  int64_t head = tie_embeddings ? 0 : vocab_size * C;
  return emb + n_layers * per_layer + norm_params + head;
}

double ModelConfig::train_flops_per_token(int64_t seq_len) const {
  int64_t emb = vocab_size * d_model + (positions == "learned" ? max_seq_len * d_model : 0);
  // The LM head multiplies even when tied to the embedding; the embedding lookup does not.
  double n = double(num_parameters() - emb + (tie_embeddings ? vocab_size * d_model : 0));
  return 6.0 * n + 6.0 * double(n_layers) * double(seq_len) * double(d_model);
}

ModelConfig ModelConfig::llama(int64_t vocab, int64_t d, int64_t layers, int64_t heads, int64_t kv_heads) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = d;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  // SwiGLU hidden: 2/3 of 4d rounded up to a multiple of 32 (Llama's rule with multiple_of).
  c.ffn_hidden = (8 * d / 3 + 31) / 32 * 32;
  c.norm = "rmsnorm";
  c.activation = "swiglu";
  c.positions = "rope";
  c.norm_eps = 1e-5;
  return c;
}

ModelConfig ModelConfig::gpt2(int64_t vocab, int64_t d, int64_t layers, int64_t heads) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = d;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = heads;
  c.ffn_hidden = 4 * d;
  c.norm = "layernorm";
  c.activation = "gelu";
  c.positions = "learned";
  c.bias = true;
  c.tie_embeddings = true;
  c.norm_eps = 1e-5;
  c.max_seq_len = 1024;
  return c;
}

}  // namespace loom::models
